"""Checkpoints of an RL run with orbax-checkpoint's CheckpointManager (0.12.x API).

Each step holds two items:
  * "state": the train state: step, trainable params (all params, or only the LoRA
    adapters: the frozen base comes from the model weights), optimizer state(s), RNG,
    critic params/opt state for PPO;
  * "meta" (JSON): data cursor, step, model and RL config, anything extra.
Restoring takes a *target* train state (arrays or ShapeDtypeStructs with shardings, e.g.
from ``train_state_shardings`` on another mesh): arrays are read straight into those
shardings, so a run can resume on a different mesh.

Orbax stores no checksum (flipped bytes inside a compressed chunk can restore silently), so
"meta" carries a fingerprint of every saved leaf: two sums of its bits mod 2^32, one plain
and one weighted by position, computed on device (so with any sharding and on any number of
hosts, and equal across meshes). Restore recomputes them and raises ``CheckpointError``
naming the step and the leaf on any difference; any other failure to read a step is a
``CheckpointError`` too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from memr1_jax.rl.train_state import TrainState

_SAVED_FIELDS = ("step", "params", "opt_state", "rng", "critic_params", "critic_opt_state")


class CheckpointError(ValueError):
    """A checkpoint step that cannot be restored (missing, unreadable or altered)."""


def _leaf_fingerprint(x: jax.Array) -> jax.Array:
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        bits = x.astype(jnp.uint32)
    else:
        width = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}.get(x.dtype.itemsize)
        if width is None:   # 8-byte leaves: both 32-bit halves
            bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
        else:
            bits = jax.lax.bitcast_convert_type(x, width).astype(jnp.uint32)
    flat = bits.reshape(-1)
    weight = jnp.arange(flat.shape[0], dtype=jnp.uint32) * jnp.uint32(2654435761) + jnp.uint32(1)
    return jnp.stack([jnp.sum(flat, dtype=jnp.uint32), jnp.sum(flat * weight, dtype=jnp.uint32)])


_fingerprints = jax.jit(lambda tree: jax.tree.map(_leaf_fingerprint, tree))


def fingerprint(tree: Any) -> dict[str, str]:
    """{leaf path: 16 hex digits} of a tree of arrays."""
    sums = _fingerprints(tree)
    return {jax.tree_util.keystr(path): "%08x%08x" % tuple(int(v) for v in np.asarray(jax.device_get(x)))
            for path, x in jax.tree_util.tree_leaves_with_path(sums)}


def _to_tree(state: TrainState, include_base: bool) -> dict:
    tree = {k: getattr(state, k) for k in _SAVED_FIELDS if getattr(state, k) is not None}
    if include_base and state.base_params is not None:
        tree["base_params"] = state.base_params
    return tree


def _abstract(x):
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=getattr(x, "sharding", None))


@dataclasses.dataclass
class RestoredRun:
    state: TrainState
    meta: dict
    step: int


class NoSpace(OSError):
    """The checkpoint's folder has no room for it (the message names the folder and sizes)."""


class RLCheckpointer:
    """Saves every ``save_every`` steps (``maybe_save``) and at exit (``close(step, state)``).

    include_base: also save LoRA's frozen base params (off by default: they are the
    pretrained weights, reloaded from their own file)."""

    def __init__(self, directory: str | os.PathLike, save_every: int = 100, max_to_keep: int | None = 3,
                 include_base: bool = False, async_save: bool = True):
        if save_every < 1:
            raise ValueError(f"RLCheckpointer.save_every={save_every}: must be >= 1")
        directory = os.fspath(directory)
        self.directory = directory if "://" in directory else os.path.abspath(directory)   # gs:// as is
        self.include_base = include_base
        options = ocp.CheckpointManagerOptions(save_interval_steps=save_every, max_to_keep=max_to_keep,
                                               enable_async_checkpointing=async_save, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def maybe_save(self, step: int, state: TrainState, *, data_cursor: Any = None, model_cfg=None,
                   rl_cfg=None, extra: dict | None = None, force: bool = False) -> bool:
        """Saves when ``step`` is on the save interval (or ``force``). Returns True if saved.
        ``data_cursor`` must be JSON-serialisable (e.g. the index of the next prompt)."""
        meta = {"step": int(step), "data_cursor": data_cursor, "extra": extra or {}}
        if model_cfg is not None:
            meta["model_config"] = json.loads(model_cfg.to_json())
        if rl_cfg is not None:
            meta["rl_config"] = json.loads(rl_cfg.to_json())
        json.dumps(meta)  # fail early and clearly on non-JSON cursors
        if not (force or self.manager.should_save(int(step))):
            return False
        tree = _to_tree(state, self.include_base)
        self._check_room(int(step), tree)
        meta["fingerprint"] = fingerprint(tree)
        saved = self.manager.save(
            int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                               meta=ocp.args.JsonSave(meta)), force=force)
        return bool(saved)

    def _check_room(self, step: int, tree) -> None:
        """A full disk found before orbax starts writing: its writer threads would each print a
        traceback before the error arrives. A local folder only (a bucket has no free-space figure)."""
        if "://" in self.directory:
            return
        need = int(1.1 * sum(getattr(x, "nbytes", 0) for x in jax.tree.leaves(tree))) + (1 << 20)
        free = shutil.disk_usage(self.directory).free
        if free < need:
            last = self.latest_step()
            raise NoSpace(f"{self.directory}: no room for the checkpoint of step {step} (about {need / 1e6:.1f} MB, "
                          f"{free / 1e6:.1f} MB free); nothing of step {step} was saved. Free space and rerun the same "
                          "command to resume " + (f"from step {last}" if last is not None else "from the start"))

    def save_now(self, step: int, state: TrainState, **kw) -> bool:
        return self.maybe_save(step, state, force=True, **kw)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def restore(self, target: TrainState, step: int | None = None) -> RestoredRun:
        """Restores into the structure, dtypes and shardings of ``target``. With LoRA and
        include_base=False the base params are taken from ``target`` (they must be arrays)."""
        self.manager.wait_until_finished()
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint found in {self.directory}")
        where = os.path.join(self.directory, str(step))
        abstract = jax.tree.map(_abstract, _to_tree(target, self.include_base))
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        except Exception as e:   # orbax / tensorstore / json errors name neither step nor file
            msg = " ".join(str(e).split())[:300]
            raise CheckpointError(f"checkpoint {where} cannot be restored ({type(e).__name__}: {msg})") from None
        meta = out["meta"]
        if not isinstance(meta, dict):
            raise CheckpointError(f"checkpoint {where}: its meta item is not a JSON object")
        expected = meta.get("fingerprint")
        if expected is not None:   # checkpoints written before fingerprints restore unchecked
            got = fingerprint(dict(out["state"]))
            bad = sorted(k for k in set(expected) | set(got) if expected.get(k) != got.get(k))
            if bad:
                raise CheckpointError(f"checkpoint {where} is corrupt: {len(bad)} arrays differ from what was "
                                      f"saved (e.g. {bad[0]})")
        tree = dict(out["state"])
        base = tree.pop("base_params", target.base_params)
        if base is not None and jax.tree.leaves(base) and isinstance(jax.tree.leaves(base)[0], jax.ShapeDtypeStruct):
            raise ValueError("restore: LoRA checkpoint without base params needs concrete target.base_params")
        state = TrainState(**{k: tree.get(k) for k in _SAVED_FIELDS}, base_params=base)
        return RestoredRun(state=state, meta=dict(meta), step=int(step))

    def close(self, step: int | None = None, state: TrainState | None = None, **kw):
        """At exit: saves ``state`` as ``step`` if given and not on disk yet (keywords as
        ``maybe_save``), then waits for pending writes. Pass the live state: the update
        donates its input, so an older state's buffers may be gone."""
        if step is not None and state is not None and int(step) not in self.all_steps():
            self.maybe_save(step, state, force=True, **kw)
        self.manager.wait_until_finished()
        self.manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.manager.wait_until_finished()
        self.manager.close()
