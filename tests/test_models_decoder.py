"""Decoder invariants: cached prefill+decode == full forward for every family,
padding invariance, float32 log-softmax under bf16 compute, logical axes, value model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from memr1_jax.models import decoder as D
from memr1_jax.models.config import tiny_config
from memr1_jax.models.registry import random_params


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_cached_decode_equals_full_forward(arch):
    cfg = tiny_config(arch)
    params = random_params(cfg, seed=1)
    b, t = 2, 14                     # gemma3 tiny has a window of 8: local layers are exercised
    toks = jax.random.randint(jax.random.PRNGKey(1), (b, t), 0, cfg.vocab_size)
    valid = jnp.ones((b, t), bool)
    full, _ = D.forward(cfg, params, toks, D.positions_from_valid(valid), D.causal_mask(valid))
    cache = D.init_cache(cfg, b, 16)
    kv = jnp.zeros((b, 16), bool).at[:, :5].set(True)
    out, cache = D.forward(cfg, params, toks[:, :5], D.positions_from_valid(valid[:, :5]),
                           D.cache_mask(kv, 0, 5), cache)
    steps = [out]
    for i in range(5, t):
        kv = kv.at[:, i].set(True)
        o, cache = D.forward(cfg, params, toks[:, i:i + 1], jnp.full((b, 1), i),
                             D.cache_mask(kv, cache["index"], 1), cache)
        steps.append(o)
    np.testing.assert_allclose(np.asarray(jnp.concatenate(steps, 1)), np.asarray(full), atol=1e-4)
    assert int(cache["index"]) == t


def test_left_padding_does_not_change_logits():
    cfg = tiny_config("qwen2")
    params = random_params(cfg, seed=2)
    toks = jax.random.randint(jax.random.PRNGKey(3), (1, 7), 0, cfg.vocab_size)
    valid = jnp.ones((1, 7), bool)
    ref, _ = D.forward(cfg, params, toks, D.positions_from_valid(valid), D.causal_mask(valid))
    padded = jnp.concatenate([jnp.zeros((1, 3), jnp.int32), toks], 1)
    pvalid = jnp.concatenate([jnp.zeros((1, 3), bool), valid], 1)
    out, _ = D.forward(cfg, params, padded, D.positions_from_valid(pvalid), D.causal_mask(pvalid))
    np.testing.assert_allclose(np.asarray(out[:, 3:]), np.asarray(ref), atol=1e-5)


def test_bf16_compute_returns_float32_logits_and_hidden_path():
    cfg = tiny_config("llama", dtype="bfloat16")
    params = random_params(cfg, seed=3)
    toks = jnp.arange(6, dtype=jnp.int32)[None]
    valid = jnp.ones((1, 6), bool)
    logits, _ = D.forward(cfg, params, toks, D.positions_from_valid(valid), D.causal_mask(valid))
    assert logits.dtype == jnp.float32
    hidden, _ = D.forward(cfg, params, toks, D.positions_from_valid(valid), D.causal_mask(valid),
                          return_hidden=True)
    assert hidden.shape == (1, 6, cfg.embed_dim)
    np.testing.assert_allclose(np.asarray(D.head(cfg, params, hidden)), np.asarray(logits), atol=1e-6)
    f32 = tiny_config("llama")
    ref, _ = D.forward(f32, params, toks, D.positions_from_valid(valid), D.causal_mask(valid))
    assert float(jnp.abs(jax.nn.log_softmax(logits) - jax.nn.log_softmax(ref)).max()) < 0.1


def test_every_parameter_has_logical_axes():
    for arch in ("llama", "qwen2", "gemma3"):
        cfg = tiny_config(arch)
        axes = D.logical_axes(cfg)
        shapes = jax.tree_util.tree_map(lambda x: x.shape, nn.meta.unbox(D.abstract_params(cfg)))
        names = {"embed", "vocab", "heads", "kv_heads", "head_dim", "mlp", "norm"}
        for spec, shape in zip(jax.tree_util.tree_leaves(axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)),
                               jax.tree_util.tree_leaves(shapes, is_leaf=lambda x: isinstance(x, tuple))):
            assert len(spec) == len(shape) and set(spec) <= names, (arch, spec, shape)


def test_value_model_shares_the_backbone():
    cfg = tiny_config("llama")
    params = random_params(cfg, seed=4)
    toks = jnp.arange(5, dtype=jnp.int32)[None]
    valid = jnp.ones((1, 5), bool)
    head = jnp.linspace(-1, 1, cfg.embed_dim)
    vparams = {"backbone": params, "value_head": head, "value_bias": jnp.float32(0.5)}
    values = D.ValueModel(cfg).apply({"params": vparams}, toks, D.positions_from_valid(valid), D.causal_mask(valid))
    hidden, _ = D.forward(cfg, params, toks, D.positions_from_valid(valid), D.causal_mask(valid), return_hidden=True)
    assert values.shape == (1, 5) and values.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(values), np.asarray(hidden @ head + 0.5), atol=1e-5)


def test_remat_gives_the_same_loss_and_gradients():
    """cfg.remat (train config ``remat``) recomputes each layer in the backward pass: same numbers."""
    import dataclasses
    cfg = tiny_config("qwen2")
    params = random_params(cfg, seed=4)
    toks = jax.random.randint(jax.random.PRNGKey(5), (2, 9), 0, cfg.vocab_size)
    valid = jnp.ones((2, 9), bool)

    def loss(p, c):
        logits, _ = D.forward(c, p, toks, D.positions_from_valid(valid), D.causal_mask(valid))
        return jnp.mean(jax.nn.log_softmax(logits)[..., 0] * logits[..., 1])

    l0, g0 = jax.value_and_grad(loss)(params, cfg)
    l1, g1 = jax.value_and_grad(loss)(params, dataclasses.replace(cfg, remat=True))
    np.testing.assert_allclose(float(l1), float(l0), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)
    assert float(jnp.max(jnp.abs(g0["layers_0"]["attn"]["q_proj"]))) > 0


@pytest.mark.parametrize("arch,remat,fresh", [("llama", False, True), ("gemma3", False, True),
                                              ("qwen2", True, True), ("gemma3", False, False)])
def test_last_only_equals_the_full_forward_at_the_last_position(arch, remat, fresh):
    """``last_only`` (the prefill's path: the last layer's query, attention output and MLP on the
    last position only) gives the last position's hidden state and logits of the full forward and
    the same KV cache; left padding, Gemma 3's local layers (window 8 < 14 tokens) and post-norms,
    remat, and a cache that already holds a prefix are covered."""
    import dataclasses
    cfg = dataclasses.replace(tiny_config(arch), remat=remat)
    params = random_params(cfg, seed=7)
    b, t, s = 2, 14, 20
    toks = jax.random.randint(jax.random.PRNGKey(8), (b, t), 0, cfg.vocab_size)
    valid = jnp.ones((b, t), bool).at[0, :3].set(False)
    pos = D.positions_from_valid(valid)
    if fresh:
        mask, cache = D.causal_mask(valid), D.init_cache(cfg, b, s)
    else:   # 4 keys already in the cache, then these 14 queries at slots 4..17
        cache = D.init_cache(cfg, b, s)
        kv = jnp.zeros((b, s), bool).at[:, :4 + t].set(True)
        pre = jax.random.randint(jax.random.PRNGKey(9), (b, 4), 0, cfg.vocab_size)
        _, cache = D.forward(cfg, params, pre, jnp.tile(jnp.arange(4), (b, 1)), D.cache_mask(kv, 0, 4), cache)
        pos, mask = pos + 4, D.cache_mask(kv, 4, t)
    model = D.Decoder(cfg)
    run = lambda last, hidden: model.apply({"params": params}, toks, pos, mask, cache, hidden,  # noqa: E731
                                           fresh=fresh, last_only=last)
    (h_full, c_full), (h_last, c_last) = run(False, True), run(True, True)
    assert h_last.shape == (b, 1, cfg.embed_dim)
    np.testing.assert_allclose(np.asarray(h_last[:, 0]), np.asarray(h_full[:, -1]), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(run(True, False)[0][:, 0]), np.asarray(run(False, False)[0][:, -1]),
                               atol=1e-4, rtol=1e-5)
    for a, c in zip(jax.tree.leaves(c_last), jax.tree.leaves(c_full)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))


@pytest.mark.parametrize("arch,tables", [("llama", 1), ("gemma3", 2)])
def test_rope_sin_cos_are_computed_once_per_frequency_set(arch, tables):
    """XLA fuses an inline sin/cos into every consumer (each layer, head and causal key block),
    which cost 12% of a 512-token prefill; ``rope_tables`` computes them once per forward, in a
    conditional whose two (identical) branches each hold one cos and one sin."""
    cfg = tiny_config(arch)
    params = random_params(cfg, seed=1)
    toks = jnp.zeros((2, 40), jnp.int32)
    valid = jnp.ones((2, 40), bool)
    text = jax.jit(lambda p: D.forward(cfg, p, toks, D.positions_from_valid(valid), D.causal_mask(valid))[0]
                   ).lower(params).compile().as_text()
    assert cfg.num_layers >= 2 and text.count(" cosine(") == text.count(" sine(") == 2 * tables
