"""Write decoder params as an unquantized (F32) llama.cpp-style GGUF file.

Used by tests (tiny GGUF files that both our loader and transformers' GGUF
loader read) and as the inverse of ``gguf_loader``. Llama-arch Q/K rows are
permuted the way llama.cpp's converter does. No tokenizer is written.
"""

from __future__ import annotations

import os

import numpy as np
from gguf import GGUFWriter

from memr1_jax.models.config import ModelConfig
from memr1_jax.weights.mappings import from_param, resolve


def save_gguf(cfg: ModelConfig, params, path, extra_metadata: dict | None = None) -> None:
    if cfg.arch == "gemma3" and (cfg.rope_local_theta not in (None, 10000.0) or cfg.global_every != 6
                                 or (cfg.query_pre_attn_scalar or cfg.head_dim) != cfg.head_dim):
        raise ValueError("save_gguf: GGUF cannot store Gemma 3's local rope base, layer pattern or "
                         "query_pre_attn_scalar; readers assume 10000, 6 and head_dim")
    a = cfg.arch
    w = GGUFWriter(os.fspath(path), a)
    w.add_block_count(cfg.num_layers)
    w.add_context_length(cfg.max_seq_len)
    w.add_embedding_length(cfg.embed_dim)
    w.add_feed_forward_length(cfg.mlp_dim)
    w.add_head_count(cfg.num_heads)
    w.add_head_count_kv(cfg.num_kv_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_eps)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_vocab_size(cfg.vocab_size)
    if cfg.sliding_window:
        w.add_sliding_window(cfg.sliding_window)
    if cfg.rope_scaling:
        sc = dict(cfg.rope_scaling)
        if sc.get("rope_type") != "linear":
            raise ValueError(f"save_gguf: rope scaling {sc} cannot be stored as GGUF metadata")
        w.add_rope_scaling_type(__import__("gguf").RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(sc["factor"]))
    for k, v in (extra_metadata or {}).items():
        w.add_key_value(k, v[0], v[1]) if isinstance(v, tuple) else w.add_string(k, v)
    for e in resolve(cfg, "gguf").values():
        x = params
        for k in e.param:
            x = x[k]
        w.add_tensor(e.source, from_param(np.asarray(x, np.float32), e, cfg).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
