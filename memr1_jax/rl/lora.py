"""LoRA as a parameter-tree transform (no model changes).

Selected kernels W (chosen by regex over their "/"-joined path) get adapters
A [in, r] and B [r, out] with B = 0 at init, and the model runs on
``merge(base, adapters) = W + (alpha / r) * (A @ B).reshape(W.shape)``. Multi-axis kernels
are flattened: q/k/v [D, H, Dh] are [D, H*Dh], o_proj [H, Dh, D] is [H*Dh, D]. Only the
adapters are trained; the frozen base doubles as the reference policy (no copy).

Adapters are a nested dict mirroring the parameter tree: {"layers_0": {"attn": {"q_proj":
{"a": ..., "b": ...}}}}, so they checkpoint and shard like parameters.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

# (path regex, number of leading input axes of the kernel)
DEFAULT_TARGETS: tuple[tuple[str, int], ...] = (
    (r"(^|.*/)attn/(q|k|v)_proj$", 1),
    (r"(^|.*/)attn/o_proj$", 2),
    (r"(^|.*/)mlp/(gate|up|down)_proj$", 1),
)


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[tuple[str, int], ...] = DEFAULT_TARGETS

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"LoraConfig.rank={self.rank}: must be >= 1")
        targets = tuple((str(r), int(n)) for r, n in self.targets)
        for r, n in targets:
            re.compile(r)
            if n < 1:
                raise ValueError(f"LoraConfig.targets: {r!r} has {n} input axes; need >= 1")
        object.__setattr__(self, "targets", targets)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def _path_str(path) -> str:
    return "/".join(getattr(k, "key", getattr(k, "name", str(k))) for k in path)


def target_kernels(params: Any, cfg: LoraConfig) -> dict[tuple[str, ...], int]:
    """{path tuple: number of input axes} of the kernels that get adapters."""
    found = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        s = _path_str(path)
        for regex, n_in in cfg.targets:
            if re.fullmatch(regex, s):
                if np.ndim(leaf) <= n_in:
                    raise ValueError(f"LoRA target {s} has shape {np.shape(leaf)}: needs more than {n_in} axes")
                found[tuple(s.split("/"))] = n_in
                break
    if not found:
        raise ValueError(f"LoRA targets {[r for r, _ in cfg.targets]} matched no parameter")
    return found


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def _set(tree: dict, path, value):
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def init_adapters(params: Any, cfg: LoraConfig, rng: jax.Array, dtype=jnp.float32) -> dict:
    """A ~ N(0, 1/in) (so the update direction starts well scaled), B = 0."""
    out: dict = {}
    kernels = sorted(target_kernels(params, cfg).items())
    keys = jax.random.split(rng, len(kernels))
    for key, (path, n_in) in zip(keys, kernels):
        shape = np.shape(_get(params, path))
        d_in, d_out = int(np.prod(shape[:n_in])), int(np.prod(shape[n_in:]))
        a = jax.random.normal(key, (d_in, cfg.rank), dtype) / math.sqrt(d_in)
        _set(out, path, {"a": a, "b": jnp.zeros((cfg.rank, d_out), dtype)})
    return out


def merge(base: Any, adapters: dict, alpha: float, rank: int) -> Any:
    """Effective parameters: base with W + (alpha/rank) * A @ B on every adapted kernel."""
    scale = alpha / rank

    def walk(b, a, where):
        if isinstance(a, dict) and set(a) == {"a", "b"} and not isinstance(b, dict):
            w = b
            delta = (a["a"].astype(jnp.float32) @ a["b"].astype(jnp.float32)) * scale
            if delta.size != w.size:
                raise ValueError(f"LoRA adapter at {where}: A@B has {delta.shape}, kernel {w.shape}")
            return (w.astype(jnp.float32) + delta.reshape(w.shape)).astype(w.dtype)
        if not isinstance(b, dict):
            raise ValueError(f"LoRA adapters at {where} do not match the parameter tree")
        out = dict(b)
        for k, sub in a.items():
            if k not in b:
                raise ValueError(f"LoRA adapter path {where}/{k} not in the parameters")
            out[k] = walk(b[k], sub, f"{where}/{k}")
        return out

    return walk(base, adapters, "")


def adapter_logical_axes(adapters: dict, base_logical: Any, cfg: LoraConfig) -> Any:
    """Logical PartitionSpecs for the adapters from the base kernels' specs: A takes the
    first input axis' name, B the first output axis' name, rank is "lora_rank"."""
    def walk(a, spec_tree, path):
        if set(a) == {"a", "b"} and not isinstance(a["a"], dict):
            spec = tuple(_get(base_logical, path))
            n_in = next(n for r, n in cfg.targets if re.fullmatch(r, "/".join(path)))
            return {"a": P(spec[0], "lora_rank"), "b": P("lora_rank", spec[n_in])}
        return {k: walk(v, spec_tree, path + (k,)) for k, v in a.items()}
    return walk(adapters, base_logical, ())


def num_adapter_params(adapters: dict) -> int:
    return int(sum(np.size(x) for x in jax.tree.leaves(adapters)))
