"""Shared loading core: validate a checkpoint against the name table, then read,
transform, cast and place one tensor at a time (so peak host memory stays near
one tensor beyond the placed parameters)."""

from __future__ import annotations

import functools
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from memr1_jax.models.config import ModelConfig
from memr1_jax.models.decoder import abstract_params
from memr1_jax.weights.mappings import Entry, to_param


class WeightLoadError(ValueError):
    """A checkpoint does not match the model: names the file and the tensor."""


@functools.lru_cache(maxsize=32)
def expected_param_shapes(cfg: ModelConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Path -> shape of every parameter of ``Decoder(cfg)``, without allocating (traces
    the model, ~1-3 s for real configs, hence the cache)."""
    flat = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(abstract_params(cfg)))[0]
    return {tuple(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


def _check_table(cfg: ModelConfig, entries: dict[str, Entry], scheme: str) -> None:
    # Guards the table itself against drift from the decoder's parameter tree.
    want = expected_param_shapes(cfg)
    got = {e.param: e.shape for e in entries.values()}
    if set(want) != set(got) or any(want[k] != got[k] for k in want):
        missing = sorted("/".join(k) for k in set(want) - set(got))
        extra = sorted("/".join(k) for k in set(got) - set(want))
        bad = sorted("/".join(k) for k in set(want) & set(got) if want[k] != got[k])
        raise AssertionError(f"{scheme} table for {cfg.arch} disagrees with the decoder: "
                             f"unmapped params {missing[:5]}, unknown params {extra[:5]}, shape {bad[:5]}")


def sharding_for(shardings: Any, path: tuple[str, ...]):
    """The sharding for one parameter: a pytree lookup, one Sharding for all, or None."""
    if shardings is None or isinstance(shardings, jax.sharding.Sharding):
        return shardings
    node = shardings
    for k in path:
        node = node[k]
    return node


def set_path(tree: dict, path: tuple[str, ...], value) -> None:
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def validate(cfg: ModelConfig, entries: dict[str, Entry], available: dict[str, tuple[str, tuple[int, ...]]],
             where: str, scheme: str, ignore: Callable[[str], bool] = lambda n: False) -> None:
    """available: tensor name -> (file, shape). Raises WeightLoadError on the first problems."""
    _check_table(cfg, entries, scheme)
    unmapped = [n for n in available if n not in entries and not ignore(n)]
    if unmapped:
        shown = ", ".join(f"{n!r} (in {available[n][0]})" for n in unmapped[:5])
        raise WeightLoadError(
            f"{where}: {len(unmapped)} tensor(s) not mapped by the {cfg.arch} {scheme} table: {shown}"
            + (" ..." if len(unmapped) > 5 else ""))
    missing = [n for n in entries if n not in available]
    if missing:
        shown = ", ".join(f"{n!r} (for {'/'.join(entries[n].param)})" for n in missing[:5])
        raise WeightLoadError(f"{where}: missing {len(missing)} tensor(s): {shown}"
                              + (" ..." if len(missing) > 5 else ""))
    for name, e in entries.items():
        file, shape = available[name]
        if tuple(shape) != e.src_shape:
            raise WeightLoadError(f"{file}: tensor {name!r} has shape {tuple(shape)}, expected {e.src_shape} "
                                  f"for {'/'.join(e.param)} of this {cfg.arch} config")


def assemble(cfg: ModelConfig, entries: dict[str, Entry], order: list[str],
             read: Callable[[str], np.ndarray], *, dtype=None, shardings=None,
             stats: dict | None = None) -> dict:
    """Read each tensor in ``order``, transform it to the parameter layout, cast to
    ``dtype`` (default float32) and ``jax.device_put`` it to its sharding."""
    dtype = np.dtype(jnp.dtype(dtype or jnp.float32))
    params: dict = {}
    t_read = t_put = 0.0
    for name in order:
        e = entries[name]
        t0 = time.perf_counter()
        x = to_param(read(name), e, cfg)
        if x.dtype != dtype:
            x = x.astype(dtype)
        t1 = time.perf_counter()
        arr = jax.device_put(np.ascontiguousarray(x), sharding_for(shardings, e.param))
        t_put += time.perf_counter() - t1
        t_read += t1 - t0
        set_path(params, e.param, arr)
        del x
    if stats is not None:
        stats.update(read_s=t_read, device_put_s=t_put)
    return params
