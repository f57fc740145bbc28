"""Tokenizers rebuilt from GGUF metadata, tokenizer.json / .model loads, cache path."""

import functools
import json
import shutil
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _offline import fetched
from memr1_jax import assets
from memr1_jax.text import (HFTokenizer, SentencePieceTokenizer, load_sentencepiece_model,
                            load_tokenizer, load_tokenizer_from_gguf, load_tokenizer_from_hf_dir,
                            read_gguf_metadata, render_chat)
from memr1_jax.text import gguf_vocab
from memr1_jax.text import tokenizer as tokmod

PAYLOADS = {"smollm2": assets.SMOLLM2_135M_GGUF, "qwen": assets.QWEN25_CODER_05B_GGUF,
            "gemma": assets.GEMMA3_270M_GGUF}

ROUND_TRIP = [
    "Hello world! It's a test, isn't it? They'll see.",                 # English
    "Ça va? naïve café résumé — “quotes” ‘x’ … Ω≈ç√∫ Straße",        # accents / punctuation
    "日本語のテキスト 中文文本 한국어 텍스트",                              # CJK
    "emoji 🙂👍🏽🇫🇷👨‍👩‍👧 end",                                              # emoji, ZWJ, flags
    "def f(x):\n\treturn {'a': [1, 2, 3]} if x else None  # comment\n",   # code
    "    if x:\n        y = 12345678 ** 2\n",                           # indentation, digits
    "\t\ttabs\t and  two   three    four     spaces",                  # whitespace runs
    "\n\n\nnewlines\r\n\r\nCRLF\n \n  \n",                              # newlines
    "   leading and trailing   ",
    "",
]


def _payload(name):
    return fetched(assets.fetch_payload, PAYLOADS[name])


@pytest.fixture(scope="module", params=list(PAYLOADS))
def fresh(request):
    """(name, tokenizer built from GGUF metadata without any cache)."""
    return request.param, _by_name(request.param)


@functools.lru_cache(maxsize=None)
def _by_name(name):
    return load_tokenizer_from_gguf(_payload(name), use_cache=False)


@pytest.fixture(scope="module")
def smol():
    return _by_name("smollm2")


@pytest.fixture(scope="module")
def gemma():
    return _by_name("gemma")


@pytest.fixture(scope="module")
def qwen():
    return _by_name("qwen")


# --- round trips ---------------------------------------------------------------------

def test_round_trip_fixed_strings(fresh):
    name, tok = fresh
    for s in ROUND_TRIP:
        ids = tok.encode(s)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == s, (name, s)
    # Tokenization is not degenerate (not one token per byte / char).
    assert len(tok.encode(ROUND_TRIP[0])) < len(ROUND_TRIP[0]) / 2.5


# SmolLM2's vocabulary has no token for 21 bytes (some C0 controls, UTF-8 lead bytes
# 0xC0/0xC1/0xF1-0xFF), so text needing them cannot round-trip (HF's own tokenizer
# drops them too); draw from the representable characters.
_SMOL_MISSING = {0x04, 0x06, 0x13, 0x14, 0x16, 0x1D}
_text_common = st.text(alphabet=st.characters(
    max_codepoint=0x3FFFF, blacklist_categories=("Cs",),
    blacklist_characters=[chr(c) for c in _SMOL_MISSING] + ["\u2581"]), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(s=_text_common)
def test_round_trip_random_text(fresh, s):
    _, tok = fresh
    assert tok.decode(tok.encode(s)) == s


def test_known_lossy_inputs_are_the_vocab_limits(smol, gemma, qwen):
    # SmolLM2 has no byte token for 0x1d: dropped, like the model's own tokenizer does.
    assert smol.decode(smol.encode("a\x1db")) == "ab"
    assert qwen.decode(qwen.encode("a\x1db\U000b2ab2")) == "a\x1db\U000b2ab2"
    # sentencepiece escapes ' ' as '▁', so a literal '▁' in text reads back as a space.
    assert gemma.decode(gemma.encode("a\u2581b")) == "a b"


# --- known ids and specials ------------------------------------------------------------

def test_gemma_fixes_from_gguf(gemma):
    # Fix 1: turn markers matched whole in text.
    assert gemma.encode("<start_of_turn>user\nhi<end_of_turn>") == [105, 2364, 107, 2202, 106]
    # Fix 2: whitespace-run pieces usable (4 spaces is the single piece id 140).
    assert gemma.encode("    return") [0] == 140
    assert gemma.id_to_token(140) == "\u2581" * 4
    # Byte fallback for a character not in the vocab.
    ids = gemma.encode("\u2fd5")
    assert [gemma.id_to_token(i) for i in ids] == ["<0xE2>", "<0xBF>", "<0x95>"]
    # Digits split one by one.
    assert len(gemma.encode("12345")) == 5
    # bos/eos stay CONTROL in the model but are matched in text by the wrapper.
    assert gemma.encode("<bos>hi<eos>") == [2, 2202, 1]
    assert gemma.decode([2, 2202, 1]) == "<bos>hi<eos>"
    assert gemma.decode([2, 105, 2202, 106, 1], skip_special=True) == "hi"


def test_special_ids_and_stop_ids(smol, qwen, gemma):
    assert (smol.bos_id, smol.eos_id, smol.pad_id) == (1, 2, 2)
    assert smol.stop_ids == {smol.token_to_id("<|im_end|>"), smol.token_to_id("<|endoftext|>")}
    assert qwen.eos_id == 151645 and qwen.stop_ids == {151643, 151645}
    assert (gemma.bos_id, gemma.eos_id, gemma.pad_id, gemma.unk_id) == (2, 1, 0, 3)
    assert gemma.stop_ids == {1, 106}
    assert smol.family == qwen.family == "chatml" and gemma.family == "gemma"
    assert smol.special_token_id("<|im_start|>") == 1
    assert qwen.special_token_id("<|im_end|>") == 151645
    assert gemma.special_token_id("<end_of_turn>") == 106
    with pytest.raises(KeyError, match="hello"):
        smol.special_token_id("hello")
    assert smol.token_to_id("definitely-not-a-token") is None
    assert gemma.token_to_id("definitely-not-a-token") is None
    assert gemma.token_to_id("<unk>") == 3
    assert "<|im_end|>" in qwen.special_tokens and "<tool_call>" not in qwen.special_tokens
    assert (smol.vocab_size, qwen.vocab_size, gemma.vocab_size) == (49152, 151936, 262144)


def test_chat_prompt_ids(qwen, smol):
    msgs = [{"role": "user", "content": "Hi"}]
    ids = qwen.encode(render_chat(msgs, qwen))
    # Qwen's default system prompt, as ids familiar from llama.cpp.
    assert ids[:7] == [151644, 8948, 198, 2610, 525, 1207, 16948]
    ids = smol.encode(render_chat(msgs, smol))
    assert ids[0] == 1 and ids.count(2) == 2 and ids[-4:] == smol.encode("<|im_start|>assistant\n")
    assert smol.decode(ids, skip_special=True).startswith("system\nYou are a helpful AI")


def test_add_bos_batch_and_errors(smol, gemma):
    texts = ["a b", "", "<|im_start|>x"]
    assert smol.encode_batch(texts) == [smol.encode(t) for t in texts]
    assert smol.encode_batch(texts, add_bos=True) == [[1] + smol.encode(t) for t in texts]
    gtexts = ["a b", "x<bos>y", "  z"]
    assert gemma.encode_batch(gtexts, add_bos=True) == [[2] + gemma.encode(t) for t in gtexts]
    with pytest.raises(ValueError, match="out of range"):
        smol.decode([0, 49152])
    with pytest.raises(ValueError, match="out of range"):
        gemma.decode([-1])
    with pytest.raises(TypeError):
        smol.encode(b"bytes")


# --- cache --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["smollm2", "gemma"])
def test_cache_hit_skips_gguf(tmp_path, monkeypatch, name):
    path = _payload(name)
    first = load_tokenizer_from_gguf(path, cache_dir=tmp_path)
    entries = list(tmp_path.iterdir())
    assert len(entries) == 1 and (entries[0] / tokmod.META_FILE).is_file()

    def boom(*a, **k):
        raise AssertionError("GGUF metadata was parsed on a cache hit")
    monkeypatch.setattr(tokmod, "read_gguf_metadata", boom)
    t0 = time.perf_counter()
    second = load_tokenizer_from_gguf(path, cache_dir=tmp_path)
    elapsed = time.perf_counter() - t0
    assert type(second) is type(first)
    assert second.info == first.info
    for s in ROUND_TRIP + ["<|im_start|>user\nhi<|im_end|>", "<start_of_turn>model\n<bos>"]:
        assert second.encode(s) == first.encode(s)
        assert second.decode(first.encode(s)) == s
    assert elapsed < 5.0
    # A corrupt cache entry is rebuilt, not trusted.
    monkeypatch.undo()
    (entries[0] / tokmod.META_FILE).write_text("{not json")
    third = load_tokenizer_from_gguf(path, cache_dir=tmp_path)
    assert third.encode(ROUND_TRIP[0]) == first.encode(ROUND_TRIP[0])


def test_cache_key_depends_on_content(tmp_path):
    a = tmp_path / "m.gguf"
    a.write_bytes(b"GGUF" + b"\x00" * 100)
    k1 = tokmod._gguf_cache_key(a)
    a.write_bytes(b"GGUF" + b"\x01" * 100)
    assert tokmod._gguf_cache_key(a) != k1


# --- tokenizer.json / .model / HF folders -------------------------------------------------

def test_hf_dir_from_tokenizer_json(tmp_path, smol):
    """A HF-style folder (tokenizer.json + tokenizer_config.json) loads to the same tokenizer."""
    smol.backend.save(str(tmp_path / "tokenizer.json"))
    cfg = {"bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"},
           "pad_token": "<|im_end|>", "unk_token": "<|endoftext|>",
           "chat_template": smol.chat_template, "add_bos_token": False}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    tok = load_tokenizer_from_hf_dir(tmp_path)
    assert isinstance(tok, HFTokenizer)
    for s in ROUND_TRIP:
        assert tok.encode(s) == smol.encode(s)
        assert tok.decode(tok.encode(s)) == s
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id) == (1, 2, 2, 0)
    assert tok.stop_ids == smol.stop_ids
    assert tok.info.special_ids == smol.info.special_ids
    msgs = [{"role": "user", "content": "hey"}]
    assert render_chat(msgs, tok) == render_chat(msgs, smol)


def test_hf_dir_minilm_wordpiece():
    folder = fetched(assets.fetch_tree, assets.MINILM_L6_V2)
    tok = load_tokenizer_from_hf_dir(folder)
    # BERT uncased ids; the shipped tokenizer.json has padding to 128 turned on: we disable it.
    assert tok.encode("Hello world") == [7592, 2088]
    assert tok.encode_batch(["Hello world", "a"]) == [[7592, 2088], [1037]]
    assert tok.token_to_id("[CLS]") == 101 and 101 in tok.info.special_ids
    assert tok.decode(tok.encode("hello, world!")) == "hello, world!"
    assert tok.pad_id == 0 and tok.family is None and tok.chat_template is None


def test_sentencepiece_model_file(tmp_path, gemma):
    gemma.save(tmp_path / "saved")
    model = tmp_path / "gemma.model"
    shutil.copy(tmp_path / "saved" / "tokenizer.model", model)
    tok = load_sentencepiece_model(model)
    assert isinstance(tok, SentencePieceTokenizer)
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id) == (2, 1, 0, 3)
    assert tok.family == "gemma" and 106 in tok.stop_ids
    for s in ROUND_TRIP + ["<bos><start_of_turn>user\nhi<end_of_turn>"]:
        assert tok.encode(s) == gemma.encode(s)
        assert tok.decode(tok.encode(s)) == s
    # HF folder holding only tokenizer.model + config.
    d = tmp_path / "hf"
    d.mkdir()
    shutil.copy(model, d / "tokenizer.model")
    (d / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<bos>", "eos_token": "<eos>"}))
    tok2 = load_tokenizer_from_hf_dir(d)
    assert tok2.encode(ROUND_TRIP[4]) == gemma.encode(ROUND_TRIP[4]) and tok2.bos_id == 2
    # Saved folder round trip via load_tokenizer.
    tok3 = load_tokenizer(tmp_path / "saved")
    assert tok3.info == gemma.info and tok3.encode(ROUND_TRIP[3]) == gemma.encode(ROUND_TRIP[3])


def test_bad_inputs_have_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        load_tokenizer_from_gguf(tmp_path / "nope.gguf")
    with pytest.raises(FileNotFoundError, match="neither tokenizer.json nor tokenizer.model"):
        load_tokenizer_from_hf_dir(tmp_path)
    (tmp_path / "x.model").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="x.model"):
        load_sentencepiece_model(tmp_path / "x.model")
    base = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a", "b", "ab"],
            "tokenizer.ggml.merges": ["a b"], "tokenizer.ggml.pre": "mystery"}
    with pytest.raises(ValueError, match="tokenizer.ggml.pre = 'mystery'"):
        tokmod.build_tokenizer_from_gguf_metadata(base, "f.gguf")
    with pytest.raises(ValueError, match="f.gguf: tokenizer.ggml.token_type has 2"):
        gguf_vocab.vocab_from_metadata({**base, "tokenizer.ggml.token_type": [1, 1]}, "f.gguf")
    with pytest.raises(ValueError, match="merges entry 'abc'"):
        gguf_vocab.vocab_from_metadata({**base, "tokenizer.ggml.merges": ["abc"]}, "f.gguf")
    with pytest.raises(ValueError, match="no tokenizer.ggml.model"):
        gguf_vocab.vocab_from_metadata({}, "f.gguf")
    with pytest.raises(ValueError, match="unsupported tokenizer.ggml.model = 'rwkv'"):
        tokmod.build_tokenizer_from_gguf_metadata({**base, "tokenizer.ggml.model": "rwkv"}, "f")


# --- Llama 3 (no Llama 3 GGUF at hand: a synthetic vocab exercising the llama-bpe path) ------

def test_llama_bpe_pre_tokenizer_matches_python_regex():
    import regex
    pre, ignore_merges = gguf_vocab.bpe_pre_tokenizer("llama-bpe")
    assert ignore_merges
    # The Split step alone (before ByteLevel remapping) against Python's `regex` engine.
    split = pre.pre_tokenize_str
    pat = regex.compile(gguf_vocab.LLAMA3_SPLIT)
    for s in ["I'M here, they'll 123456 go!!\n\n  x", "  \t\n a1b22c333d4444", "héllo 世界🙂 ...\r\n"]:
        pieces = [p for p, _ in split(s)]
        expect = ["".join(gguf_vocab_bytes(c) for c in m) for m in pat.findall(s)]
        assert pieces == expect


def gguf_vocab_bytes(ch: str) -> str:
    """GPT-2 byte-to-unicode spelling of one character (independent re-implementation)."""
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, map(chr, cs)))
    return "".join(table[b] for b in ch.encode("utf-8"))


def test_llama3_family_from_synthetic_gguf_vocab(smol):
    meta = read_gguf_metadata(_payload("smollm2"))
    extra = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
             "<|eot_id|>"]
    toks = [t for t in meta["tokenizer.ggml.tokens"] if t not in ("<|im_start|>", "<|im_end|>")]
    types = [3 if t in ("<|endoftext|>",) else 1 for t in toks]
    n = len(toks)
    meta = {k: v for k, v in meta.items() if k != "tokenizer.chat_template"}
    meta.update({"tokenizer.ggml.tokens": toks + extra, "tokenizer.ggml.token_type": types + [3] * 5,
                 "tokenizer.ggml.pre": "llama-bpe", "tokenizer.ggml.bos_token_id": n,
                 "tokenizer.ggml.eos_token_id": n + 4, "tokenizer.ggml.padding_token_id": None})
    tok = tokmod.build_tokenizer_from_gguf_metadata(meta, "synthetic-llama3")
    assert tok.family == "llama3"
    assert tok.stop_ids == {n + 1, n + 4}
    prompt = render_chat([{"role": "user", "content": "Hi 12345"}], tok)
    assert prompt.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n")
    ids = tok.encode(prompt)
    assert ids[:3] == [n, n + 2, tok.encode("user")[0]] and n + 4 in ids
    assert tok.decode(ids) == prompt
    for s in ROUND_TRIP:
        assert tok.decode(tok.encode(s)) == s


def test_stream_decoder_never_emits_partial_characters(smol, gemma):
    from memr1_jax.text import StreamDecoder

    text = "naïve 世界 🙂👍🏽 \u2fd5 done<|im_end|>"
    for tok in (smol, gemma):
        ids = tok.encode(text)
        dec = StreamDecoder(tok)
        pieces = [dec.push(i) for i in ids] + [dec.flush()]
        assert "".join(pieces) == text
        assert not any("\ufffd" in p for p in pieces)
        assert any(p == "" for p in pieces)  # some multi-byte character spanned tokens
