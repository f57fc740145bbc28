"""Logical-axis rules as data, and shardings derived from them.

Parameters and activations carry *logical* axis names (see ``models/decoder.py``); a rule
table maps each name to mesh axes. Everything here is pure: a table is a tuple of
``(logical_name, mesh_axes)`` pairs, where mesh_axes is None, one axis name, or a tuple.

A dimension whose size does not divide by the product of its mesh axes is replicated on
those axes instead (device_put refuses uneven shards), so e.g. SmolLM2's 9 heads still run
on a tensor=2 mesh.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

Rules = tuple[tuple[str, Any], ...]

# batch is split over data and fsdp (both are data-parallel for activations); weights are
# FSDP-sharded along embed and tensor-parallel along heads / mlp / vocab.
DEFAULT_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("act_embed", None),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("norm", None),
    # LoRA adapter rank axis: tiny, always replicated.
    ("lora_rank", None),
)


def validate_rules(rules: Sequence, mesh_axes: Sequence[str] | None = None) -> Rules:
    """Normalises a rule table (lists from JSON become tuples) and checks mesh axis names."""
    out = []
    for i, item in enumerate(rules):
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
            raise ValueError(f"rules[{i}]={item!r}: expected (logical_name, mesh_axes)")
        name, axes = item
        if isinstance(axes, list):
            axes = tuple(axes)
        names = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
        if mesh_axes is not None:
            for a in names:
                if a not in mesh_axes:
                    raise ValueError(f"rules[{i}]: logical axis {name!r} maps to unknown mesh axis {a!r}; "
                                     f"mesh axes are {tuple(mesh_axes)}")
        out.append((name, axes))
    return tuple(out)


def _axis_size(mesh: Mesh, entry) -> int:
    if entry is None:
        return 1
    names = entry if isinstance(entry, tuple) else (entry,)
    return int(np.prod([mesh.shape[n] for n in names]))


def fit_spec(spec: P, shape: Sequence[int], mesh: Mesh) -> P:
    """Drops mesh axes from dimensions they do not divide evenly (and pads/truncates the
    spec to the array rank). Scalars come back fully replicated."""
    entries = list(spec)[: len(shape)]
    entries += [None] * (len(shape) - len(entries))
    fitted = []
    for dim, entry in zip(shape, entries):
        if entry is not None and dim % _axis_size(mesh, entry) != 0:
            names = entry if isinstance(entry, tuple) else (entry,)
            # Keep the longest prefix of axes that still divides the dimension.
            kept = []
            for n in names:
                if dim % (_axis_size(mesh, tuple(kept + [n]))) == 0:
                    kept.append(n)
                else:
                    break
            entry = None if not kept else (kept[0] if len(kept) == 1 else tuple(kept))
        fitted.append(entry)
    while fitted and fitted[-1] is None:
        fitted.pop()
    return P(*fitted)


def logical_to_sharding(logical_specs: Any, abstract: Any, mesh: Mesh, rules: Rules) -> Any:
    """Tree of logical PartitionSpecs + matching shape tree -> tree of NamedShardings."""
    mesh_specs = nn.logical_to_mesh(logical_specs, rules)
    return jax.tree.map(
        lambda spec, x: NamedSharding(mesh, fit_spec(spec if spec is not None else P(), np.shape(x), mesh)),
        mesh_specs, abstract, is_leaf=lambda s: isinstance(s, P) or s is None)


def boxed_shardings(abstract_boxed: Any, mesh: Mesh, rules: Rules) -> Any:
    """Shardings of an ``eval_shape``-d tree holding ``nn.LogicallyPartitioned`` boxes
    (e.g. ``models.decoder.abstract_params(cfg)``). Unboxed leaves are replicated."""
    specs = nn.get_partition_spec(abstract_boxed)
    return logical_to_sharding(specs, nn.meta.unbox(abstract_boxed), mesh, rules)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, shape: Sequence[int], rules: Rules) -> NamedSharding:
    """Sharding of a per-example array: dim 0 is the logical "batch" axis."""
    spec = nn.logical_to_mesh_axes(("batch",) + (None,) * (len(shape) - 1), rules)
    return NamedSharding(mesh, fit_spec(spec, shape, mesh))


def _path_key(path) -> tuple:
    return tuple(str(k) for k in path)


def match_shardings(abstract: Any, ref_abstract: Any, ref_shardings: Any, mesh: Mesh) -> Any:
    """Shardings for ``abstract`` (e.g. an optimizer state) by matching each leaf's key-path
    suffix and shape against the leaves of a reference tree (the parameters) whose
    shardings are known. Unmatched leaves (step counts, scalars) are replicated.
    This follows optax's layout (mu/nu mirror the parameter tree) without hard-coding it."""
    table = {}
    for (path, leaf), sh in zip(jax.tree_util.tree_flatten_with_path(ref_abstract)[0],
                                jax.tree.leaves(ref_shardings, is_leaf=lambda s: isinstance(s, NamedSharding))):
        table[_path_key(path)] = (tuple(np.shape(leaf)), sh)
    depths = sorted({len(k) for k in table}, reverse=True)

    def pick(path, leaf):
        key = _path_key(path)
        for d in depths:
            if d <= len(key):
                hit = table.get(key[len(key) - d:])
                if hit is not None and hit[0] == tuple(np.shape(leaf)):
                    return hit[1]
        return NamedSharding(mesh, P())

    return jax.tree_util.tree_map_with_path(pick, abstract)
