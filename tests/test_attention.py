"""Blockwise (flash-style) attention equals dense attention: the cores on random inputs
(ragged blocks, fully masked rows, GQA) and the decoder's logits, gradients and KV-cache
prefill, in float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memr1_jax.models import decoder as dec
from memr1_jax.models.attention import blockwise_attention, dense_attention
from memr1_jax.models.registry import load_model


def _inputs(seed, b=2, k=2, g=3, t=37, s=37, d=8):
    r = np.random.default_rng(seed)
    q = jnp.asarray(r.normal(size=(b, k, g, t, d)), jnp.float32)
    keys = jnp.asarray(r.normal(size=(b, k, s, d)), jnp.float32)
    values = jnp.asarray(r.normal(size=(b, k, s, d)), jnp.float32)
    valid = r.random((b, s)) > 0.2
    valid[:, -1] = True
    mask = np.tril(np.ones((t, s), bool), k=s - t)[None] & valid[:, None, :]
    mask[0, 3] = False                       # a fully masked query row
    return q, keys, values, jnp.asarray(mask)


@pytest.mark.parametrize("blocks", [(8, 8), (16, 5), (64, 64), (1, 37)])
def test_blockwise_core_equals_dense(blocks):
    q, k, v, mask = _inputs(0)
    want = dense_attention(q, k, v, mask, 0.3)
    got = blockwise_attention(q, k, v, mask, 0.3, *blocks)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)
    # gradients of a scalar through both, with respect to q, k and v
    w = jnp.asarray(np.random.default_rng(1).normal(size=want.shape), jnp.float32)
    gd = jax.grad(lambda *a: jnp.sum(dense_attention(*a, mask, 0.3) * w), argnums=(0, 1, 2))(q, k, v)
    gb = jax.grad(lambda *a: jnp.sum(blockwise_attention(*a, mask, 0.3, *blocks) * w), argnums=(0, 1, 2))(q, k, v)
    for x, y in zip(gb, gd):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5, rtol=1e-5)


def test_blockwise_never_forms_the_full_logits():
    q, k, v, mask = _inputs(2, b=1, k=1, g=1, t=256, s=256, d=8)
    text = jax.jit(lambda *a: blockwise_attention(*a, mask, 0.3, 32, 32)).lower(q, k, v).as_text()
    assert "256x256xf32" not in text and "32x32xf32" in text
    assert "256x256xf32" in jax.jit(lambda *a: dense_attention(*a, mask, 0.3)).lower(q, k, v).as_text()


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-qwen2", "tiny-gemma3"])
def test_decoder_blockwise_logits_and_gradients_equal_dense(preset):
    m = load_model(preset)
    dense_cfg = m.cfg
    block_cfg = m.cfg.replace(attention="blockwise", attention_block=8)
    r = np.random.default_rng(3)
    tokens = jnp.asarray(r.integers(0, m.cfg.vocab_size, size=(3, 29)), jnp.int32)
    valid = np.ones((3, 29), bool)
    valid[1, :7] = False                      # a left-padded row
    valid = jnp.asarray(valid)
    pos, mask = dec.positions_from_valid(valid), dec.causal_mask(valid)

    def loss(params, cfg):
        logits, _ = dec.Decoder(cfg).apply({"params": params}, tokens, pos, mask)
        return jnp.sum(jnp.where(valid[..., None], jax.nn.log_softmax(logits), 0.0)[..., :5]), logits

    (ld, logits_d), gd = jax.value_and_grad(loss, has_aux=True)(m.params, dense_cfg)
    (lb, logits_b), gb = jax.value_and_grad(loss, has_aux=True)(m.params, block_cfg)
    v = np.asarray(valid)
    np.testing.assert_allclose(np.asarray(logits_b)[v], np.asarray(logits_d)[v], atol=1e-5, rtol=1e-5)
    for x, y in zip(jax.tree.leaves(gb), jax.tree.leaves(gd)):
        # float32 sums in another order: within 1e-5 of each gradient tensor's largest entry
        x, y = np.asarray(x), np.asarray(y)
        assert np.max(np.abs(x - y)) <= 1e-5 * np.max(np.abs(y)) + 1e-7
    # prefill into a KV cache: the same last-position logits and cache
    from memr1_jax.sampling.sampler import prefill
    sd = prefill(dense_cfg, m.params, tokens, valid, cache_len=40)
    sb = prefill(block_cfg, m.params, tokens, valid, cache_len=40)
    np.testing.assert_allclose(np.asarray(sb["logits"]), np.asarray(sd["logits"]), atol=1e-5, rtol=1e-5)
