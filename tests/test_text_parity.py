"""Id parity with transformers' own GGUF tokenizer conversion (an independent reference).

transformers' converter (integrations/gguf/gguf_tokenizer_mapping.py) is written
separately from ours: SmolLM2/Qwen become GPT2/Qwen2 tokenizers with its own
pre-tokenizer table, Gemma a GemmaTokenizer with merges regenerated from the vocab.
"""

import warnings

import pytest

from _offline import fetched
from memr1_jax import assets
from memr1_jax.text import load_tokenizer_from_gguf, read_gguf_metadata, render_chat

import transformers

STRINGS = [
    "Hello world! It's 2024.",
    "I'm sure they'll say we've done it, HE'LL",
    "3.14159 + 1234567 = 1234570.14159",
    "héllo wörld ñ 世界 こんにちは 🙂👍🏽",
    "naïve café résumé — “quotes” ‘x’ … Ω≈ç√∫",
    "def f(x):\n\treturn x**2  # sq\n\n\n    end",
    "    if x:\n        y = [1, 2, 3]\n",
    "  lead  and trail   ",
    "\t\t\n\r\n x",
    "   \n\n\n   ",
    "<|im_start|>user\nhi<|im_end|>\n",
    "<start_of_turn>user\nhi<end_of_turn>\n<bos>",
]


def _check(payload):
    path = fetched(assets.fetch_payload, payload)
    ours = load_tokenizer_from_gguf(path, use_cache=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    for s in STRINGS:
        assert ours.encode(s) == ref.encode(s, add_special_tokens=False), s
        assert ours.decode(ours.encode(s)) == ref.decode(ref.encode(s, add_special_tokens=False))
    assert ours.bos_id == ref.bos_token_id and ours.eos_id == ref.eos_token_id
    return ours, ref


@pytest.mark.parametrize("payload", [assets.SMOLLM2_135M_GGUF, assets.QWEN25_CODER_05B_GGUF, assets.GEMMA3_270M_GGUF],
                         ids=["smollm2", "qwen2.5", "gemma3"])
def test_matches_transformers_converter(payload):
    """Default suite: transformers' GGUF tokenizer converter fed our (separately tested)
    metadata parse, which skips its slow full-file GGUFReader pass (~25 s here); the slow set
    also compares with AutoTokenizer reading the whole file."""
    from transformers.integrations.gguf import gguf_tokenizer_mapping as gm

    path = fetched(assets.fetch_payload, payload)
    meta = read_gguf_metadata(path)
    tdict = {name: meta[f"tokenizer.{key}"]
             for key, name in gm.GGUF_TOKENIZER_MAPPING["tokenizer"].items()
             if f"tokenizer.{key}" in meta}
    ref, _ = gm.convert_gguf_tokenizer(meta["general.architecture"], tdict)
    ours = load_tokenizer_from_gguf(path, use_cache=False)
    for s in STRINGS:
        ids = ref.encode(s, add_special_tokens=False).ids
        assert ours.encode(s) == ids, s
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=False)
        assert ours.decode(ids, skip_special=True) == ref.decode(ids, skip_special_tokens=True)


@pytest.mark.slow
def test_smollm2_matches_transformers_autotokenizer():
    ours, ref = _check(assets.SMOLLM2_135M_GGUF)
    # The chat template from the same GGUF, rendered by transformers.
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    theirs = ref.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert render_chat(msgs, ours) == theirs


@pytest.mark.slow
def test_qwen_matches_transformers():
    _check(assets.QWEN25_CODER_05B_GGUF)


@pytest.mark.slow
def test_gemma_matches_transformers():
    _check(assets.GEMMA3_270M_GGUF)
