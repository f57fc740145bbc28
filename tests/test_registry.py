"""Model registry: presets, tiny models, HF folders, errors, sharded placement."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from memr1_jax.models import registry
from memr1_jax.models.decoder import logical_axes
from memr1_jax.models.registry import TINY_VOCAB, list_presets, load_model
from memr1_jax.weights import save_hf_checkpoint


def test_presets_listed():
    names = list_presets()
    for n in ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "gemma3-270m", "qwen2.5-3b-instruct",
              "qwen2.5-7b-instruct", "llama3.1-8b-instruct", "gemma3-1b-it", "tiny-llama", "tiny-qwen2",
              "tiny-gemma3"):
        assert n in names
    assert registry.PRESETS["qwen2.5-3b-instruct"].env_var == "MEMR1_MODEL_QWEN2_5_3B_INSTRUCT"


def _tiny_shapes(arch: str) -> dict:
    """The tiny presets' parameter shapes written out by hand (vocabulary 260, width 64, 4 query
    and 2 key-value heads of 16, MLP 128; Qwen2 adds q/k/v biases and an untied head, Gemma 3
    query / key norms and post norms over 4 layers), not from the registry's own table."""
    V, D, H, K, hd, F = 260, 64, 4, 2, 16, 128
    layer = {("attn", "q_proj"): (D, H, hd), ("attn", "k_proj"): (D, K, hd), ("attn", "v_proj"): (D, K, hd),
             ("attn", "o_proj"): (H, hd, D), ("attn_norm", "scale"): (D,), ("mlp", "gate_proj"): (D, F),
             ("mlp", "up_proj"): (D, F), ("mlp", "down_proj"): (F, D), ("mlp_norm", "scale"): (D,)}
    top = {("embedding",): (V, D), ("final_norm", "scale"): (D,)}
    if arch == "qwen2":
        layer.update({("attn", "q_bias"): (H, hd), ("attn", "k_bias"): (K, hd), ("attn", "v_bias"): (K, hd)})
        top[("lm_head",)] = (D, V)
    if arch == "gemma3":
        layer.update({("attn", "q_norm", "scale"): (hd,), ("attn", "k_norm", "scale"): (hd,),
                      ("post_attn_norm", "scale"): (D,), ("post_mlp_norm", "scale"): (D,)})
    layers = 4 if arch == "gemma3" else 2
    return {**top, **{(f"layers_{i}", *k): v for i in range(layers) for k, v in layer.items()}}


@pytest.mark.parametrize("name,arch", [("tiny-llama", "llama"), ("tiny-qwen2", "qwen2"),
                                       ("tiny-gemma3", "gemma3")])
def test_tiny_presets(name, arch):
    m = load_model(name, seed=3)
    assert m.cfg.arch == arch and m.cfg.vocab_size == TINY_VOCAB
    got = {tuple(k.key for k in kp): x.shape for kp, x in jax.tree.leaves_with_path(m.params)}
    assert got == _tiny_shapes(arch) == registry.expected_param_shapes(m.cfg)
    # Deterministic in the seed, different across seeds.
    again, other = load_model(name, seed=3), load_model(name, seed=4)
    np.testing.assert_array_equal(np.asarray(again.params["embedding"]), np.asarray(m.params["embedding"]))
    assert not np.array_equal(np.asarray(other.params["embedding"]), np.asarray(m.params["embedding"]))
    tok = m.tokenizer
    text = "<|im_start|>user\nhé, 1+1?<|im_end|>"
    ids = tok.encode(text)
    assert ids[0] == tok.token_to_id("<|im_start|>") and max(ids) < TINY_VOCAB
    assert tok.decode(ids) == text and tok.decode(ids, skip_special=True) == "user\nhé, 1+1?"
    assert set(m.stop_ids) == {tok.eos_id, tok.token_to_id("<|im_end|>")} and m.family == "chatml"


def test_tiny_preset_sharded_and_dtype():
    m = load_model("tiny-llama")
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]), ("fsdp",))
    rules = (("embed", "fsdp"),)
    sh = nn.logical_to_mesh_sharding(logical_axes(m.cfg), mesh, rules)
    s = load_model("tiny-llama", dtype="bfloat16", shardings=sh)
    assert s.params["embedding"].sharding == sh["embedding"] and s.params["embedding"].dtype == "bfloat16"
    assert s.cfg.param_dtype == "bfloat16"


def test_hf_folder_by_path_and_env(tmp_path, monkeypatch):
    src = load_model("tiny-qwen2", seed=1)
    folder = save_hf_checkpoint(src.cfg, src.params, tmp_path / "q")
    # A folder path works directly (no tokenizer files in it, so skip the tokenizer).
    m = load_model(str(folder), with_tokenizer=False)
    assert m.cfg == src.cfg and m.source == str(folder)
    np.testing.assert_array_equal(np.asarray(m.params["lm_head"]), np.asarray(src.params["lm_head"]))
    # A hub preset resolved through its environment variable.
    monkeypatch.setenv("MEMR1_MODEL_QWEN2_5_3B_INSTRUCT", str(folder))
    m2 = load_model("qwen2.5-3b-instruct", with_tokenizer=False)
    assert m2.cfg == src.cfg and m2.name == "qwen2.5-3b-instruct"


def test_hf_preset_offline_error_is_clear(monkeypatch):
    monkeypatch.delenv("MEMR1_MODEL_GEMMA3_1B_IT", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match=r"(?s)gemma3-1b-it.*google/gemma-3-1b-it.*MEMR1_MODEL_GEMMA3_1B_IT"):
        load_model("gemma3-1b-it")


def test_unknown_name(tmp_path):
    with pytest.raises(ValueError, match=r"unknown model 'no-such-model'.*smollm2-135m-instruct"):
        load_model("no-such-model")


@pytest.mark.slow
def test_smollm2_preset_end_to_end():
    # Real preset: converted-cache (or GGUF) weights + GGUF tokenizer; greedy answer check.
    from memr1_jax.models.decoder import causal_mask, forward, positions_from_valid
    m = load_model("smollm2-135m-instruct")
    assert m.family == "chatml" and 2 in m.stop_ids and m.chat_template
    ids = m.tokenizer.encode("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
                             "<|im_start|>assistant\n")
    fwd = jax.jit(forward, static_argnums=0)
    for _ in range(6):
        tok = jax.numpy.asarray([ids])
        valid = tok >= 0
        logits = fwd(m.cfg, m.params, tok, positions_from_valid(valid), causal_mask(valid))[0]
        ids.append(int(logits[0, -1].argmax()))
    assert "Paris" in m.tokenizer.decode(ids[-6:])
