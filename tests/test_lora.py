import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memr1_jax.models import decoder as dec
from memr1_jax.models.config import tiny_config
from memr1_jax.rl import lora


def _forward(cfg, params, tokens):
    valid = jnp.ones(tokens.shape, bool)
    return dec.forward(cfg, params, tokens, dec.positions_from_valid(valid), dec.causal_mask(valid))[0]


@pytest.mark.parametrize("arch", ["llama", pytest.param("qwen2", marks=pytest.mark.slow)])
def test_zero_b_leaves_logits_unchanged_and_targets_found(arch):
    cfg = tiny_config(arch, num_layers=1)
    params = dec.init_params(cfg, jax.random.PRNGKey(0))
    lc = lora.LoraConfig(rank=4, alpha=8.0)
    adapters = lora.init_adapters(params, lc, jax.random.PRNGKey(1))
    # q/k/v/o + gate/up/down of the one layer, with flattened 3-D kernels
    ad = adapters["layers_0"]
    assert sorted(ad["attn"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert sorted(ad["mlp"]) == ["down_proj", "gate_proj", "up_proj"]
    assert ad["attn"]["q_proj"]["a"].shape == (cfg.embed_dim, 4)
    assert ad["attn"]["q_proj"]["b"].shape == (4, cfg.num_heads * cfg.head_dim)
    assert ad["attn"]["o_proj"]["a"].shape == (cfg.num_heads * cfg.head_dim, 4)
    assert "embedding" not in adapters and "q_bias" not in ad["attn"]
    tokens = jax.random.randint(jax.random.PRNGKey(2), (2, 7), 0, cfg.vocab_size)
    merged = lora.merge(params, adapters, lc.alpha, lc.rank)
    np.testing.assert_array_equal(np.asarray(_forward(cfg, merged, tokens)), np.asarray(_forward(cfg, params, tokens)))


def test_merge_matches_explicit_low_rank_update():
    cfg = tiny_config("llama", num_layers=1)
    params = dec.init_params(cfg, jax.random.PRNGKey(0))
    lc = lora.LoraConfig(rank=2, alpha=6.0)
    adapters = lora.init_adapters(params, lc, jax.random.PRNGKey(1))
    rng = np.random.default_rng(0)
    adapters = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), adapters)
    merged = lora.merge(params, adapters, lc.alpha, lc.rank)
    a, b = (np.asarray(adapters["layers_0"]["attn"]["o_proj"][k]) for k in "ab")
    w = np.asarray(params["layers_0"]["attn"]["o_proj"])  # [H, Dh, D]
    want = w + 3.0 * (a @ b).reshape(w.shape)
    np.testing.assert_allclose(np.asarray(merged["layers_0"]["attn"]["o_proj"]), want, rtol=1e-5, atol=1e-5)
    # Untargeted leaves are the same objects/values.
    np.testing.assert_array_equal(np.asarray(merged["embedding"]), np.asarray(params["embedding"]))


def test_only_adapter_leaves_get_gradients():
    cfg = tiny_config("llama", num_layers=1)
    params = dec.init_params(cfg, jax.random.PRNGKey(0))
    lc = lora.LoraConfig(rank=4)
    adapters = lora.init_adapters(params, lc, jax.random.PRNGKey(1))
    tokens = jax.random.randint(jax.random.PRNGKey(2), (2, 6), 0, cfg.vocab_size)

    def loss(base, ad):
        merged = lora.merge(jax.lax.stop_gradient(base), ad, lc.alpha, lc.rank)
        return jnp.mean(jax.nn.log_softmax(_forward(cfg, merged, tokens))[..., 3])

    g_base, g_ad = jax.grad(loss, argnums=(0, 1))(params, adapters)
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(g_base))
    # With B = 0 the first gradient reaches B (A's is zero until B moves).
    assert all(float(jnp.abs(x["b"]).max()) > 0 for x in _pairs(g_ad))
    assert jax.tree.structure(g_ad) == jax.tree.structure(adapters)


def _pairs(tree):
    if set(tree) == {"a", "b"}:
        return [tree]
    return [p for v in tree.values() for p in _pairs(v)]


def test_bad_targets_raise():
    cfg = tiny_config("llama", num_layers=1)
    params = dec.init_params(cfg, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="matched no parameter"):
        lora.init_adapters(params, lora.LoraConfig(targets=((r"nothing_here", 1),)), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="rank"):
        lora.LoraConfig(rank=0)


def test_adapter_folder_loads_as_a_model_over_its_base(tmp_path):
    """A saved adapter folder is a model name: load_model gives the base (a registry preset) with
    the adapters merged, equal to merging in memory; damaged folders are named in the error."""
    import json

    from memr1_jax.models.registry import load_model
    from memr1_jax.weights.adapters import save_adapters
    base = load_model("tiny-llama")
    lc = lora.LoraConfig(rank=4, alpha=8.0)
    adapters = lora.init_adapters(base.params, lc, jax.random.PRNGKey(1))
    adapters = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(2), x.shape), adapters)
    folder = save_adapters(tmp_path / "adapter", jax.device_get(adapters), "tiny-llama", 4, 8.0)
    loaded = load_model(str(folder))
    want = lora.merge(base.params, adapters, 8.0, 4)
    for x, y in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-6)
    assert loaded.cfg == base.cfg and loaded.tokenizer is not None
    assert sum(f.stat().st_size for f in folder.iterdir()) < 2 * sum(np.size(x) * 4 for x in jax.tree.leaves(adapters))

    cfg = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**cfg, "rank": "four"}))
    with pytest.raises(ValueError, match=r"adapter_config.json: field 'rank'"):
        load_model(str(folder))
    wrong = jax.device_get(adapters)
    wrong["layers_0"]["attn"]["q_proj"]["b"] = np.zeros((4, 3), np.float32)   # another model's shape
    other = save_adapters(tmp_path / "other", wrong, "tiny-llama", 4, 8.0)
    with pytest.raises(ValueError, match=r"other: adapters do not fit base model 'tiny-llama'.*q_proj"):
        load_model(str(other))
    (folder / "adapter_config.json").write_text(json.dumps({**cfg, "base_model": str(other)}))
    with pytest.raises(ValueError, match=r"is an adapter folder itself"):
        load_model(str(folder))
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    (folder / "adapter.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(ValueError, match=r"adapter.safetensors: not a readable safetensors file"):
        load_model(str(folder))


def test_stacked_adapters_flatten_into_one_folder_over_the_root_model(tmp_path):
    """An adapter trained over an adapter folder (stage 2 from a shipped agent) flattens into one
    rank r1 + r2 folder whose merge equals merging the two in turn; only one of the two adapting a
    kernel is allowed; a folder over a plain model is refused."""
    from memr1_jax.models.registry import load_model
    from memr1_jax.weights.adapters import flatten_stacked, read_config, save_adapters
    base = load_model("tiny-llama")
    noise = lambda tree, seed: jax.tree.map(  # noqa: E731
        lambda x: np.asarray(x + 0.05 * jax.random.normal(jax.random.PRNGKey(seed), x.shape)), tree)
    inner = noise(lora.init_adapters(base.params, lora.LoraConfig(rank=4, alpha=8.0), jax.random.PRNGKey(1)), 2)
    outer = noise(lora.init_adapters(base.params, lora.LoraConfig(rank=2, alpha=6.0), jax.random.PRNGKey(3)), 4)
    del outer["layers_0"]["attn"]["q_proj"]                  # a kernel only the inner adapter changes
    inner_dir = save_adapters(tmp_path / "inner", inner, "tiny-llama", 4, 8.0)
    outer_dir = save_adapters(tmp_path / "outer", outer, str(inner_dir), 2, 6.0)
    flat = flatten_stacked(outer_dir, tmp_path / "flat")
    assert read_config(flat) == {"format": "memr1-jax-lora", "version": 1, "base_model": "tiny-llama", "rank": 6,
                                 "alpha": 6.0}
    want = lora.merge(lora.merge(base.params, inner, 8.0, 4), outer, 6.0, 2)
    got = load_model(str(flat)).params
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="is not an adapter folder; nothing to flatten"):
        flatten_stacked(inner_dir, tmp_path / "again")
