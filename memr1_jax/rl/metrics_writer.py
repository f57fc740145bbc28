"""Training metrics: the sinks a step's scalars go to (TensorBoard events through tensorboardX,
optionally Weights & Biases, ``metrics.jsonl``, a tqdm bar) and throughput/MFU helpers.

A resumed run restarts at the checkpoint's step: the TensorBoard writer is opened with
``purge_step`` (a SessionLog START event at that step), so TensorBoard's reader discards the
killed run's events from that step on and every step shows once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from typing import Any, Mapping

import numpy as np


class EventWriter:
    """TensorBoard scalars in ``logdir`` (tensorboardX; no TensorFlow). ``purge_step``: hide
    every event of an earlier run at this step or later (the step a resumed run restarts at)."""

    def __init__(self, logdir: str | os.PathLike, purge_step: int | None = None):
        from tensorboardX import SummaryWriter
        # tensorboardX names the file by the second and opens it "wb": a rerun within the same
        # second would wipe the first run's events without a suffix of its own.
        self._w = SummaryWriter(logdir=os.fspath(logdir), purge_step=purge_step,
                                filename_suffix=f".{os.getpid()}.{time.time_ns()}")

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        finite = {k: float(v) for k, v in values.items() if _is_number(v)}
        for tag, v in finite.items():
            self._w.add_scalar(tag, v, global_step=int(step))
        if finite:
            self._w.flush()   # a step's events on disk with its JSONL row (a kill loses neither alone)

    def close(self) -> None:
        self._w.close()


WANDB_MODES = ("", "offline", "online")


class WandbWriter:
    """Weights & Biases, ``mode`` "offline" (files in ``<logdir>/wandb``, ``wandb sync`` later;
    no network) or "online". The W&B run id is a function of the run folder, so a resumed run
    continues the same W&B run."""

    def __init__(self, logdir: str | os.PathLike, mode: str, project: str, config: dict | None = None):
        import wandb
        folder = os.path.abspath(os.fspath(logdir))
        run_id = hashlib.sha256(folder.encode()).hexdigest()[:16]
        self._run = wandb.init(project=project, id=run_id, name=os.path.basename(folder), dir=folder, mode=mode,
                               resume="allow", config=config or {})

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        finite = {k: float(v) for k, v in values.items() if _is_number(v)}
        if finite:
            self._run.log(finite, step=int(step))

    def close(self) -> None:
        self._run.finish()


def _is_scalar(v) -> bool:
    """A 0-d value that converts to float (NaN and inf included)."""
    if np.ndim(v) != 0 or isinstance(v, (str, bytes)):
        return False
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def _is_number(v) -> bool:
    return _is_scalar(v) and math.isfinite(float(v))


def json_safe(obj: Any, path: str = "") -> tuple[Any, list[str]]:
    """``obj`` with every non-finite float replaced by None, and the dotted paths replaced:
    JSON has no NaN, and Python's ``json`` would write a bare ``NaN`` no parser accepts."""
    if isinstance(obj, float) or isinstance(obj, np.floating):
        return (float(obj), []) if math.isfinite(obj) else (None, [path or "value"])
    if isinstance(obj, Mapping):
        out, bad = {}, []
        for k, v in obj.items():
            out[k], b = json_safe(v, f"{path}.{k}" if path else str(k))
            bad += b
        return out, bad
    if isinstance(obj, (list, tuple)):
        pairs = [json_safe(v, f"{path}[{i}]") for i, v in enumerate(obj)]
        return [p[0] for p in pairs], [b for p in pairs for b in p[1]]
    return obj, []


class MetricsWriter:
    """Writes each step's scalars to TensorBoard events, ``metrics.jsonl``, optionally W&B
    (``wandb``: "offline" / "online") and a tqdm bar showing a few key numbers. ``initial_step``:
    the step a resumed run restarts from (events after it are purged)."""

    BAR_KEYS = ("reward_mean", "kl", "entropy", "tokens_per_s", "mfu")

    def __init__(self, logdir: str | os.PathLike, total_steps: int | None = None, progress: bool = True,
                 initial_step: int = 0, tensorboard: bool = True, wandb: str = "", wandb_project: str = "memr1-jax",
                 config: dict | None = None):
        self.logdir = os.fspath(logdir)
        self.sinks: list = []
        if tensorboard:
            # A run resumed from step s redoes s+1 on; one started afresh (perhaps over a run killed
            # before its first checkpoint) redoes everything from step 0's validation.
            self.sinks.append(EventWriter(self.logdir, purge_step=initial_step + 1 if initial_step else 0))
        if wandb:
            self.sinks.append(WandbWriter(self.logdir, wandb, wandb_project, config))
        self._jsonl = open(os.path.join(self.logdir, "metrics.jsonl"), "a")
        self.bar = None
        if progress:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total_steps, initial=initial_step, desc="rl", dynamic_ncols=True)

    def scalars(self, step: int, values: Mapping[str, Any]) -> None:
        """Extra scalars (timings, validation) to the event sinks only."""
        for sink in self.sinks:
            sink.scalars(step, values)

    def write(self, step: int, metrics: Mapping[str, Any]) -> dict:
        """Returns the row written: scalars, non-finite ones as None (JSON null) and named
        under "nonfinite"."""
        scalars = {k: float(np.asarray(v)) for k, v in metrics.items() if _is_scalar(np.asarray(v))}
        self.scalars(step, scalars)
        row, bad = json_safe(scalars)
        if bad:
            row["nonfinite"] = bad
        # No wall time here: a resumed run must write the same rows as an uninterrupted one.
        self._jsonl.write(json.dumps({"step": int(step), **row}, allow_nan=False) + "\n")
        self._jsonl.flush()
        if self.bar is not None:
            self.bar.set_postfix({k: f"{scalars[k]:.3g}" for k in self.BAR_KEYS if k in scalars}, refresh=False)
            self.bar.update(1)
        return row

    def close(self):
        for sink in self.sinks:
            sink.close()
        self._jsonl.close()
        if self.bar is not None:
            self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def throughput_metrics(step_time_s: float, tokens: float, flops: float | None = None,
                       peak_flops_per_s: float | None = None) -> dict[str, float]:
    """tokens/s, step time and, given the step's model FLOPs (``update_flops``) and the
    hardware peak, achieved FLOP/s and MFU."""
    out = {"step_time_s": step_time_s, "tokens_per_s": tokens / max(step_time_s, 1e-9)}
    if flops is not None:
        out["flops_per_s"] = flops / max(step_time_s, 1e-9)
        if peak_flops_per_s:
            out["mfu"] = out["flops_per_s"] / peak_flops_per_s
    return out
