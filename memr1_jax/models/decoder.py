"""One pure-functional Flax decoder for Llama/SmolLM2, Qwen2/2.5 and Gemma 3.

Called as ``Decoder(cfg).apply({"params": params}, tokens, positions, mask, cache)``
and returns ``(logits or hidden states, cache)``:

* tokens, positions: int32 [B, T]; positions are RoPE positions (per row, so
  left-padded prompts start at 0).
* mask: bool [B, T, S], True where query t may attend to key slot s. S == T
  without a cache, S == cache length with one (see ``causal_mask`` /
  ``cache_mask``).
* cache: None, or {"index": int32 scalar or per-row [B] (next slot to write), "layers":
  tuple of {"k", "v"} [B, kv_heads, S, head_dim]}. New keys and values are
  written at ``index``; the returned cache has ``index + T``. A layer may also hold
  "prefix_k" / "prefix_v" [B / G, kv_heads, P, head_dim]: a prompt shared by each G
  consecutive rows, read as slots [0, P) before the row's own (the mask is then
  [B, T, P + S]); ``sampler.prefill(share_prompt=True)`` builds it.
* fresh (static): the cache is empty and written from slot 0 (a prefill), so
  attention reads this call's T keys only and the mask is [B, T, T]; with
  ``attention="dense"`` such square attention skips key blocks after each
  query block (``causal_dense_attention``), as a forward without a cache does.
* last_only (static): logits or hidden states of the last position only, [B, 1, ...];
  the last layer computes keys and values for every position (the cache) and its
  query, attention output and MLP for that one (a prefill needs nothing else).

Every parameter carries logical axis names (embed, vocab, heads, kv_heads,
head_dim, mlp, norm) so a rule table can map them onto a device mesh.
Layers are a Python list (not a scan): XLA:CPU decode is dominated by per-op
overhead and the unrolled layout with a donated cache is measurably faster.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from memr1_jax.models.attention import (blockwise_attention, causal_dense_attention, decode_attention,
                                        dense_attention, shared_prefix_attention)
from memr1_jax.models.config import ModelConfig

Array = jax.Array
Cache = dict[str, Any]


def _lp(init, axes):
    return nn.with_logical_partitioning(init, axes)


def _constrain(x, axes):
    # No-op without a mesh and rules in scope, so one code path runs everywhere.
    return nn.with_logical_constraint(x, axes)


def _dense(x, w):
    """x [..., D] @ w [D, F] as one 2-D matmul. XLA:CPU runs the weight gradient of a
    3-D [B, T, D] contraction (over both B and T) ~1.6x slower than the same product on
    the flattened [B*T, D] rows; the reshapes are free (row-major bitcasts)."""
    lead = x.shape[:-1]
    return (x.reshape(-1, x.shape[-1]) @ w).reshape(lead + (w.shape[-1],))


def write_slots(buf, new, index):
    """Cache buffer [B, K, S, D] with ``new`` [B, K, T, D] written at slot ``index``: one int
    for every row, or an int32 [B] per row (speculative decoding, where rows advance by the
    number of draft tokens each accepted)."""
    if jnp.ndim(index) == 0:
        return jax.lax.dynamic_update_slice(buf, new, (0, 0, index, 0))
    return jax.vmap(lambda b, n, i: jax.lax.dynamic_update_slice(b, n, (0, i, 0)))(buf, new, index)


# --------------------------------------------------------------------------- RoPE
def rope_inv_freq(head_dim: int, theta: float, scaling: dict | None = None) -> np.ndarray:
    """HF-convention inverse frequencies, with optional llama3 / linear scaling."""
    inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    if not scaling:
        return inv.astype(np.float32)
    kind = scaling.get("rope_type", scaling.get("type"))
    factor = float(scaling["factor"])
    if kind == "linear":
        inv = inv / factor
    elif kind == "llama3":
        low = float(scaling.get("low_freq_factor", 1.0))
        high = float(scaling.get("high_freq_factor", 4.0))
        orig = float(scaling.get("original_max_position_embeddings", 8192))
        low_wavelen, high_wavelen = orig / low, orig / high
        wavelen = 2 * math.pi / inv
        inv_l = np.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (orig / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        inv = np.where(medium, smoothed, inv_l)
    else:
        raise ValueError(f"rope_scaling type {kind!r} is not supported (expected 'llama3' or 'linear')")
    return inv.astype(np.float32)


def layer_inv_freq(cfg: ModelConfig, layer: int) -> np.ndarray:
    scaling = dict(cfg.rope_scaling) if (cfg.rope_scaling and cfg.layer_uses_rope_scaling(layer)) else None
    return rope_inv_freq(cfg.head_dim, cfg.layer_rope_theta(layer), scaling)


def rope_tables(positions: Array, inv_freq: np.ndarray) -> tuple[Array, Array]:
    """(cos, sin) [B, T, 1, D] of the rotate-half RoPE at ``positions`` [B, T].

    Computed once per forward and shared by every layer with these frequencies. XLA fuses an
    elementwise producer into each of its consumers, so sin/cos written inline were recomputed
    in every layer, for every head of the broadcast and for each causal query block's slice of
    the keys (12% of a 512-token prefill on XLA:CPU). A conditional's result is a buffer that
    no consumer can fuse (an optimization barrier is removed before fusion on CPU); both
    branches are the same function, so the predicate never changes the result."""
    freqs = positions[..., None].astype(jnp.float32) * jnp.asarray(inv_freq)  # [B, T, D/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
    cos_sin = lambda e: (jnp.cos(e), jnp.sin(e))  # noqa: E731
    if positions.shape[1] == 1:
        # A decode step: [B, 1] positions cost little inline, and a conditional in the decode
        # loop measured 0-10% slower per step at batch 32 (noisy A/B).
        return cos_sin(emb)
    # A predicate XLA cannot fold (it proves `positions >= 0` from positions_from_valid's max).
    return jax.lax.cond(jnp.all(jnp.isfinite(freqs)), cos_sin, cos_sin, emb)


def apply_rope(x: Array, rope: tuple[Array, Array]) -> Array:
    """Rotate-half RoPE (the HF layout) on x [B, T, H, D] with ``rope_tables``' (cos, sin)."""
    cos, sin = rope
    xf = x.astype(jnp.float32)
    x1, x2 = jnp.split(xf, 2, axis=-1)
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    return (xf * cos + rotated * sin).astype(x.dtype)


# ------------------------------------------------------------------------ modules
class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * scale, in float32.

    Gemma's ``(1 + w)`` convention is folded into ``scale`` by the weight
    loaders, so all families share this plain form.
    """
    eps: float
    axis_name: str = "norm"
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", _lp(nn.initializers.ones, (self.axis_name,)),
                           (x.shape[-1],), self.param_dtype)
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        return (y * scale.astype(jnp.float32)).astype(x.dtype)


class Attention(nn.Module):
    cfg: ModelConfig
    layer: int

    @nn.compact
    def __call__(self, x, rope, mask, cache, index, fresh=False, last_only=False):
        cfg = self.cfg
        dt, pdt = cfg.compute_dtype, cfg.weight_dtype
        d, h, k, hd = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        init = nn.initializers.normal(stddev=d ** -0.5)
        wq = self.param("q_proj", _lp(init, ("embed", "heads", "head_dim")), (d, h, hd), pdt)
        wk = self.param("k_proj", _lp(init, ("embed", "kv_heads", "head_dim")), (d, k, hd), pdt)
        wv = self.param("v_proj", _lp(init, ("embed", "kv_heads", "head_dim")), (d, k, hd), pdt)
        wo = self.param("o_proj", _lp(nn.initializers.normal(stddev=(h * hd) ** -0.5),
                                      ("heads", "head_dim", "embed")), (h, hd, d), pdt)
        b, t = x.shape[:2]
        # last_only: keys and values of every position (the cache), the query of the last one.
        q_first = t - 1 if last_only else 0
        tq = t - q_first
        q = _dense(x[:, q_first:], wq.astype(dt).reshape(d, h * hd)).reshape(b, tq, h, hd)
        kk = _dense(x, wk.astype(dt).reshape(d, k * hd)).reshape(b, t, k, hd)
        v = _dense(x, wv.astype(dt).reshape(d, k * hd)).reshape(b, t, k, hd)
        if cfg.qkv_bias:
            zeros = nn.initializers.zeros
            q = q + self.param("q_bias", _lp(zeros, ("heads", "head_dim")), (h, hd), pdt).astype(dt)
            kk = kk + self.param("k_bias", _lp(zeros, ("kv_heads", "head_dim")), (k, hd), pdt).astype(dt)
            v = v + self.param("v_bias", _lp(zeros, ("kv_heads", "head_dim")), (k, hd), pdt).astype(dt)
        if cfg.qk_norm:
            q = RMSNorm(cfg.rms_eps, "head_dim", pdt, name="q_norm")(q)
            kk = RMSNorm(cfg.rms_eps, "head_dim", pdt, name="k_norm")(kk)
        q = apply_rope(q, tuple(r[:, q_first:] for r in rope))
        kk = apply_rope(kk, rope)
        mask = mask[:, q_first:]

        new_cache = None
        if cache is not None:
            cdt = cache["k"].dtype
            keys = write_slots(cache["k"], kk.transpose(0, 2, 1, 3).astype(cdt), index)
            values = write_slots(cache["v"], v.transpose(0, 2, 1, 3).astype(cdt), index)
            # [B, kv_heads, S, D]: the attention einsums read it without a per-step
            # transpose of the whole cache (2x faster decode at batch 32 on XLA:CPU).
            new_cache = {"k": keys, "v": values}
            keys, values = keys.astype(dt), values.astype(dt)
        prefix = None
        if cache is not None and "prefix_k" in cache:
            # A group's prompt, stored once for its rows (sampler.prefill with share_prompt):
            # slots [0, P) of every row's mask, the row's own cache after them.
            new_cache.update(prefix_k=cache["prefix_k"], prefix_v=cache["prefix_v"])
            prefix = cache["prefix_k"].astype(dt), cache["prefix_v"].astype(dt)
        square = cache is None or fresh   # query t and key t are one position: this call's keys only
        if square:
            keys, values = kk.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)

        offset = 0 if prefix is None else prefix[0].shape[2]
        s = offset + keys.shape[2]
        if cfg.is_local_layer(self.layer):
            # Slots are contiguous per row, so slot distance equals position distance.
            q_slot = offset + jnp.asarray(index)[..., None] + q_first + jnp.arange(tq)   # [Tq] or [B, Tq]
            window = (q_slot[..., :, None] - jnp.arange(s)) < cfg.sliding_window
            mask = mask & (window if window.ndim == 3 else window[None])
        g = h // k
        q = q.reshape(b, tq, k, g, hd).transpose(0, 2, 3, 1, 4)         # [B, kv_heads, G, Tq, D]
        if prefix is not None:
            out = shared_prefix_attention(q, *prefix, keys, values, mask, cfg.attn_scale)
        elif cfg.attention == "blockwise" and tq > 1:   # decode (one query) is a single row of logits
            out = blockwise_attention(q, keys, values, mask, cfg.attn_scale, cfg.attention_block,
                                      cfg.attention_block)
        elif square and tq > 1:
            out = causal_dense_attention(q, keys, values, mask, cfg.attn_scale)
        elif tq == 1:
            out = decode_attention(q, keys, values, mask, cfg.attn_scale)
        else:
            out = dense_attention(q, keys, values, mask, cfg.attn_scale)
        out = out.transpose(0, 3, 1, 2, 4).reshape(b, tq, h * hd)
        y = _dense(out, wo.astype(dt).reshape(h * hd, d))
        return y, new_cache


class MLP(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        dt, pdt = cfg.compute_dtype, cfg.weight_dtype
        d, f = cfg.embed_dim, cfg.mlp_dim
        w_gate = self.param("gate_proj", _lp(nn.initializers.normal(d ** -0.5), ("embed", "mlp")), (d, f), pdt)
        w_up = self.param("up_proj", _lp(nn.initializers.normal(d ** -0.5), ("embed", "mlp")), (d, f), pdt)
        w_down = self.param("down_proj", _lp(nn.initializers.normal(f ** -0.5), ("mlp", "embed")), (f, d), pdt)
        gate = _dense(x, w_gate.astype(dt))
        act = jax.nn.silu(gate) if cfg.activation == "silu" else jax.nn.gelu(gate, approximate=True)
        hidden = _constrain(act * _dense(x, w_up.astype(dt)), ("batch", "length", "mlp"))
        return _dense(hidden, w_down.astype(dt))


class Block(nn.Module):
    cfg: ModelConfig
    layer: int

    @nn.compact
    def __call__(self, x, rope, mask, cache, index, fresh=False, last_only=False):
        cfg, pdt = self.cfg, self.cfg.weight_dtype
        h = RMSNorm(cfg.rms_eps, "norm", pdt, name="attn_norm")(x)
        a, cache = Attention(cfg, self.layer, name="attn")(h, rope, mask, cache, index, fresh, last_only)
        if cfg.post_norms:
            a = RMSNorm(cfg.rms_eps, "norm", pdt, name="post_attn_norm")(a)
        x = x[:, -a.shape[1]:] + a
        h = RMSNorm(cfg.rms_eps, "norm", pdt, name="mlp_norm")(x)
        m = MLP(cfg, name="mlp")(h)
        if cfg.post_norms:
            m = RMSNorm(cfg.rms_eps, "norm", pdt, name="post_mlp_norm")(m)
        x = _constrain(x + m, ("batch", "length", "act_embed"))
        return x, cache


class Decoder(nn.Module):
    """The language model. ``head`` maps hidden states to float32 logits on its own,
    so log-probs can be computed in sequence chunks without [B, T, V] logits."""
    cfg: ModelConfig

    def setup(self):
        cfg, pdt = self.cfg, self.cfg.weight_dtype
        self.embedding = self.param(
            "embedding", _lp(nn.initializers.normal(stddev=1.0 if cfg.scale_embeddings else 0.02),
                             ("vocab", "embed")), (cfg.vocab_size, cfg.embed_dim), pdt)
        # `fresh` and `last_only` (arguments 6 and 7, self being 0) are Python bools that pick paths.
        block = nn.remat(Block, static_argnums=(6, 7)) if cfg.remat else Block
        self.layers = [block(cfg, i) for i in range(cfg.num_layers)]
        self.final_norm = RMSNorm(cfg.rms_eps, "norm", pdt)
        if not cfg.tie_embeddings:
            self.lm_head = self.param("lm_head", _lp(nn.initializers.normal(cfg.embed_dim ** -0.5),
                                                     ("embed", "vocab")), (cfg.embed_dim, cfg.vocab_size), pdt)

    def embed(self, tokens):
        cfg = self.cfg
        x = jnp.take(self.embedding, tokens, axis=0).astype(cfg.compute_dtype)
        if cfg.scale_embeddings:
            # HF Gemma casts the scale to the compute dtype before multiplying.
            x = x * jnp.asarray(math.sqrt(cfg.embed_dim), cfg.compute_dtype)
        return x

    def head(self, hidden):
        """Hidden states [..., D] -> float32 logits [..., V]."""
        dt = self.cfg.compute_dtype
        w = self.embedding.T if self.cfg.tie_embeddings else self.lm_head
        return _dense(hidden.astype(dt), w.astype(dt)).astype(jnp.float32)

    def __call__(self, tokens, positions, mask, cache: Cache | None = None, return_hidden: bool = False,
                 fresh: bool = False, last_only: bool = False):
        x = _constrain(self.embed(tokens), ("batch", "length", "act_embed"))
        index = cache["index"] if cache is not None else 0
        tables = {}   # one (cos, sin) per distinct frequency set (Gemma 3: local and global layers)
        new_layers = []
        for i, layer in enumerate(self.layers):
            inv_freq = layer_inv_freq(self.cfg, i)
            key = inv_freq.tobytes()
            if key not in tables:
                tables[key] = rope_tables(positions, inv_freq)
            x, c = layer(x, tables[key], mask, None if cache is None else cache["layers"][i], index, fresh,
                         last_only and i == len(self.layers) - 1)
            new_layers.append(c)
        x = self.final_norm(x)
        new_cache = None
        if cache is not None:
            new_cache = {"index": index + tokens.shape[1], "layers": tuple(new_layers)}
        if return_hidden:
            return x, new_cache
        return self.head(x), new_cache


class ValueModel(nn.Module):
    """PPO critic: the same backbone with a scalar head. Returns values [B, T] float32."""
    cfg: ModelConfig

    def setup(self):
        self.backbone = Decoder(self.cfg)
        self.value_head = self.param("value_head", _lp(nn.initializers.zeros, ("embed",)),
                                     (self.cfg.embed_dim,), self.cfg.weight_dtype)
        self.value_bias = self.param("value_bias", nn.initializers.zeros, (), self.cfg.weight_dtype)

    def __call__(self, tokens, positions, mask):
        hidden, _ = self.backbone(tokens, positions, mask, None, return_hidden=True)
        return hidden.astype(jnp.float32) @ self.value_head.astype(jnp.float32) + self.value_bias


# ------------------------------------------------------------------- helpers
def causal_mask(valid: Array) -> Array:
    """[B, T] validity -> [B, T, T] causal mask over valid keys."""
    t = valid.shape[1]
    tri = jnp.tril(jnp.ones((t, t), dtype=bool))
    return tri[None] & valid[:, None, :].astype(bool)


def cache_mask(key_valid: Array, index, num_queries: int) -> Array:
    """Mask for queries written at slots [index, index + T) of a cache whose slots
    hold valid keys where ``key_valid`` [B, S] (including the new ones)."""
    s = key_valid.shape[1]
    q_slot = index + jnp.arange(num_queries)
    causal = jnp.arange(s)[None, :] <= q_slot[:, None]
    return causal[None] & key_valid[:, None, :].astype(bool)


def positions_from_valid(valid: Array) -> Array:
    """RoPE positions for left- or right-padded rows: 0, 1, ... over valid tokens."""
    return jnp.maximum(jnp.cumsum(valid.astype(jnp.int32), axis=1) - 1, 0)


def init_cache(cfg: ModelConfig, batch: int, length: int, dtype=None) -> Cache:
    """Zeroed KV cache. Each leaf is its own buffer so the cache can be donated."""
    dtype = jnp.dtype(dtype or cfg.compute_dtype)
    shape = (batch, cfg.num_kv_heads, length, cfg.head_dim)
    # Sharded by batch and kv-head under a mesh (a no-op without one), like the activations.
    zeros = lambda: _constrain(jnp.zeros(shape, dtype), ("batch", "kv_heads", "length", "head_dim"))  # noqa: E731
    layers = tuple({"k": zeros(), "v": zeros()} for _ in range(cfg.num_layers))
    return {"index": jnp.zeros((), jnp.int32), "layers": layers}


def init_params(cfg: ModelConfig, rng, boxed: bool = False):
    """Random parameters of ``Decoder(cfg)``; boxed=True keeps the logical-axis metadata."""
    tokens = jnp.zeros((1, 4), jnp.int32)
    variables = Decoder(cfg).init(rng, tokens, jnp.zeros((1, 4), jnp.int32), causal_mask(tokens >= 0))
    params = variables["params"]
    return params if boxed else nn.meta.unbox(params)


def abstract_params(cfg: ModelConfig):
    """Shape/dtype tree of the parameters with logical-axis metadata, without allocating."""
    return jax.eval_shape(lambda r: init_params(cfg, r, boxed=True), jax.random.PRNGKey(0))


def logical_axes(cfg: ModelConfig):
    """PartitionSpec tree of logical axis names, one per parameter."""
    return nn.get_partition_spec(abstract_params(cfg))


def forward(cfg: ModelConfig, params, tokens, positions, mask, cache=None, return_hidden=False):
    """Functional shorthand for ``Decoder(cfg).apply``."""
    return Decoder(cfg).apply({"params": params}, tokens, positions, mask, cache, return_hidden)


def head(cfg: ModelConfig, params, hidden):
    return Decoder(cfg).apply({"params": params}, hidden, method=Decoder.head)
