"""Rebuilding a tokenizer backend from GGUF `tokenizer.ggml.*` metadata.

A GGUF file carries no tokenizer.json / tokenizer.model; llama.cpp stores the
vocabulary, merges, scores and token types as metadata. Two cases matter here:

* `tokenizer.ggml.model == "gpt2"`: byte-level BPE (SmolLM2, Qwen2, Llama 3).
  Rebuilt as a Hugging Face `tokenizers` BPE with the pre-tokenizer that
  llama.cpp picks from `tokenizer.ggml.pre`.
* `tokenizer.ggml.model == "llama"`: a sentencepiece vocabulary (Gemma).
  Rebuilt as a sentencepiece `ModelProto` (see `build_spm_proto`).

Token types follow llama.cpp (same numbering as sentencepiece piece types):
0 undefined, 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# Split regexes as in llama.cpp's llm_tokenizer_bpe / the models' own tokenizer.json.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

_QWEN2_PRE = ("qwen2", "deepseek-r1-qwen")
_LLAMA3_PRE = ("llama-bpe", "llama3", "llama-v3", "smaug-bpe", "falcon3")
_GPT2_PRE = ("gpt2", "default", "gpt-2")
SUPPORTED_BPE_PRE = ("smollm",) + _QWEN2_PRE + _LLAMA3_PRE + _GPT2_PRE


@dataclasses.dataclass(frozen=True)
class GGUFVocab:
    """The tokenizer-related part of GGUF metadata, validated."""
    source: str                     # file name, for error messages
    model: str                      # tokenizer.ggml.model: "gpt2" | "llama"
    pre: str | None                 # tokenizer.ggml.pre
    tokens: tuple[str, ...]
    token_type: tuple[int, ...]
    scores: tuple[float, ...] | None
    merges: tuple[str, ...] | None
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    pad_id: int | None
    eot_id: int | None
    eom_id: int | None
    add_bos: bool
    chat_template: str | None

    @property
    def control_ids(self) -> list[int]:
        return [i for i, t in enumerate(self.token_type) if t == CONTROL]

    @property
    def user_defined_ids(self) -> list[int]:
        return [i for i, t in enumerate(self.token_type) if t == USER_DEFINED]


def _opt_id(meta: dict[str, Any], key: str, n: int, source: str) -> int | None:
    v = meta.get(key)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool):
        raise ValueError(f"{source}: metadata {key} = {v!r} is not an integer")
    if v < 0 or v >= n:
        # llama.cpp writes -1 / out-of-range ids for "absent"; treat as missing.
        return None
    return v


def vocab_from_metadata(meta: dict[str, Any], source: str = "<gguf>") -> GGUFVocab:
    """Extract and validate tokenizer fields from `read_gguf_metadata` output."""
    model = meta.get("tokenizer.ggml.model")
    if model is None:
        raise ValueError(f"{source}: no tokenizer.ggml.model in GGUF metadata (not an LLM file?)")
    tokens = meta.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise ValueError(f"{source}: tokenizer.ggml.tokens missing or not a list of strings")
    n = len(tokens)
    ttype = meta.get("tokenizer.ggml.token_type")
    if ttype is None:
        ttype = [NORMAL] * n
    if len(ttype) != n:
        raise ValueError(f"{source}: tokenizer.ggml.token_type has {len(ttype)} entries, "
                         f"tokenizer.ggml.tokens has {n}")
    scores = meta.get("tokenizer.ggml.scores")
    if scores is not None and len(scores) != n:
        raise ValueError(f"{source}: tokenizer.ggml.scores has {len(scores)} entries, expected {n}")
    merges = meta.get("tokenizer.ggml.merges")
    if merges is not None:
        bad = next((m for m in merges if not isinstance(m, str) or m.count(" ") != 1), None)
        if bad is not None:
            raise ValueError(f"{source}: tokenizer.ggml.merges entry {bad!r} is not 'left right'")
    return GGUFVocab(
        source=source, model=str(model), pre=meta.get("tokenizer.ggml.pre"),
        tokens=tuple(tokens), token_type=tuple(int(t) for t in ttype),
        scores=tuple(scores) if scores is not None else None,
        merges=tuple(merges) if merges is not None else None,
        bos_id=_opt_id(meta, "tokenizer.ggml.bos_token_id", n, source),
        eos_id=_opt_id(meta, "tokenizer.ggml.eos_token_id", n, source),
        unk_id=_opt_id(meta, "tokenizer.ggml.unknown_token_id", n, source),
        pad_id=_opt_id(meta, "tokenizer.ggml.padding_token_id", n, source),
        eot_id=_opt_id(meta, "tokenizer.ggml.eot_token_id", n, source),
        eom_id=_opt_id(meta, "tokenizer.ggml.eom_token_id", n, source),
        add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", model == "llama")),
        chat_template=meta.get("tokenizer.chat_template"),
    )


def bpe_pre_tokenizer(pre: str | None, source: str = "<gguf>"):
    """(pre_tokenizer, ignore_merges) for a byte-level BPE `tokenizer.ggml.pre` value."""
    pre = pre or "default"
    if pre == "smollm":
        # llama.cpp: "\p{N}" then the GPT-2 regex; SmolLM2's tokenizer.json says the same.
        return pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]), False
    if pre in _QWEN2_PRE:
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]), False
    if pre in _LLAMA3_PRE:
        # Llama 3's tokenizer.json sets ignore_merges: a word already in the vocab is one token.
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]), True
    if pre in _GPT2_PRE:
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), False
    raise ValueError(f"{source}: unsupported tokenizer.ggml.pre = {pre!r} for a byte-level BPE "
                     f"vocabulary (supported: {', '.join(SUPPORTED_BPE_PRE)})")


def build_hf_bpe(vocab: GGUFVocab) -> HFTokenizer:
    """Byte-level BPE `tokenizers.Tokenizer` from a gpt2-style GGUF vocabulary."""
    if vocab.model != "gpt2":
        raise ValueError(f"{vocab.source}: tokenizer.ggml.model = {vocab.model!r}, expected 'gpt2'")
    if vocab.merges is None:
        raise ValueError(f"{vocab.source}: byte-level BPE vocabulary has no tokenizer.ggml.merges")
    pre, ignore_merges = bpe_pre_tokenizer(vocab.pre, vocab.source)
    ids: dict[str, int] = {}
    for i, t in enumerate(vocab.tokens):
        ids.setdefault(t, i)  # duplicates (rare) keep the first id; later ones are unreachable
    merges = [tuple(m.split(" ")) for m in vocab.merges]
    tok = HFTokenizer(models.BPE(vocab=ids, merges=merges, ignore_merges=ignore_merges,
                                 fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    # llama.cpp matches CONTROL and USER_DEFINED tokens whole in text (parse_special);
    # CONTROL ones are "special" (dropped by skip_special decoding), USER_DEFINED are not.
    tok.add_special_tokens([AddedToken(vocab.tokens[i], special=True, normalized=False)
                            for i in vocab.control_ids])
    tok.add_tokens([AddedToken(vocab.tokens[i], special=False, normalized=False)
                    for i in vocab.user_defined_ids])
    return tok


def build_spm_proto(vocab: GGUFVocab):
    """sentencepiece `ModelProto` for a llama/gemma-style GGUF vocabulary.

    Fixes needed for GGUF-stored Gemma vocabularies (cpu-feasibility.md):
    1. CONTROL pieces (<start_of_turn>, <unusedN>...) are never matched in text by
       sentencepiece, so they become USER_DEFINED, except bos/eos/pad (kept CONTROL;
       the Tokenizer wrapper matches those in text itself) and unk (must be UNKNOWN).
    2. Whitespace-run pieces are stored with literal spaces; sentencepiece escapes ' ' to
       '▁' before matching, so such pieces must be spelled with '▁'.
    3. split_by_whitespace=False, so whitespace runs can merge into those pieces.
    """
    from sentencepiece import sentencepiece_model_pb2 as pb

    if vocab.model != "llama":
        raise ValueError(f"{vocab.source}: tokenizer.ggml.model = {vocab.model!r}, expected 'llama'")
    if vocab.scores is None:
        raise ValueError(f"{vocab.source}: sentencepiece vocabulary has no tokenizer.ggml.scores")
    keep_control = {vocab.bos_id, vocab.eos_id, vocab.pad_id} - {None}
    unk_id = vocab.unk_id
    if unk_id is None:
        unk_id = next((i for i, t in enumerate(vocab.token_type) if t == UNKNOWN), None)
    if unk_id is None:
        raise ValueError(f"{vocab.source}: sentencepiece vocabulary has no unknown token "
                         "(tokenizer.ggml.unknown_token_id absent and no UNKNOWN-typed token)")
    proto = pb.ModelProto()
    for i, (piece, score, ttype) in enumerate(zip(vocab.tokens, vocab.scores, vocab.token_type)):
        if i == unk_id:
            ptype = UNKNOWN
        elif ttype == CONTROL and i not in keep_control:
            ptype = USER_DEFINED
        elif ttype == UNKNOWN:  # a second UNKNOWN would be rejected by sentencepiece
            ptype = CONTROL
        elif ttype in (NORMAL, CONTROL, USER_DEFINED, UNUSED, BYTE):
            ptype = ttype
        else:
            ptype = NORMAL
        if " " in piece and ptype != BYTE:
            piece = piece.replace(" ", "\u2581")
        sp = proto.pieces.add()
        sp.piece, sp.score, sp.type = piece, float(score), ptype
    ts = proto.trainer_spec
    ts.model_type = pb.TrainerSpec.BPE
    ts.vocab_size = len(vocab.tokens)
    ts.byte_fallback = True
    ts.split_digits = True
    ts.split_by_whitespace = False
    ts.allow_whitespace_only_pieces = True
    ts.unk_id = unk_id
    ts.bos_id = vocab.bos_id if vocab.bos_id is not None else -1
    ts.eos_id = vocab.eos_id if vocab.eos_id is not None else -1
    ts.pad_id = vocab.pad_id if vocab.pad_id is not None else -1
    for field, idx in (("unk_piece", unk_id), ("bos_piece", vocab.bos_id),
                       ("eos_piece", vocab.eos_id), ("pad_piece", vocab.pad_id)):
        if idx is not None:
            setattr(ts, field, proto.pieces[idx].piece)
    ns = proto.normalizer_spec
    ns.name = "identity"
    ns.add_dummy_prefix = False
    ns.remove_extra_whitespaces = False
    ns.escape_whitespaces = True
    return proto
