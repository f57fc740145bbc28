"""Declarative tensor-name tables: checkpoint tensor -> decoder parameter.

One table per architecture covers both naming schemes:

* HF / PyTorch (`model.layers.N.self_attn.q_proj.weight`, ...), and
* llama.cpp GGUF (`blk.N.attn_q.weight`, ...).

Both store linear weights as ``[out, in]`` (GGUF's ggml shape is ``[in, out]``;
dequantized numpy arrays come back as ``[out, in]``), so a rule has a single
source shape. A rule lists the ops that turn the source tensor into the
parameter; a final reshape to the parameter shape is implicit (e.g.
``[H*Dh, D] --T--> [D, H*Dh] --reshape--> [D, H, Dh]``). Every op has an inverse,
which is how ``save_hf_checkpoint`` writes HF names back.

Shapes are symbolic: V vocab, D embed, H heads, KVH kv heads, Dh head dim,
F mlp dim; products as "H*Dh".
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from memr1_jax.models.config import ModelConfig

LAYER = "{i}"


@dataclasses.dataclass(frozen=True)
class Rule:
    param: str                      # "layers_{i}/attn/q_proj"
    shape: tuple[str, ...]          # parameter shape (symbolic)
    src_shape: tuple[str, ...]      # checkpoint tensor shape (symbolic), [out, in] for linears
    hf: str                         # HF tensor name ("{i}" = layer)
    gguf: str                       # GGUF tensor name
    hf_ops: tuple[str, ...] = ()
    gguf_ops: tuple[str, ...] = ()
    when: str | None = None         # only if this condition holds for the config (see _CONDITIONS)


@dataclasses.dataclass(frozen=True)
class Entry:
    """A rule resolved for one config, one layer and one naming scheme."""
    source: str                     # tensor name in the checkpoint
    param: tuple[str, ...]          # path in the parameter tree
    src_shape: tuple[int, ...]
    shape: tuple[int, ...]
    ops: tuple[str, ...]


_CONDITIONS: dict[str, Callable[[ModelConfig], bool]] = {
    "untied": lambda c: not c.tie_embeddings,
    "qkv_bias": lambda c: c.qkv_bias,
    "qk_norm": lambda c: c.qk_norm,
    "post_norms": lambda c: c.post_norms,
}


# --------------------------------------------------------------------- ops
def _llama_cpp_unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    # llama.cpp's converter permutes Q/K rows so its interleaved RoPE sees pairs
    # (x[2j], x[2j+1]); undo it to get back the HF rotate-half layout.
    out = w.shape[0]
    return w.reshape(n_head, out // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    out = w.shape[0]
    return w.reshape(n_head, 2, out // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# name -> (forward, inverse, shape transform); forward/inverse get (array, cfg).
OPS: dict[str, tuple[Callable, Callable, Callable]] = {
    "T": (lambda x, c: x.T, lambda x, c: x.T, lambda s: tuple(reversed(s))),
    "plus1": (lambda x, c: x + np.asarray(1, x.dtype), lambda x, c: x - np.asarray(1, x.dtype), lambda s: s),
    "unpermute_q": (lambda x, c: _llama_cpp_unpermute(x, c.num_heads),
                    lambda x, c: _llama_cpp_permute(x, c.num_heads), lambda s: s),
    "unpermute_k": (lambda x, c: _llama_cpp_unpermute(x, c.num_kv_heads),
                    lambda x, c: _llama_cpp_permute(x, c.num_kv_heads), lambda s: s),
}


# ------------------------------------------------------------------ tables
def _norm(param, hf, gguf, hf_ops=(), when=None, dim="D"):
    return Rule(param, (dim,), (dim,), hf, gguf, hf_ops, (), when)


def _table(arch: str) -> tuple[Rule, ...]:
    gemma = arch == "gemma3"
    llama = arch == "llama"
    n1 = ("plus1",) if gemma else ()   # HF Gemma stores norm weights as w, applied as (1 + w)
    L, A = "model.layers.{i}.", "blk.{i}."
    q_ops = ("unpermute_q", "T") if llama else ("T",)
    k_ops = ("unpermute_k", "T") if llama else ("T",)
    rules = [
        Rule("embedding", ("V", "D"), ("V", "D"), "model.embed_tokens.weight", "token_embd.weight"),
        _norm("final_norm/scale", "model.norm.weight", "output_norm.weight", n1),
        Rule("lm_head", ("D", "V"), ("V", "D"), "lm_head.weight", "output.weight", ("T",), ("T",), "untied"),
        _norm("layers_{i}/attn_norm/scale", L + "input_layernorm.weight", A + "attn_norm.weight", n1),
        Rule("layers_{i}/attn/q_proj", ("D", "H", "Dh"), ("H*Dh", "D"),
             L + "self_attn.q_proj.weight", A + "attn_q.weight", ("T",), q_ops),
        Rule("layers_{i}/attn/k_proj", ("D", "KVH", "Dh"), ("KVH*Dh", "D"),
             L + "self_attn.k_proj.weight", A + "attn_k.weight", ("T",), k_ops),
        Rule("layers_{i}/attn/v_proj", ("D", "KVH", "Dh"), ("KVH*Dh", "D"),
             L + "self_attn.v_proj.weight", A + "attn_v.weight", ("T",), ("T",)),
        Rule("layers_{i}/attn/o_proj", ("H", "Dh", "D"), ("D", "H*Dh"),
             L + "self_attn.o_proj.weight", A + "attn_output.weight", ("T",), ("T",)),
        Rule("layers_{i}/mlp/gate_proj", ("D", "F"), ("F", "D"),
             L + "mlp.gate_proj.weight", A + "ffn_gate.weight", ("T",), ("T",)),
        Rule("layers_{i}/mlp/up_proj", ("D", "F"), ("F", "D"),
             L + "mlp.up_proj.weight", A + "ffn_up.weight", ("T",), ("T",)),
        Rule("layers_{i}/mlp/down_proj", ("F", "D"), ("D", "F"),
             L + "mlp.down_proj.weight", A + "ffn_down.weight", ("T",), ("T",)),
    ]
    if arch == "qwen2":
        # Biases are not permuted: llama.cpp only permutes for the llama arch.
        rules += [
            Rule("layers_{i}/attn/q_bias", ("H", "Dh"), ("H*Dh",), L + "self_attn.q_proj.bias",
                 A + "attn_q.bias", when="qkv_bias"),
            Rule("layers_{i}/attn/k_bias", ("KVH", "Dh"), ("KVH*Dh",), L + "self_attn.k_proj.bias",
                 A + "attn_k.bias", when="qkv_bias"),
            Rule("layers_{i}/attn/v_bias", ("KVH", "Dh"), ("KVH*Dh",), L + "self_attn.v_proj.bias",
                 A + "attn_v.bias", when="qkv_bias"),
        ]
    if gemma:
        rules += [
            _norm("layers_{i}/attn/q_norm/scale", L + "self_attn.q_norm.weight", A + "attn_q_norm.weight",
                  n1, "qk_norm", "Dh"),
            _norm("layers_{i}/attn/k_norm/scale", L + "self_attn.k_norm.weight", A + "attn_k_norm.weight",
                  n1, "qk_norm", "Dh"),
            # Gemma's post_attention_layernorm is a post-norm on the attention output ...
            _norm("layers_{i}/post_attn_norm/scale", L + "post_attention_layernorm.weight",
                  A + "post_attention_norm.weight", n1, "post_norms"),
            _norm("layers_{i}/mlp_norm/scale", L + "pre_feedforward_layernorm.weight",
                  A + "ffn_norm.weight", n1),
            _norm("layers_{i}/post_mlp_norm/scale", L + "post_feedforward_layernorm.weight",
                  A + "post_ffw_norm.weight", n1, "post_norms"),
        ]
    else:
        # ... while Llama/Qwen's post_attention_layernorm is the pre-MLP norm.
        rules.append(_norm("layers_{i}/mlp_norm/scale", L + "post_attention_layernorm.weight",
                           A + "ffn_norm.weight"))
    return tuple(rules)


TABLES: dict[str, tuple[Rule, ...]] = {a: _table(a) for a in ("llama", "qwen2", "gemma3")}

# Checkpoint tensors that carry no parameters and may be skipped silently.
IGNORED_HF_SUFFIXES = ("rotary_emb.inv_freq",)


# ---------------------------------------------------------------- resolving
def dims(cfg: ModelConfig) -> dict[str, int]:
    return {"V": cfg.vocab_size, "D": cfg.embed_dim, "H": cfg.num_heads, "KVH": cfg.num_kv_heads,
            "Dh": cfg.head_dim, "F": cfg.mlp_dim}


def eval_shape(sym: tuple[str, ...], d: dict[str, int]) -> tuple[int, ...]:
    out = []
    for s in sym:
        n = 1
        for part in s.split("*"):
            n *= d[part]
        out.append(n)
    return tuple(out)


def resolve(cfg: ModelConfig, scheme: str) -> dict[str, Entry]:
    """All checkpoint tensors a config needs, keyed by source name ("hf" or "gguf" scheme)."""
    if scheme not in ("hf", "gguf"):
        raise ValueError(f"scheme={scheme!r}: expected 'hf' or 'gguf'")
    if cfg.arch not in TABLES:
        raise ValueError(f"no weight-name table for arch {cfg.arch!r} (have {sorted(TABLES)})")
    d = dims(cfg)
    out: dict[str, Entry] = {}
    for rule in TABLES[cfg.arch]:
        if rule.when and not _CONDITIONS[rule.when](cfg):
            continue
        name = rule.hf if scheme == "hf" else rule.gguf
        ops = rule.hf_ops if scheme == "hf" else rule.gguf_ops
        layers = range(cfg.num_layers) if LAYER in rule.param else [None]
        for i in layers:
            fmt = (lambda s: s.replace(LAYER, str(i))) if i is not None else (lambda s: s)
            out[fmt(name)] = Entry(fmt(name), tuple(fmt(rule.param).split("/")),
                                   eval_shape(rule.src_shape, d), eval_shape(rule.shape, d), ops)
    return out


def to_param(x: np.ndarray, entry: Entry, cfg: ModelConfig) -> np.ndarray:
    """Checkpoint tensor -> parameter layout."""
    for op in entry.ops:
        x = OPS[op][0](x, cfg)
    return x.reshape(entry.shape)


def from_param(x: np.ndarray, entry: Entry, cfg: ModelConfig) -> np.ndarray:
    """Parameter -> checkpoint tensor layout (inverse of ``to_param``)."""
    shapes = [entry.src_shape]
    for op in entry.ops:
        shapes.append(OPS[op][2](shapes[-1]))
    x = np.asarray(x).reshape(shapes[-1])
    for op in reversed(entry.ops):
        x = OPS[op][1](x, cfg)
    return np.ascontiguousarray(x.reshape(entry.src_shape))
