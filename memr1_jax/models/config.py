"""Decoder configuration: one dataclass covering Llama/SmolLM2, Qwen2/2.5 and Gemma 3."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax.numpy as jnp

ARCHES = ("llama", "qwen2", "gemma3")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    arch: str
    vocab_size: int
    num_layers: int
    embed_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    mlp_dim: int
    rms_eps: float = 1e-5
    rope_theta: float = 10000.0
    # Llama 3.x style frequency scaling ({"rope_type": "llama3", factor, low_freq_factor,
    # high_freq_factor, original_max_position_embeddings}) or {"rope_type": "linear", "factor"}.
    rope_scaling: tuple[tuple[str, Any], ...] | None = None
    # Gemma 3: local (sliding-window) layers use their own RoPE base; every
    # `global_every`-th layer (1-based) is global and uses `rope_theta`.
    rope_local_theta: float | None = None
    sliding_window: int | None = None
    global_every: int = 0
    tie_embeddings: bool = True
    qkv_bias: bool = False
    qk_norm: bool = False
    post_norms: bool = False          # Gemma 3: norms after attention and MLP outputs
    scale_embeddings: bool = False    # Gemma: embeddings times sqrt(embed_dim)
    activation: str = "silu"          # "silu" (SwiGLU) or "gelu_tanh" (GeGLU)
    query_pre_attn_scalar: float | None = None  # attention scale = this ** -0.5 (default head_dim)
    max_seq_len: int = 8192
    dtype: str = "float32"            # compute dtype; log-softmax is always float32
    param_dtype: str = "float32"
    remat: bool = False               # jax.checkpoint each layer (training memory)
    # "dense": [T, S] logits per head; "blockwise": flash-style online softmax over key
    # blocks of `attention_block` (prefill and training; decode stays dense)
    attention: str = "dense"
    attention_block: int = 512

    def __post_init__(self):
        if self.arch not in ARCHES:
            raise ValueError(f"ModelConfig.arch={self.arch!r}: expected one of {ARCHES}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"ModelConfig: num_heads={self.num_heads} not divisible by num_kv_heads={self.num_kv_heads}")
        if self.activation not in ("silu", "gelu_tanh"):
            raise ValueError(f"ModelConfig.activation={self.activation!r}: expected 'silu' or 'gelu_tanh'")
        if self.attention not in ("dense", "blockwise") or self.attention_block < 1:
            raise ValueError(f"ModelConfig.attention={self.attention!r} (block {self.attention_block}): "
                             "expected 'dense' or 'blockwise' with a block >= 1")
        if self.global_every and not self.sliding_window:
            raise ValueError("ModelConfig: global_every set without sliding_window")

    # --- derived ---------------------------------------------------------------
    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def weight_dtype(self):
        return jnp.dtype(self.param_dtype)

    def is_local_layer(self, layer: int) -> bool:
        """True for sliding-window layers (Gemma 3: all but every `global_every`-th)."""
        if not self.sliding_window:
            return False
        if not self.global_every:
            return True
        return (layer + 1) % self.global_every != 0

    def layer_rope_theta(self, layer: int) -> float:
        if self.is_local_layer(layer) and self.rope_local_theta is not None:
            return self.rope_local_theta
        return self.rope_theta

    def layer_uses_rope_scaling(self, layer: int) -> bool:
        # Gemma 3 applies rope scaling to global layers only; other families to all.
        return not (self.arch == "gemma3" and self.is_local_layer(layer))

    @property
    def attn_scale(self) -> float:
        return float(self.query_pre_attn_scalar or self.head_dim) ** -0.5

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)

    def num_params(self) -> int:
        d, f, h, k, hd = self.embed_dim, self.mlp_dim, self.num_heads, self.num_kv_heads, self.head_dim
        per_layer = d * hd * (2 * h + 2 * k) + 3 * d * f + 2 * d
        if self.qkv_bias:
            per_layer += hd * (h + 2 * k)
        if self.qk_norm:
            per_layer += 2 * hd
        if self.post_norms:
            per_layer += 2 * d
        head = 0 if self.tie_embeddings else d * self.vocab_size
        return self.num_layers * per_layer + self.vocab_size * d + d + head

    def flops_per_token(self, context: int = 0) -> float:
        """Forward FLOPs per token: 2 x matmul weights (the LM head included, the
        embedding lookup not) plus QK^T and AV over `context` keys."""
        matmul = self.num_params() - (0 if self.tie_embeddings else self.vocab_size * self.embed_dim)
        attn = 2 * 2 * self.num_heads * self.head_dim * context * self.num_layers
        return 2.0 * matmul + attn

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        d = json.loads(text)
        if d.get("rope_scaling") is not None:
            d["rope_scaling"] = tuple(tuple(x) for x in d["rope_scaling"])
        return cls(**d)


def tiny_config(arch: str = "llama", **overrides) -> ModelConfig:
    """A small random-init configuration of the given family, for tests."""
    base = dict(arch=arch, vocab_size=256, num_layers=2, embed_dim=64, num_heads=4,
                num_kv_heads=2, head_dim=16, mlp_dim=128, max_seq_len=512)
    if arch == "qwen2":
        base.update(qkv_bias=True, tie_embeddings=False, rope_theta=1e6, rms_eps=1e-6)
    elif arch == "gemma3":
        base.update(qk_norm=True, post_norms=True, scale_embeddings=True, activation="gelu_tanh",
                    sliding_window=8, global_every=2, rope_theta=1e6, rope_local_theta=1e4,
                    rms_eps=1e-6, query_pre_attn_scalar=16, num_layers=4)
    base.update(overrides)
    return ModelConfig(**base)
