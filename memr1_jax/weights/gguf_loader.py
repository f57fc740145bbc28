"""Load a llama.cpp GGUF file (llama / qwen2 / gemma3) into the decoder's parameter tree.

The header is parsed by ``memr1_jax.text.gguf_meta`` (a direct parser, much faster
than ``gguf.GGUFReader`` on large vocabularies); tensor bytes are memory-mapped and
dequantized one tensor at a time with ``gguf.quants.dequantize``.
"""

from __future__ import annotations

import os
import time

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize

from memr1_jax.models.config import ModelConfig
from memr1_jax.text.gguf_meta import GGUFHeader, read_gguf_header
from memr1_jax.weights.assemble import WeightLoadError, assemble, validate
from memr1_jax.weights.mappings import resolve

# Values the GGUF metadata does not carry. Gemma 3 (all sizes): local layers use a
# 10k RoPE base, every 6th layer is global, and query_pre_attn_scalar equals the head
# dim for 270m/1b/4b/12b (HF configs: 256) -- 27b uses 168 and would need an override.
GEMMA3_LOCAL_ROPE_THETA = 10000.0
GEMMA3_GLOBAL_EVERY = 6


def _get(meta: dict, key: str, path: str, default=None, required: bool = True):
    if key in meta:
        return meta[key]
    if required and default is None:
        raise WeightLoadError(f"{path}: GGUF metadata key {key!r} is missing")
    return default


def config_from_gguf(header: GGUFHeader, **overrides) -> ModelConfig:
    """ModelConfig from GGUF metadata (plus the tensor table for vocab size / head tying)."""
    meta, path = header.metadata, header.path
    arch = _get(meta, "general.architecture", path)
    if arch not in ("llama", "qwen2", "gemma3"):
        raise WeightLoadError(f"{path}: GGUF architecture {arch!r} is not supported (llama, qwen2, gemma3)")
    tensors = {t.name: t for t in header.tensors}
    if "token_embd.weight" not in tensors:
        raise WeightLoadError(f"{path}: missing tensor 'token_embd.weight'")
    if "rope_freqs.weight" in tensors:
        raise WeightLoadError(f"{path}: tensor 'rope_freqs.weight' (llama.cpp RoPE frequency factors, "
                              "e.g. Llama 3.1) is not supported; load the HF safetensors checkpoint instead")
    embed_dim, vocab = tensors["token_embd.weight"].shape  # ggml order: [D, V]
    a = arch + "."
    heads = int(_get(meta, a + "attention.head_count", path))
    kv = _get(meta, a + "attention.head_count_kv", path, heads)
    head_dim = int(_get(meta, a + "attention.key_length", path, int(embed_dim) // heads))
    kw = dict(
        arch=arch, vocab_size=int(vocab), num_layers=int(_get(meta, a + "block_count", path)),
        embed_dim=int(_get(meta, a + "embedding_length", path)), num_heads=heads, num_kv_heads=int(kv),
        head_dim=head_dim, mlp_dim=int(_get(meta, a + "feed_forward_length", path)),
        rms_eps=_f32(_get(meta, a + "attention.layer_norm_rms_epsilon", path)),
        rope_theta=_f32(_get(meta, a + "rope.freq_base", path, 10000.0)),
        max_seq_len=int(_get(meta, a + "context_length", path, 8192)),
        tie_embeddings="output.weight" not in tensors,
    )
    stype = meta.get(a + "rope.scaling.type")
    if stype not in (None, "none"):
        if stype != "linear":
            raise WeightLoadError(f"{path}: rope.scaling.type {stype!r} is not supported")
        kw["rope_scaling"] = (("rope_type", "linear"), ("factor", _f32(meta[a + "rope.scaling.factor"])))
    if arch == "qwen2":
        kw.update(qkv_bias="blk.0.attn_q.bias" in tensors)
    elif arch == "gemma3":
        kw.update(qk_norm=True, post_norms=True, scale_embeddings=True, activation="gelu_tanh",
                  sliding_window=int(_get(meta, a + "attention.sliding_window", path)),
                  global_every=GEMMA3_GLOBAL_EVERY, rope_local_theta=GEMMA3_LOCAL_ROPE_THETA,
                  query_pre_attn_scalar=float(head_dim))
    kw.update(overrides)
    return ModelConfig(**kw)


def _f32(v) -> float:
    # GGUF stores these as float32; use the shortest decimal that round-trips (1e-05, not 9.9999997e-06).
    return float(str(np.float32(v)))


def _byte_shape(shape_np: tuple[int, ...], qtype: int) -> tuple[int, ...]:
    block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(qtype)]
    return (*shape_np[:-1], shape_np[-1] // block * type_size)


def load_gguf(path, dtype=None, shardings=None, config_overrides: dict | None = None,
              stats: dict | None = None):
    """Read a GGUF file -> (ModelConfig, params). Every tensor is dequantized to
    float32, transformed, cast to ``dtype`` (default float32) and placed on its
    sharding (a pytree like the params, one Sharding, or None for the default device)."""
    path = os.fspath(path)
    t0 = time.perf_counter()
    header = read_gguf_header(path)
    t_header = time.perf_counter() - t0
    cfg = config_from_gguf(header, **(config_overrides or {}))
    if dtype is not None:
        cfg = cfg.replace(param_dtype=np.dtype(dtype).name)
    entries = resolve(cfg, "gguf")
    infos = {t.name: t for t in header.tensors}
    available = {n: (path, tuple(reversed(t.shape))) for n, t in infos.items()}
    validate(cfg, entries, available, path, "gguf")
    size = os.path.getsize(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r")

    def read(name: str) -> np.ndarray:
        info = infos[name]
        shape_np = tuple(int(s) for s in reversed(info.shape))
        try:
            byte_shape = _byte_shape(shape_np, info.ggml_type)
        except (ValueError, KeyError):
            raise WeightLoadError(f"{path}: tensor {name!r} has unknown ggml type {info.ggml_type}") from None
        start = header.data_start + info.offset
        nbytes = int(np.prod(byte_shape))
        if start + nbytes > size:
            raise WeightLoadError(f"{path}: tensor {name!r} runs past the end of the file (truncated?)")
        raw = mm[start:start + nbytes].reshape(byte_shape)
        try:
            x = dequantize(raw, GGMLQuantizationType(info.ggml_type))
        except NotImplementedError as err:
            raise WeightLoadError(f"{path}: tensor {name!r}: {err}") from None
        # Own the data (F32 tensors would otherwise be views into the mapping).
        return np.array(x, dtype=np.float32, copy=True).reshape(shape_np)

    order = sorted(entries, key=lambda n: infos[n].offset)
    params = assemble(cfg, entries, order, read, dtype=dtype, shardings=shardings, stats=stats)
    del mm
    if stats is not None:
        stats.update(header_s=t_header, total_s=time.perf_counter() - t0)
    return cfg, params
