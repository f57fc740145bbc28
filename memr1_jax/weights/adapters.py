"""LoRA adapter folders: a trained run's adapters alone (a few MB), loadable over their base model.

A folder holds ``adapter_config.json`` ({"format": "memr1-jax-lora", "version": 1, "base_model":
registry preset or model path, "rank", "alpha"}) and ``adapter.safetensors`` (one tensor per
adapter matrix, named by its "/"-joined path in the parameter tree, e.g.
``layers_29/mlp/down_proj/a``). ``memr1_jax.models.registry.load_model`` takes such a folder
wherever it takes a model: it loads ``base_model`` and merges the adapters into it
(``rl.lora.merge``), so ``--manager-model``, ``--system checkpoint:`` and the service accept it.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np
from flax import traverse_util

CONFIG = "adapter_config.json"
TENSORS = "adapter.safetensors"
FORMAT = "memr1-jax-lora"


def is_adapter_folder(path) -> bool:
    p = pathlib.Path(path)
    return p.is_dir() and (p / CONFIG).exists()


def save_adapters(folder, adapters: dict, base_model: str, rank: int, alpha: float) -> pathlib.Path:
    """Write ``adapters`` (the LoRA tree of ``rl.lora.init_adapters``) and their config; the
    tensors first, the config last, each replaced atomically (a folder with a config is whole)."""
    from safetensors.numpy import save_file

    from memr1_jax.files import atomic_write_by_name, atomic_write_text
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    flat = traverse_util.flatten_dict(adapters, sep="/")
    tensors = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in flat.items()}
    atomic_write_by_name(folder / TENSORS, lambda tmp: save_file(tensors, tmp))
    atomic_write_text(folder / CONFIG, json.dumps({"format": FORMAT, "version": 1, "base_model": str(base_model),
                                                   "rank": int(rank), "alpha": float(alpha)}, indent=1) + "\n")
    return folder


def read_config(folder) -> dict:
    """The folder's checked ``adapter_config.json``; errors name the file and the field."""
    cfg_path = pathlib.Path(folder) / CONFIG
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{cfg_path}: not a readable adapter config ({e})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise ValueError(f"{cfg_path}: 'format' must be {FORMAT!r}, got {cfg.get('format') if isinstance(cfg, dict) else cfg!r}")
    for key, kind in (("base_model", str), ("rank", int), ("alpha", (int, float))):
        if not isinstance(cfg.get(key), kind) or isinstance(cfg.get(key), bool):
            raise ValueError(f"{cfg_path}: field {key!r} is missing or not a {getattr(kind, '__name__', 'number')}")
    return cfg


def load_adapters(folder) -> tuple[dict, dict]:
    """(adapter tree, config) of an adapter folder; errors name the file and the field."""
    from safetensors.numpy import load_file
    cfg = read_config(folder)
    tensors = pathlib.Path(folder) / TENSORS
    try:
        flat = load_file(str(tensors))
    except Exception as e:   # safetensors raises its own error types for damaged files
        raise ValueError(f"{tensors}: not a readable safetensors file ({e})") from None
    for name, value in flat.items():
        if not np.isfinite(value).all():
            raise ValueError(f"{tensors}: tensor {name!r} has non-finite values")
    return traverse_util.unflatten_dict(flat, sep="/"), cfg


def merge_into(params: Any, folder) -> Any:
    """``params`` with the folder's adapters merged in (shape mismatches name the folder)."""
    from memr1_jax.rl.lora import merge
    adapters, cfg = load_adapters(folder)
    try:
        return merge(params, adapters, float(cfg["alpha"]), int(cfg["rank"]))
    except ValueError as e:
        raise ValueError(f"{folder}: adapters do not fit base model {cfg['base_model']!r}: {e}") from None


def flatten_stacked(folder, out) -> pathlib.Path:
    """One adapter folder over the root model from ``folder``, whose ``base_model`` is itself an
    adapter folder (a run that trained adapters over a trained agent): W + s1 A1 B1 + s2 A2 B2 is
    exactly W + A' B' with A' = [A1, A2] and B' = [s1 B1; s2 B2] at scale 1 (rank r1 + r2, alpha
    equal to it), so the pair ships as one loadable folder. A kernel adapted in one of the two gets
    zeros in the other's rows."""
    outer, outer_cfg = load_adapters(folder)
    inner_folder = outer_cfg["base_model"]
    if not is_adapter_folder(inner_folder):
        raise ValueError(f"{pathlib.Path(folder) / CONFIG}: base_model {inner_folder!r} is not an adapter folder; "
                         "nothing to flatten")
    inner, inner_cfg = load_adapters(inner_folder)
    if is_adapter_folder(inner_cfg["base_model"]):
        raise ValueError(f"{pathlib.Path(inner_folder) / CONFIG}: base_model is an adapter folder too; flatten it first")
    r1, r2 = int(inner_cfg["rank"]), int(outer_cfg["rank"])
    s1, s2 = float(inner_cfg["alpha"]) / r1, float(outer_cfg["alpha"]) / r2
    a_inner, a_outer = traverse_util.flatten_dict(inner, sep="/"), traverse_util.flatten_dict(outer, sep="/")
    kernels = sorted({k.rsplit("/", 1)[0] for k in (*a_inner, *a_outer)})
    flat = {}
    for k in kernels:
        pairs = [(a.get(f"{k}/a"), a.get(f"{k}/b"), r, s) for a, r, s in ((a_inner, r1, s1), (a_outer, r2, s2))]
        like_a = next(x for x, _, _, _ in pairs if x is not None)
        like_b = next(y for _, y, _, _ in pairs if y is not None)
        flat[f"{k}/a"] = np.concatenate([np.zeros(like_a.shape[:-1] + (r,), np.float32) if x is None else x
                                         for x, _, r, _ in pairs], axis=-1)
        flat[f"{k}/b"] = np.concatenate([np.zeros((r,) + like_b.shape[1:], np.float32) if y is None else s * y
                                         for _, y, r, s in pairs], axis=0)
    rank = r1 + r2
    return save_adapters(out, traverse_util.unflatten_dict(flat, sep="/"), inner_cfg["base_model"], rank, float(rank))
