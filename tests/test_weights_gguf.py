"""Real GGUF models: our dequantized weights + decoder vs transformers (PyTorch, CPU, float32)
loading the same GGUF file.

transformers' GGUF import of a real model takes 1-2 minutes on this machine (it parses the
vocabulary field by field, twice), so its logits are cached under
<MEMR1_CACHE>/reference_logits/ keyed by the file's sha256, the prompt ids and the
transformers version; set MEMR1_REFRESH_REFERENCE=1 to recompute.
"""

import hashlib
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memr1_jax import assets
from memr1_jax.models import registry
from memr1_jax.models.decoder import causal_mask, forward, positions_from_valid
from memr1_jax.weights import load_gguf

# 24 ids valid in every vocabulary (< 49152), BOS-free so the same ids go to all models.
IDS = np.array([[504, 3458, 282, 4649, 314, 253, 1345, 28, 1056, 30, 198, 10, 7, 56, 2011, 19, 120, 33,
                 900, 11, 476, 1991, 42, 3000]], np.int32)
TOL = 1e-3

_forward = jax.jit(forward, static_argnums=0)


# Gemma without its BOS first gets huge first-token activations, where float32 summation
# order alone moves logits by ~1e-3; with BOS (id 2), as Gemma is meant to be run: ~1e-4.
GEMMA_IDS = np.concatenate([[[2]], IDS[:, :-1]], axis=1).astype(np.int32)


def our_logits(cfg, params, ids=IDS):
    tok = jnp.asarray(ids)
    valid = tok >= 0
    return np.asarray(_forward(cfg, params, tok, positions_from_valid(valid), causal_mask(valid))[0])


def reference_logits(payload, ids=IDS):
    import torch
    import transformers
    import accelerate  # noqa: F401  # transformers' GGUF path requires it
    key = hashlib.sha256(f"{payload.sha256}:{ids.tolist()}:{transformers.__version__}".encode()).hexdigest()[:16]
    cached = assets.cache_dir() / "reference_logits" / f"{payload.name}-{key}.npy"
    if cached.exists() and not os.environ.get("MEMR1_REFRESH_REFERENCE"):
        return np.load(cached)
    path = assets.fetch_payload(payload)
    torch.set_num_threads(2)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = model(torch.tensor(ids, dtype=torch.long)).logits.float().numpy()
    del model
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, ref)
    os.replace(tmp, cached)
    return ref


def check_model(payload, tmp_path, monkeypatch, arch, ids=IDS):
    ref = reference_logits(payload, ids)
    path = assets.fetch_payload(payload)
    # First load parses the GGUF and writes the converted copy (into tmp); the second reads it.
    monkeypatch.setattr(registry, "_converted_dir", lambda p, sha: tmp_path / "converted")
    stats = {}
    t0 = time.perf_counter()
    cfg, params = registry.load_gguf_cached(path, sha256=payload.sha256, stats=stats)
    t_gguf = time.perf_counter() - t0
    assert not stats["from_cache"] and cfg.arch == arch
    ours = our_logits(cfg, params, ids)
    diff = np.abs(ours - ref).max()
    print(f"{payload.name}: GGUF load {t_gguf:.1f}s ({stats}), max|diff| vs transformers {diff:.2e}")
    assert diff <= TOL, diff
    stats2 = {}
    t0 = time.perf_counter()
    cfg2, params2 = registry.load_gguf_cached(path, sha256=payload.sha256, stats=stats2)
    print(f"{payload.name}: converted-cache load {time.perf_counter() - t0:.1f}s")
    assert stats2["from_cache"] and cfg2 == cfg
    flat1, flat2 = jax.tree.leaves_with_path(params), dict(jax.tree.leaves_with_path(params2))
    for kp, x in flat1:
        # Gemma norms go through the HF convention (w - 1 stored, + 1 on load): ~1 ulp.
        np.testing.assert_allclose(np.asarray(flat2[kp]), np.asarray(x), rtol=0, atol=3e-7,
                                   err_msg=jax.tree_util.keystr(kp))
    return cfg, params


def test_smollm2_gguf_matches_transformers(tmp_path, monkeypatch):
    cfg, params = check_model(assets.SMOLLM2_135M_GGUF, tmp_path, monkeypatch, "llama")
    assert cfg.tie_embeddings and cfg.num_layers == 30 and cfg.head_dim == 64 and cfg.rope_theta == 1e5


@pytest.mark.slow
def test_qwen25_coder_gguf_matches_transformers(tmp_path, monkeypatch):
    cfg, params = check_model(assets.QWEN25_CODER_05B_GGUF, tmp_path, monkeypatch, "qwen2")
    # The GGUF's separate output.weight is the (untied) head, as transformers does too.
    assert not cfg.tie_embeddings and cfg.qkv_bias and params["lm_head"].shape == (896, 151936)


@pytest.mark.slow
def test_gemma3_270m_gguf_matches_transformers(tmp_path, monkeypatch):
    cfg, params = check_model(assets.GEMMA3_270M_GGUF, tmp_path, monkeypatch, "gemma3", GEMMA_IDS)
    assert (cfg.head_dim, cfg.sliding_window, cfg.global_every, cfg.rope_local_theta) == (256, 512, 6, 1e4)
    assert cfg.query_pre_attn_scalar == 256
