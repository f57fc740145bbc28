"""The run folder: config.json, train.log, metrics.jsonl (one row per step, no timings, so a
resumed run writes the same rows as an uninterrupted one), timings.jsonl, validation.jsonl,
samples.jsonl, TensorBoard events (and W&B's offline files with ``logging.wandb``), curves.png.

Resuming from the checkpoint of step s first drops every row after s (a killed run may have
logged steps it never checkpointed), so the rerun appends exactly the missing rows; TensorBoard
hides the events after s (``MetricsWriter(initial_step=s)`` purges them).
"""

from __future__ import annotations

import json
import pathlib
import time

import numpy as np

from memr1_jax.config import RunConfig, to_dict
from memr1_jax.files import atomic_write_text, rewrite_lines
from memr1_jax.rl.metrics_writer import MetricsWriter, json_safe

# Keys a rerun may change without starting a new run: the length, where it runs (the
# checkpoint restores into any mesh's shardings), the divergence limits and where curves go.
RESUMABLE_CHANGES = ("steps", "mesh.", "distributed.", "guard.", "logging.")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def check_same_run(path: pathlib.Path, cfg: RunConfig) -> None:
    """A rerun into an existing run folder must use that run's config (bar RESUMABLE_CHANGES).
    A field the run's config.json lacks was added to the schema since; new fields default to the
    behaviour before them, so the rerun matches there only while it keeps that default."""
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable run config ({e}); use another run_dir") from None
    as_saved = lambda c: _flat(json.loads(json.dumps(to_dict(c))))  # noqa: E731 (config.json's own values)
    a, b = {**as_saved(RunConfig()), **_flat(old)}, as_saved(cfg)
    diff = sorted(k for k in set(a) | set(b)
                  if a.get(k) != b.get(k) and not any(k == r or (r.endswith(".") and k.startswith(r))
                                                      for r in RESUMABLE_CHANGES))
    if diff:
        shown = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff[:5])
        raise ValueError(f"{path.parent} holds a run with another config ({shown}{', ...' if len(diff) > 5 else ''}); "
                         "rerun with the same config to resume, or choose another run_dir")


def truncate_jsonl(path: pathlib.Path, max_step: int) -> int:
    """Keeps the rows with step <= max_step (and drops a torn last line); returns rows kept."""
    if not path.exists():
        return 0
    kept = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("step", 0) <= max_step:
            kept.append(line)
    rewrite_lines(path, kept)
    return len(kept)


class RunRecords:
    """The logs of a run. Across processes every process keeps the same in-memory history,
    and only the primary one (process 0) writes files and prints."""
    LOGS = ("metrics.jsonl", "timings.jsonl", "validation.jsonl", "samples.jsonl")

    def __init__(self, run_dir: pathlib.Path, cfg: RunConfig, progress: bool = False, primary: bool = True):
        self.dir = run_dir
        self.t0 = time.time()
        self.primary = primary
        cfg_path = run_dir / "config.json"
        if cfg_path.exists():
            check_same_run(cfg_path, cfg)
        if primary:
            run_dir.mkdir(parents=True, exist_ok=True)
            # Replaced, never rewritten in place: the other processes of a run read it meanwhile
            # (check_same_run), and a torn read would stop one of them alone.
            atomic_write_text(cfg_path, json.dumps(to_dict(cfg), indent=2, sort_keys=True))
        self._log = open(run_dir / "train.log", "a") if primary else None
        self.cfg, self.progress = cfg, progress
        self.writer = None
        self._files = {}
        self.history: list[dict] = []
        self.validation: list[dict] = []

    def log(self, msg: str) -> None:
        if not self.primary:
            return
        line = f"[{time.time() - self.t0:7.1f}s] {msg}"
        print(line, flush=True)
        self._log.write(line + "\n")
        self._log.flush()

    def start(self, resume_step: int) -> None:
        """Drops rows after ``resume_step`` (all rows when starting afresh) and opens the logs."""
        if not self.primary:
            return
        for name in self.LOGS:
            truncate_jsonl(self.dir / name, resume_step if resume_step > 0 else -1)
        read = lambda name: [json.loads(x) for x in (self.dir / name).read_text().splitlines()]  # noqa: E731
        self.history = read("metrics.jsonl") if (self.dir / "metrics.jsonl").exists() else []
        self.validation = read("validation.jsonl") if (self.dir / "validation.jsonl").exists() else []
        lg = self.cfg.logging
        self.writer = MetricsWriter(self.dir, total_steps=self.cfg.steps, progress=self.progress,
                                    initial_step=resume_step, tensorboard=lg.tensorboard, wandb=lg.wandb,
                                    wandb_project=lg.wandb_project, config=to_dict(self.cfg))
        self._files = {name: open(self.dir / name, "a") for name in self.LOGS[1:]}

    def _append(self, name: str, rec: dict) -> None:
        if not self.primary:
            return
        f = self._files[name]
        rec, bad = json_safe(rec)
        if bad:
            rec["nonfinite"] = bad
        f.write(json.dumps(rec, ensure_ascii=False, allow_nan=False) + "\n")
        f.flush()

    def step(self, step: int, metrics: dict, timings: dict, samples: list[dict]) -> None:
        if not self.primary:
            self.history.append({"step": step, **metrics})
            return
        scalars = self.writer.write(step, metrics)
        self.writer.scalars(step, {f"time/{k}": v for k, v in timings.items()})
        self.history.append({"step": step, **scalars})
        self._append("timings.jsonl", {"step": step, "time": time.time(), **timings})
        for s in samples:
            self._append("samples.jsonl", {"step": step, **s})

    def validated(self, step: int, result: dict, seconds: float) -> None:
        row = {"step": step, **result}
        self.validation.append(row)
        self._append("validation.jsonl", row)
        self._append("timings.jsonl", {"step": step, "time": time.time(), "validation_s": seconds})
        if self.writer is not None:
            self.writer.scalars(step, {f"val/{k}": v for k, v in result.items() if isinstance(v, (int, float))})

    def write_json(self, name: str, value) -> None:
        if self.primary:
            atomic_write_text(self.dir / name, json.dumps(value, indent=2))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            for f in self._files.values():
                f.close()
        if self._log is not None:
            self._log.close()

    def plot_curves(self) -> None:
        if not self.primary:
            return
        from matplotlib.figure import Figure   # no pyplot: the caller's backend is left alone
        metrics, val = self.history, self.validation
        steps = [m["step"] for m in metrics]
        kl_key = next((k for k in ("kl_old_ref", "kl", "ppo_kl") if metrics and k in metrics[-1]), None)
        panels = [("reward_mean", "train reward (mean)"), (kl_key, f"KL ({kl_key})"),
                  ("response_length", "response length (tokens)")]
        fig = Figure(figsize=(16, 3.5))
        axes = fig.subplots(1, 4)
        for ax, (key, title) in zip(axes, panels):
            if key:
                ax.plot(steps, [m.get(key, np.nan) for m in metrics], marker="o")
            ax.set_title(title)
            ax.set_xlabel("step")
        axes[3].plot([v["step"] for v in val], [v["score"] for v in val], marker="o", color="C2")
        axes[3].set_title("validation score")
        axes[3].set_xlabel("step")
        fig.tight_layout()
        fig.savefig(self.dir / "curves.png", dpi=90)
