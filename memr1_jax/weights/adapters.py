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
