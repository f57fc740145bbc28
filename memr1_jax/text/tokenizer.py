"""One tokenizer interface over two backends, loaded from GGUF files or HF folders.

* `HFTokenizer`: a Hugging Face `tokenizers.Tokenizer` (byte-level BPE from GGUF,
  or any `tokenizer.json`).
* `SentencePieceTokenizer`: a sentencepiece model (Gemma from GGUF, or a `.model`).

Conventions shared by both (so callers never care which backend they hold):
* `encode(text)` adds nothing implicitly; `add_bos=True` prepends `bos_id`.
* Special-token text in the input ("<|im_start|>", "<start_of_turn>", "<bos>") is
  matched whole, as llama.cpp does for chat prompts and transformers does by default.
* `decode(ids)` writes special tokens as their text; `skip_special=True` drops them.

Loading from a GGUF writes a cache folder (tokenizer.json or tokenizer.model plus
`memr1_tokenizer.json` with the ids and chat template) so later loads skip the GGUF.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import os
import pathlib
import re
from typing import Iterable, Sequence

from memr1_jax.files import atomic_folder, atomic_write_by_name, atomic_write_bytes, atomic_write_text
from memr1_jax.text import gguf_vocab
from memr1_jax.text.gguf_meta import read_gguf_metadata

META_FILE = "memr1_tokenizer.json"
META_FORMAT = 1
# Bump when the GGUF -> tokenizer conversion changes, so stale caches are rebuilt.
BUILD_VERSION = 1

FAMILIES = ("chatml", "gemma", "llama3")
# Tokens that end an assistant turn, per chat family (only those present in the vocab are used).
_FAMILY_STOP_TOKENS = {
    "chatml": ("<|im_end|>", "<|endoftext|>"),
    "gemma": ("<end_of_turn>", "<eos>"),
    "llama3": ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"),
}
_FAMILY_MARKERS = (("<|im_start|>", "chatml"), ("<start_of_turn>", "gemma"),
                   ("<|start_header_id|>", "llama3"))


@dataclasses.dataclass(frozen=True)
class TokenizerInfo:
    """Backend-independent facts about a tokenizer (what `memr1_tokenizer.json` stores)."""
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    unk_id: int | None
    stop_ids: frozenset[int]
    special_ids: frozenset[int]          # dropped by decode(skip_special=True)
    family: str | None                   # "chatml" | "gemma" | "llama3" | None
    chat_template: str | None            # jinja source embedded in the model, if any
    add_bos: bool                        # whether the model expects BOS on plain text
    source: str = ""

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["stop_ids"] = sorted(self.stop_ids)
        d["special_ids"] = sorted(self.special_ids)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "TokenizerInfo":
        fields = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in fields}
        d["stop_ids"] = frozenset(d["stop_ids"])
        d["special_ids"] = frozenset(d["special_ids"])
        return cls(**d)


class Tokenizer(abc.ABC):
    """Common interface; see module docstring for the conventions."""

    def __init__(self, info: TokenizerInfo):
        self.info = info

    # --- backend hooks -------------------------------------------------------------
    @abc.abstractmethod
    def _encode(self, text: str) -> list[int]: ...

    @abc.abstractmethod
    def _decode(self, ids: list[int], skip_special: bool) -> str: ...

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int: ...

    @abc.abstractmethod
    def token_to_id(self, token: str) -> int | None:
        """Id of a vocabulary entry (exact piece spelling), or None."""

    @abc.abstractmethod
    def id_to_token(self, token_id: int) -> str:
        """Vocabulary entry (piece spelling) of an id."""

    @abc.abstractmethod
    def _save_backend(self, folder: pathlib.Path) -> None: ...

    # --- shared API ----------------------------------------------------------------
    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}")
        ids = self._encode(text)
        return self._with_bos(ids) if add_bos else ids

    def encode_batch(self, texts: Sequence[str], add_bos: bool = False) -> list[list[int]]:
        return [self.encode(t, add_bos=add_bos) for t in texts]

    def as_plain_text(self, text: str) -> str:
        """``text`` with every special token spelling in it (``<|im_start|>``, ``<bos>`` ...)
        broken by a zero-width space after its first character, so encoding it can never
        produce a control token: data and memory text cannot forge a chat turn."""
        pattern = self.__dict__.get("_special_pattern")
        if pattern is None:
            texts = sorted((t for t in self.special_tokens if len(t) > 1), key=len, reverse=True)
            pattern = re.compile("|".join(re.escape(t) for t in texts)) if texts else False
            self.__dict__["_special_pattern"] = pattern
        if not pattern:
            return text
        return pattern.sub(lambda m: m.group(0)[0] + "\u200b" + m.group(0)[1:], text)

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        ids = [int(i) for i in ids]
        n = self.vocab_size
        bad = next((i for i in ids if i < 0 or i >= n), None)
        if bad is not None:
            raise ValueError(f"decode: token id {bad} out of range [0, {n})")
        return self._decode(ids, skip_special)

    def _with_bos(self, ids: list[int]) -> list[int]:
        if self.info.bos_id is None:
            raise ValueError(f"add_bos=True but tokenizer {self.info.source!r} has no BOS token")
        return [self.info.bos_id] + ids

    @property
    def bos_id(self) -> int | None:
        return self.info.bos_id

    @property
    def eos_id(self) -> int | None:
        return self.info.eos_id

    @property
    def pad_id(self) -> int | None:
        return self.info.pad_id

    @property
    def unk_id(self) -> int | None:
        return self.info.unk_id

    @property
    def stop_ids(self) -> frozenset[int]:
        return self.info.stop_ids

    @property
    def family(self) -> str | None:
        return self.info.family

    @property
    def chat_template(self) -> str | None:
        return self.info.chat_template

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special token text -> id (the ids `decode(skip_special=True)` drops)."""
        return {self.id_to_token(i): i for i in sorted(self.info.special_ids)}

    def special_token_id(self, text: str) -> int:
        """Id of a special token by its text, e.g. "<|im_end|>"; KeyError naming it if absent."""
        i = self.token_to_id(text)
        if i is None or i not in self.info.special_ids:
            raise KeyError(f"{text!r} is not a special token of {self.info.source!r}")
        return i

    @property
    def bos_token(self) -> str | None:
        return None if self.bos_id is None else self.id_to_token(self.bos_id)

    @property
    def eos_token(self) -> str | None:
        return None if self.eos_id is None else self.id_to_token(self.eos_id)

    def save(self, folder: os.PathLike | str) -> pathlib.Path:
        """Write backend file + memr1_tokenizer.json into `folder` (created)."""
        folder = pathlib.Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._save_backend(folder)
        meta = {"format": META_FORMAT, "backend": self.backend_name, **self.info.to_json()}
        atomic_write_text(folder / META_FILE, json.dumps(meta, ensure_ascii=False, indent=1))
        return folder

    backend_name = ""

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(source={self.info.source!r}, vocab_size={self.vocab_size}, "
                f"family={self.family!r})")


class HFTokenizer(Tokenizer):
    """Backed by a Hugging Face `tokenizers.Tokenizer`."""
    backend_name = "hf"

    def __init__(self, backend, info: TokenizerInfo):
        super().__init__(info)
        self._tok = backend
        self._tok.no_padding()      # e.g. MiniLM's tokenizer.json ships fixed padding
        self._tok.no_truncation()
        self._size = backend.get_vocab_size(with_added_tokens=True)

    @property
    def backend(self):
        return self._tok

    def _encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str], add_bos: bool = False) -> list[list[int]]:
        encs = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [self._with_bos(e.ids) if add_bos else e.ids for e in encs]

    def _decode(self, ids: list[int], skip_special: bool) -> str:
        if not skip_special:
            return self._tok.decode(ids, skip_special_tokens=False)
        # Use our special set (tokenizer.json "special" flags may differ from the GGUF's types).
        return self._tok.decode([i for i in ids if i not in self.info.special_ids],
                                skip_special_tokens=False)

    @property
    def vocab_size(self) -> int:
        return self._size

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str:
        t = self._tok.id_to_token(int(token_id))
        if t is None:
            raise KeyError(f"token id {token_id} not in vocabulary of {self.info.source!r}")
        return t

    def _save_backend(self, folder: pathlib.Path) -> None:
        atomic_write_by_name(folder / "tokenizer.json", self._tok.save)


class SentencePieceTokenizer(Tokenizer):
    """Backed by a sentencepiece processor.

    sentencepiece never matches CONTROL pieces (e.g. "<bos>") in text and decodes
    them to "", so those are handled here: text is split on them before encoding,
    and decoding writes them out (unless skip_special).
    """
    backend_name = "spm"

    def __init__(self, proto_bytes: bytes, info: TokenizerInfo):
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2 as pb

        super().__init__(info)
        self._proto_bytes = proto_bytes
        self._sp = spm.SentencePieceProcessor(model_proto=proto_bytes)
        proto = pb.ModelProto.FromString(proto_bytes)
        self._control = {p.piece: i for i, p in enumerate(proto.pieces)
                         if p.type == gguf_vocab.CONTROL}
        self._control_ids = frozenset(self._control.values())
        self._split_re = (re.compile("|".join(re.escape(t) for t in
                                              sorted(self._control, key=len, reverse=True)))
                          if self._control else None)

    @property
    def processor(self):
        return self._sp

    def _encode(self, text: str) -> list[int]:
        if self._split_re is None:
            return self._sp.encode(text)
        out: list[int] = []
        pos = 0
        for m in self._split_re.finditer(text):
            if m.start() > pos:
                out.extend(self._sp.encode(text[pos:m.start()]))
            out.append(self._control[m.group()])
            pos = m.end()
        if pos < len(text):
            out.extend(self._sp.encode(text[pos:]))
        return out

    def encode_batch(self, texts: Sequence[str], add_bos: bool = False) -> list[list[int]]:
        texts = list(texts)
        if self._split_re is None or not any(self._split_re.search(t) for t in texts):
            encs = self._sp.encode(texts)
            return [self._with_bos(e) if add_bos else e for e in encs]
        return super().encode_batch(texts, add_bos)

    def _decode(self, ids: list[int], skip_special: bool) -> str:
        if skip_special:
            return self._sp.decode([i for i in ids if i not in self.info.special_ids
                                    and i not in self._control_ids])
        parts: list[str] = []
        run: list[int] = []
        for i in ids:
            if i in self._control_ids:
                if run:
                    parts.append(self._sp.decode(run))
                    run = []
                parts.append(self._sp.id_to_piece(i))
            else:
                run.append(i)
        if run:
            parts.append(self._sp.decode(run))
        return "".join(parts)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def token_to_id(self, token: str) -> int | None:
        i = self._sp.piece_to_id(token)
        # piece_to_id maps unknown pieces to unk; only return unk for the unk piece itself.
        if i == self._sp.unk_id() and token != self._sp.id_to_piece(i):
            return None
        return i

    def id_to_token(self, token_id: int) -> str:
        if not 0 <= int(token_id) < self.vocab_size:
            raise KeyError(f"token id {token_id} not in vocabulary of {self.info.source!r}")
        return self._sp.id_to_piece(int(token_id))

    def _save_backend(self, folder: pathlib.Path) -> None:
        atomic_write_bytes(folder / "tokenizer.model", self._proto_bytes)


# --- info helpers ------------------------------------------------------------------

def detect_family(token_to_id) -> str | None:
    """Chat family from marker tokens present in the vocabulary."""
    for marker, fam in _FAMILY_MARKERS:
        if token_to_id(marker) is not None:
            return fam
    return None


def _stop_ids(token_to_id, family: str | None, *extra: int | None) -> frozenset[int]:
    ids = {i for i in extra if i is not None}
    for t in _FAMILY_STOP_TOKENS.get(family, ()):
        i = token_to_id(t)
        if i is not None:
            ids.add(i)
    return frozenset(ids)


# --- GGUF loading --------------------------------------------------------------------

def _gguf_cache_key(path: pathlib.Path) -> str:
    """Content key without hashing the whole (100s of MB) file: size + the first 16 MiB,
    which hold the whole metadata header of any model we use."""
    h = hashlib.sha256()
    h.update(f"v{BUILD_VERSION}:{path.stat().st_size}:".encode())
    with open(path, "rb") as f:
        h.update(f.read(16 << 20))
    return h.hexdigest()[:20]


def _default_tokenizer_cache() -> pathlib.Path:
    from memr1_jax.assets import cache_dir
    return cache_dir() / "tokenizers"


def build_tokenizer_from_gguf_metadata(meta: dict, source: str = "<gguf>") -> Tokenizer:
    """Build (no caching) from `read_gguf_metadata` output."""
    vocab = gguf_vocab.vocab_from_metadata(meta, source)
    lookup = {t: i for i, t in reversed(list(enumerate(vocab.tokens)))}.get
    family = detect_family(lookup)
    info = TokenizerInfo(
        bos_id=vocab.bos_id, eos_id=vocab.eos_id, pad_id=vocab.pad_id, unk_id=vocab.unk_id,
        stop_ids=_stop_ids(lookup, family, vocab.eos_id, vocab.eot_id, vocab.eom_id),
        special_ids=frozenset(vocab.control_ids), family=family,
        chat_template=vocab.chat_template, add_bos=vocab.add_bos, source=source)
    if vocab.model == "gpt2":
        return HFTokenizer(gguf_vocab.build_hf_bpe(vocab), info)
    if vocab.model == "llama":
        return SentencePieceTokenizer(gguf_vocab.build_spm_proto(vocab).SerializeToString(), info)
    raise ValueError(f"{source}: unsupported tokenizer.ggml.model = {vocab.model!r} "
                     "(supported: 'gpt2' byte-level BPE, 'llama' sentencepiece)")


def load_tokenizer_from_gguf(path: os.PathLike | str,
                             cache_dir: os.PathLike | str | None = None,
                             use_cache: bool = True) -> Tokenizer:
    """Tokenizer described by a GGUF file's metadata.

    With use_cache, the built tokenizer is saved under `cache_dir` (default:
    <MEMR1_CACHE>/tokenizers) in a folder keyed by the file's content, and later
    calls load it from there without opening the GGUF metadata parser.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    if not use_cache:
        return build_tokenizer_from_gguf_metadata(read_gguf_metadata(path), path.name)
    root = pathlib.Path(cache_dir) if cache_dir is not None else _default_tokenizer_cache()
    folder = root / f"{path.stem}-{_gguf_cache_key(path)}"
    if (folder / META_FILE).is_file():
        try:
            return load_tokenizer(folder)
        except Exception:  # corrupt cache entry: rebuild below
            pass
    tok = build_tokenizer_from_gguf_metadata(read_gguf_metadata(path), path.name)
    try:
        with atomic_folder(folder) as tmp:   # readers never see a half-written folder
            tok.save(tmp)
    except OSError:
        pass   # a cache entry not written (a full disk, a read-only cache): the tokenizer still works
    return tok


def load_tokenizer(folder: os.PathLike | str) -> Tokenizer:
    """Load a folder written by `Tokenizer.save` (also what the GGUF cache holds)."""
    folder = pathlib.Path(folder)
    meta_path = folder / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{meta_path}: cannot read tokenizer metadata ({e})") from None
    if meta.get("format") != META_FORMAT:
        raise ValueError(f"{meta_path}: format {meta.get('format')!r}, expected {META_FORMAT}")
    info = TokenizerInfo.from_json(meta)
    if meta["backend"] == "hf":
        from tokenizers import Tokenizer as _HF
        return HFTokenizer(_HF.from_file(str(folder / "tokenizer.json")), info)
    if meta["backend"] == "spm":
        return SentencePieceTokenizer((folder / "tokenizer.model").read_bytes(), info)
    if meta["backend"] == "bytes":   # the tiny test models' fixed byte vocabulary (e.g. an exported tiny run)
        from memr1_jax.models.registry import _byte_tokenizer
        return _byte_tokenizer()
    raise ValueError(f"{meta_path}: unknown backend {meta['backend']!r}")


# --- HF checkpoint folders ----------------------------------------------------------

def _token_content(v) -> str | None:
    if isinstance(v, dict):
        return v.get("content")
    return v if isinstance(v, str) else None


def _read_json(path: pathlib.Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON ({e})") from None


def _hf_chat_template(folder: pathlib.Path, cfg: dict) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    ct = cfg.get("chat_template") or _read_json(folder / "chat_template.json").get("chat_template")
    if isinstance(ct, list):  # [{"name": "default", "template": ...}, ...]
        named = {d.get("name"): d.get("template") for d in ct if isinstance(d, dict)}
        ct = named.get("default") or next(iter(named.values()), None)
    return ct if isinstance(ct, str) else None


def load_tokenizer_from_hf_dir(path: os.PathLike | str) -> Tokenizer:
    """Tokenizer of a Hugging Face checkpoint folder (tokenizer.json, or tokenizer.model).

    Reads bos/eos/pad/unk and the chat template from tokenizer_config.json
    (and special_tokens_map.json / generation_config.json when present).
    A folder written by `Tokenizer.save` is loaded as such.
    """
    folder = pathlib.Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"tokenizer folder not found: {folder}")
    if (folder / META_FILE).is_file():
        return load_tokenizer(folder)
    cfg = _read_json(folder / "tokenizer_config.json")
    smap = _read_json(folder / "special_tokens_map.json")
    gen = _read_json(folder / "generation_config.json")
    tj, model_file = folder / "tokenizer.json", folder / "tokenizer.model"
    placeholder = TokenizerInfo(None, None, None, None, frozenset(), frozenset(), None, None,
                                False, folder.name)
    special_ids: set[int] = set()
    if tj.is_file():
        from tokenizers import Tokenizer as _HF
        try:
            backend = _HF.from_file(str(tj))
        except Exception as e:
            raise ValueError(f"{tj}: cannot load tokenizer.json ({e})") from None
        tok: Tokenizer = HFTokenizer(backend, placeholder)
        raw = _read_json(tj)
        special_ids |= {int(a["id"]) for a in raw.get("added_tokens", []) if a.get("special")}
    elif model_file.is_file():
        tok = SentencePieceTokenizer(model_file.read_bytes(), placeholder)
        special_ids |= set(tok._control_ids)
    else:
        raise FileNotFoundError(f"{folder}: neither tokenizer.json nor tokenizer.model present")
    for k, v in (cfg.get("added_tokens_decoder") or {}).items():
        if isinstance(v, dict) and v.get("special"):
            special_ids.add(int(k))

    def special(name: str) -> int | None:
        text = _token_content(cfg.get(name)) or _token_content(smap.get(name))
        return tok.token_to_id(text) if text else None

    bos, eos, pad, unk = (special(n) for n in ("bos_token", "eos_token", "pad_token", "unk_token"))
    if isinstance(tok, SentencePieceTokenizer):
        sp = tok.processor
        bos = bos if bos is not None else (sp.bos_id() if sp.bos_id() >= 0 else None)
        eos = eos if eos is not None else (sp.eos_id() if sp.eos_id() >= 0 else None)
        pad = pad if pad is not None else (sp.pad_id() if sp.pad_id() >= 0 else None)
        unk = unk if unk is not None else (sp.unk_id() if sp.unk_id() >= 0 else None)
    gen_eos = gen.get("eos_token_id")
    gen_eos = gen_eos if isinstance(gen_eos, list) else [gen_eos]
    family = detect_family(tok.token_to_id)
    info = TokenizerInfo(
        bos_id=bos, eos_id=eos, pad_id=pad, unk_id=unk,
        stop_ids=_stop_ids(tok.token_to_id, family, eos, *[i for i in gen_eos if isinstance(i, int)]),
        special_ids=frozenset(special_ids), family=family,
        chat_template=_hf_chat_template(folder, cfg),
        add_bos=bool(cfg.get("add_bos_token", False)), source=folder.name)
    tok.info = info
    return tok


def load_sentencepiece_model(path: os.PathLike | str) -> SentencePieceTokenizer:
    """Tokenizer from a sentencepiece `.model` file (ids and specials from the model itself)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sentencepiece model not found: {path}")
    data = path.read_bytes()
    placeholder = TokenizerInfo(None, None, None, None, frozenset(), frozenset(), None, None,
                                True, path.name)
    try:
        tok = SentencePieceTokenizer(data, placeholder)
    except Exception as e:
        raise ValueError(f"{path}: not a valid sentencepiece model ({e})") from None
    sp = tok.processor
    opt = lambda i: i if i >= 0 else None  # noqa: E731
    family = detect_family(tok.token_to_id)
    tok.info = dataclasses.replace(
        placeholder, bos_id=opt(sp.bos_id()), eos_id=opt(sp.eos_id()), pad_id=opt(sp.pad_id()),
        unk_id=opt(sp.unk_id()), special_ids=tok._control_ids, family=family,
        stop_ids=_stop_ids(tok.token_to_id, family, opt(sp.eos_id())))
    return tok


class StreamDecoder:
    """Incremental detokenization for generation loops.

    Byte-level BPE and byte-fallback pieces can split one character across tokens;
    `push(id)` returns only text that is complete (never a dangling U+FFFD), and
    `flush()` returns whatever remains. Concatenated outputs equal decode(all ids).
    """

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = False):
        self._tok = tokenizer
        self._skip = skip_special
        self._ids: list[int] = []
        self._emitted = 0  # characters of decode(self._ids) already returned

    def push(self, token_id: int) -> str:
        self._ids.append(int(token_id))
        text = self._tok.decode(self._ids, skip_special=self._skip)
        if text.endswith("\ufffd"):
            return ""  # wait for the rest of the character
        new = text[self._emitted:]
        self._emitted = len(text)
        return new

    def flush(self) -> str:
        text = self._tok.decode(self._ids, skip_special=self._skip)
        new = text[self._emitted:]
        self._emitted = len(text)
        return new
