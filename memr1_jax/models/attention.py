"""Attention cores over grouped queries: dense, causal-block (square, no cache), decode (one
query per row), and blockwise (flash-style) for long rows.

Layout: queries [B, K, G, T, D] (K kv-heads, G query heads per kv-head), keys and values
[B, K, S, D], a boolean mask [B, T, S] (True: query t may attend to key slot s). All return
[B, K, G, T, D] in the values' dtype. Logits and the softmax run in float32.
``shared_prefix_attention`` adds keys shared by groups of rows (a GRPO group's prompt).

``blockwise_attention`` never forms [T, S] logits: an online softmax runs over key blocks
inside a ``lax.scan``, one query block at a time, with each scan step rematerialised, so the
backward pass stores only the running (max, sum, output) per step, not the probabilities. It
computes what ``dense_attention`` computes, including rows whose keys are all masked (both
average every real key uniformly, as the finite ``NEG_INF`` fill makes the dense softmax do).
The boolean mask itself is still [B, T, S] (one byte per entry: 1/(4 H) of float32 logits).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -1e30            # masked logits: finite, so fully masked rows stay defined
_PAD_NEG = 2 * NEG_INF     # keys added to fill the last block: below masked ones, weight 0


def dense_attention(q, keys, values, mask, scale: float):
    b, k, g, t, d = q.shape
    s = keys.shape[2]
    # Queries as [B, K, G*T, D]: both products are then plain batched matmuls with leading
    # batch dims, which XLA:CPU runs ~2x faster (forward and backward) than a 5-D einsum.
    logits = jnp.einsum("bkqd,bksd->bkqs", q.reshape(b, k, g * t, d), keys).astype(jnp.float32) * scale
    logits = jnp.where(mask[:, None, None, :, :], logits.reshape(b, k, g, t, s), NEG_INF)
    # The softmax's division applied to the [T, D] output, not the [T, S] weights: one pass
    # over the logits fewer. The max is a shift that cancels, so it carries no gradient.
    shifted = jnp.exp(logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True)))
    total = jnp.sum(shifted, axis=-1, keepdims=True)
    out = jnp.einsum("bkqs,bksd->bkqd", shifted.astype(values.dtype).reshape(b, k, g * t, s), values)
    return (out.reshape(b, k, g, t, d) / total).astype(values.dtype)


DECODE_BROADCAST_MIN_ROWS = 8


def decode_attention(q, keys, values, mask, scale: float):
    """``dense_attention`` for one query per row (a decode step, T == 1).

    From ``DECODE_BROADCAST_MIN_ROWS`` rows on, the logits are a broadcast multiply summed over
    D: XLA:CPU emits that as one loop fusion split over its threads, where a batched dot of
    [S, D] x [D, G] runs on one thread (30 layers, 576 slots, this 2-core CPU: 78-85 vs 117-141
    ms at batch 32, 48 vs 73 ms at 16, even at 8). Below that the loop fusion is the slower one
    (8.5 vs 2.3 ms at batch 1), and keys @ q -> [B, K, S, G] reads the cache fastest."""
    if q.shape[0] >= DECODE_BROADCAST_MIN_ROWS:
        logits = jnp.sum(keys[:, :, None] * q, axis=-1).astype(jnp.float32) * scale   # [B, K, G, S]
        logits = jnp.where(mask[:, 0][:, None, None, :], logits, NEG_INF)              # mask [B, 1, S]
        probs = jax.nn.softmax(logits, axis=-1).astype(values.dtype)
        return jnp.einsum("bkgs,bksd->bkgd", probs, values)[:, :, :, None]
    logits = jnp.einsum("bksd,bkgd->bksg", keys, q[:, :, :, 0]).astype(jnp.float32) * scale
    logits = jnp.where(mask[:, 0][:, None, :, None], logits, NEG_INF)
    probs = jax.nn.softmax(logits, axis=2).astype(values.dtype)
    return jnp.einsum("bksg,bksd->bkgd", probs, values)[:, :, :, None]


def shared_prefix_attention(q, prefix_keys, prefix_values, keys, values, mask, scale: float):
    """``dense_attention`` over a prompt's keys stored once for its G samples, then each
    sample's own keys: what a GRPO group's decode reads, without G copies of the prompt.

    q [B*G, K, Gq, T, D] (rows prompt-major: row i*G + j is sample j of prompt i);
    prefix_keys / prefix_values [B, K, P, D]; keys / values [B*G, K, S, D]; mask
    [B*G, T, P + S] over the prompt slots then the row's own. The G samples of a prompt
    become extra query rows of one product with its keys, so each prompt key is read once per
    prompt, not once per sample. One softmax spans both parts, so the result is
    ``dense_attention`` over the concatenated keys."""
    r, k, gq, t, d = q.shape
    b, p = prefix_keys.shape[0], prefix_keys.shape[2]
    g, s = r // b, keys.shape[2]

    def to_prompt(x):   # [B*G, K, Gq, T, X] -> [B, K, G*Gq*T, X]
        x = x.reshape((b, g) + x.shape[1:])
        return jnp.moveaxis(x, 1, 2).reshape(b, k, g * gq * t, x.shape[-1])

    def to_rows(x):     # the inverse
        x = jnp.moveaxis(x.reshape(b, k, g, gq, t, x.shape[-1]), 2, 1)
        return x.reshape(r, k, gq, t, x.shape[-1])

    prompt = to_rows(jnp.einsum("bkqd,bksd->bkqs", to_prompt(q), prefix_keys))
    own = jnp.einsum("bkqd,bksd->bkqs", q.reshape(r, k, gq * t, d), keys).reshape(r, k, gq, t, s)
    logits = jnp.concatenate([prompt, own], axis=-1).astype(jnp.float32) * scale
    logits = jnp.where(mask[:, None, None], logits, NEG_INF)
    probs = jax.nn.softmax(logits, axis=-1).astype(values.dtype)
    out = to_rows(jnp.einsum("bkqs,bksd->bkqd", to_prompt(probs[..., :p]), prefix_values))
    own = jnp.einsum("bkqs,bksd->bkqd", probs[..., p:].reshape(r, k, gq * t, s), values)
    return out + own.reshape(r, k, gq, t, d)


CAUSAL_QUERY_BLOCK = 128


def causal_dense_attention(q, keys, values, mask, scale: float, block: int = CAUSAL_QUERY_BLOCK):
    """``dense_attention`` where query t and key t are the same position (a forward without a
    cache, or a prefill into an empty one): query block [i, i + block) reads keys [0, i + block)
    only, since later keys are masked for it anyway. About half the logits of the square at
    T = 512 (0.56 with blocks of 128). Outputs equal ``dense_attention``'s at every query with at
    least one valid key; a fully masked query (a padding slot) averages fewer keys, which no
    valid token ever reads."""
    t = q.shape[3]
    if t <= block:
        return dense_attention(q, keys, values, mask, scale)
    outs = []
    for start in range(0, t, block):
        end = min(start + block, t)
        outs.append(dense_attention(q[:, :, :, start:end], keys[:, :, :end], values[:, :, :end],
                                    mask[:, start:end, :end], scale))
    return jnp.concatenate(outs, axis=3)


def _pad(x, axis: int, size: int, value=0):
    extra = size - x.shape[axis]
    if not extra:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return jnp.pad(x, widths, constant_values=value)


def blockwise_attention(q, keys, values, mask, scale: float, block_q: int = 512, block_k: int = 512):
    b, k, g, t, d = q.shape
    s = keys.shape[2]
    bq, bk = min(block_q, t), min(block_k, s)
    nq, nk = -(-t // bq), -(-s // bk)
    tp, sp = nq * bq, nk * bk
    q = _pad(q, 3, tp)
    keys, values = _pad(keys, 2, sp), _pad(values, 2, sp)
    mask = _pad(_pad(mask, 1, tp, False), 2, sp, False)
    key_pad = (jnp.arange(sp) >= s).reshape(nk, bk)
    q_blocks = q.reshape(b, k, g, nq, bq, d).transpose(3, 0, 1, 2, 4, 5)        # [nq, B, K, G, bq, D]
    mask_blocks = mask.reshape(b, nq, bq, nk, bk).transpose(1, 3, 0, 2, 4)      # [nq, nk, B, bq, bk]
    k_blocks = keys.reshape(b, k, nk, bk, d).transpose(2, 0, 1, 3, 4)           # [nk, B, K, bk, D]
    v_blocks = values.reshape(b, k, nk, bk, d).transpose(2, 0, 1, 3, 4)

    @jax.checkpoint
    def key_step(carry, xs):
        qi, (m, l, acc) = carry
        kj, vj, mj, pj = xs
        logits = jnp.einsum("bkgqd,bksd->bkgqs", qi, kj).astype(jnp.float32) * scale
        logits = jnp.where(mj[:, None, None], logits, NEG_INF)
        logits = jnp.where(pj, _PAD_NEG, logits)
        m_new = jnp.maximum(m, jnp.max(logits, axis=-1))
        corr = jnp.exp(m - m_new)
        p = jnp.exp(logits - m_new[..., None])
        l = l * corr + jnp.sum(p, axis=-1)
        acc = acc * corr[..., None] + jnp.einsum("bkgqs,bksd->bkgqd", p.astype(vj.dtype), vj).astype(jnp.float32)
        return (qi, (m_new, l, acc)), None

    def query_block(xs):
        qi, mi = xs
        init = (jnp.full((b, k, g, bq), -jnp.inf, jnp.float32), jnp.zeros((b, k, g, bq), jnp.float32),
                jnp.zeros((b, k, g, bq, d), jnp.float32))
        (_, (_, l, acc)), _ = jax.lax.scan(key_step, (qi, init), (k_blocks, v_blocks, mi, key_pad))
        return (acc / l[..., None]).astype(values.dtype)

    out = jax.lax.map(query_block, (q_blocks, mask_blocks))                   # [nq, B, K, G, bq, D]
    return out.transpose(1, 2, 3, 0, 4, 5).reshape(b, k, g, tp, d)[:, :, :, :t]
