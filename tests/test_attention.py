"""Blockwise (flash-style) and causal-block attention equal dense attention: the cores on
random inputs (ragged blocks, fully masked rows, GQA) and the decoder's logits, gradients and
KV-cache prefill, in float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memr1_jax.models import decoder as dec
from memr1_jax.models.attention import blockwise_attention, causal_dense_attention, dense_attention
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


@pytest.mark.parametrize("block", [8, 5, 37, 64])
def test_causal_block_core_equals_dense(block):
    """Square causal attention with left padding: every query with a valid key gets dense's
    output, and gradients (through those queries) agree."""
    q, k, v, _ = _inputs(4, t=37, s=37)
    valid = np.ones((2, 37), bool)
    valid[1, :9] = False                                     # a left-padded row
    mask = jnp.asarray(np.tril(np.ones((37, 37), bool))[None] & valid[:, None, :])
    live = np.asarray(mask).any(-1)                          # [B, T] queries with a valid key
    want = dense_attention(q, k, v, mask, 0.3)
    got = causal_dense_attention(q, k, v, mask, 0.3, block)
    sel = lambda x: np.asarray(x).transpose(0, 3, 1, 2, 4)[live]  # noqa: E731
    np.testing.assert_allclose(sel(got), sel(want), atol=1e-5, rtol=1e-5)
    w = jnp.asarray(np.random.default_rng(5).normal(size=want.shape) * live[:, None, None, :, None], jnp.float32)
    gd = jax.grad(lambda *a: jnp.sum(dense_attention(*a, mask, 0.3) * w), argnums=(0, 1, 2))(q, k, v)
    gc = jax.grad(lambda *a: jnp.sum(causal_dense_attention(*a, mask, 0.3, block) * w), argnums=(0, 1, 2))(q, k, v)
    for x, y in zip(gc, gd):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5, rtol=1e-5)
    if block < 37:                                           # the skipped blocks are never formed
        text = jax.jit(lambda *a: causal_dense_attention(*a, mask, 0.3, block)).lower(q, k, v).as_text()
        assert "x37x37xf32" not in text


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-gemma3"])
def test_fresh_prefill_equals_attending_all_cache_slots(preset):
    """The sampler's prefill (the prompt's own keys, causal blocks of 128 skipped) gives the
    last-position logits, hidden states and KV cache of the plain path that attends over every
    cache slot under ``cache_mask``; prompts of 300 tokens span three query blocks."""
    m = load_model(preset)
    cfg, t, s = m.cfg, 300, 340
    r = np.random.default_rng(6)
    tokens = jnp.asarray(r.integers(0, cfg.vocab_size, size=(2, t)), jnp.int32)
    valid = np.ones((2, t), bool)
    valid[0, :131] = False                                   # padding across a block boundary
    valid = jnp.asarray(valid)
    pos = dec.positions_from_valid(valid)
    key_valid = jnp.zeros((2, s), bool).at[:, :t].set(valid)
    plain_h, plain_c = dec.forward(cfg, m.params, tokens, pos, dec.cache_mask(key_valid, 0, t),
                                   dec.init_cache(cfg, 2, s), True)
    fresh_h, fresh_c = dec.Decoder(cfg).apply({"params": m.params}, tokens, pos, dec.causal_mask(valid),
                                              dec.init_cache(cfg, 2, s), True, fresh=True)
    v = np.asarray(valid)
    np.testing.assert_allclose(np.asarray(fresh_h)[v], np.asarray(plain_h)[v], atol=1e-5, rtol=1e-5)
    for a, b in zip(fresh_c["layers"], plain_c["layers"]):
        for name in ("k", "v"):   # cache rows of valid slots; padding slots are never read
            np.testing.assert_allclose(np.asarray(a[name]).transpose(0, 2, 1, 3)[:, :t][v],
                                       np.asarray(b[name]).transpose(0, 2, 1, 3)[:, :t][v], atol=1e-5, rtol=1e-5)
    assert int(fresh_c["index"]) == int(plain_c["index"]) == t


@pytest.mark.parametrize("rows", [2, 9])   # both forms: keys @ q, and the broadcast sum from 8 rows
def test_decode_core_equals_dense(rows):
    """One query per row against a cache with invalid slots (GQA, a row with one valid key)."""
    from memr1_jax.models.attention import DECODE_BROADCAST_MIN_ROWS, decode_attention
    assert (rows >= DECODE_BROADCAST_MIN_ROWS) == (rows == 9)   # one case per form
    q, k, v, _ = _inputs(7, t=4, s=45, b=rows)
    q = q[:, :, :, :1]
    valid = np.random.default_rng(8).random((rows, 45)) > 0.3
    valid[1] = False
    valid[1, 17] = True
    mask = jnp.asarray(valid[:, None, :])
    np.testing.assert_allclose(np.asarray(decode_attention(q, k, v, mask, 0.3)),
                               np.asarray(dense_attention(q, k, v, mask, 0.3)), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("t", [1, 3])
def test_shared_prefix_core_equals_dense_over_repeated_prompt_keys(t):
    """G samples per prompt over its keys stored once, then their own: equal to dense attention
    over each row's concatenated [prompt copy, own] keys (masked prompt slots, a row whose own
    slots are all masked, GQA)."""
    from memr1_jax.models.attention import shared_prefix_attention
    r = np.random.default_rng(11)
    b, g, k, gq, p, s, d = 2, 3, 2, 3, 13, 6, 8
    q = jnp.asarray(r.normal(size=(b * g, k, gq, t, d)), jnp.float32)
    pk, pv = (jnp.asarray(r.normal(size=(b, k, p, d)), jnp.float32) for _ in range(2))
    own_k, own_v = (jnp.asarray(r.normal(size=(b * g, k, s, d)), jnp.float32) for _ in range(2))
    prompt_valid = np.repeat(r.random((b, p)) > 0.3, g, axis=0)
    prompt_valid[:, -1] = True
    own_valid = r.random((b * g, t, s)) > 0.4
    own_valid[4] = False
    mask = jnp.asarray(np.concatenate([np.broadcast_to(prompt_valid[:, None], (b * g, t, p)), own_valid], -1))
    want = dense_attention(q, jnp.concatenate([jnp.repeat(pk, g, axis=0), own_k], axis=2),
                           jnp.concatenate([jnp.repeat(pv, g, axis=0), own_v], axis=2), mask, 0.3)
    got = shared_prefix_attention(q, pk, pv, own_k, own_v, mask, 0.3)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6, rtol=1e-5)
