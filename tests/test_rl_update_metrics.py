"""The TensorBoard/JSONL metrics writer and throughput helpers."""

import json

import numpy as np
import pytest

from _events import tensorboard_scalars
from memr1_jax.rl import metrics_writer as mw


def test_events_read_by_tensorboard_and_jsonl(tmp_path):
    with mw.MetricsWriter(tmp_path, total_steps=2, progress=False) as w:
        w.write(1, {"reward_mean": np.float32(0.25), "kl": 0.5, "name": "skip-me", "bad": float("nan")})
        w.write(2, {"reward_mean": 0.75, "step_time_s": 1.5})
        w.scalars(2, {"val/f1": 0.5})
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1
    assert tensorboard_scalars(tmp_path, "reward_mean") == [(1, 0.25), (2, 0.75)]
    assert tensorboard_scalars(tmp_path, "kl") == [(1, 0.5)] and tensorboard_scalars(tmp_path, "val/f1") == [(2, 0.5)]
    assert tensorboard_scalars(tmp_path, "bad") == [] and tensorboard_scalars(tmp_path, "name") == []
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [1, 2] and lines[0]["kl"] == 0.5 and "name" not in lines[0]


def test_a_resumed_writer_purges_the_killed_runs_later_steps(tmp_path):
    # A run killed after logging step 5 resumes from its checkpoint of step 3: TensorBoard must
    # show steps 4 and 5 once, with the rerun's values (it showed both runs' before).
    with mw.MetricsWriter(tmp_path, progress=False) as w:
        w.scalars(0, {"val/f1": 0.25})
        for step in range(1, 6):
            w.write(step, {"reward_mean": float(step)})
    with mw.MetricsWriter(tmp_path, progress=False, initial_step=3) as w:
        for step in range(4, 7):
            w.write(step, {"reward_mean": 10.0 * step})
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
    assert tensorboard_scalars(tmp_path, "reward_mean") == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0),
                                                            (6, 60.0)]
    assert tensorboard_scalars(tmp_path, "val/f1") == [(0, 0.25)]
    # killed before its first checkpoint, a run starts afresh: nothing of the killed one stays
    with mw.MetricsWriter(tmp_path, progress=False) as w:
        w.scalars(0, {"val/f1": 0.5})
        w.write(1, {"reward_mean": 7.0})
    assert tensorboard_scalars(tmp_path, "reward_mean") == [(1, 7.0)]
    assert tensorboard_scalars(tmp_path, "val/f1") == [(0, 0.5)]


def test_wandb_offline_needs_no_network(tmp_path, monkeypatch):
    import wandb  # noqa: F401
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")   # any attempt to reach a server fails
    with mw.MetricsWriter(tmp_path, progress=False, wandb="offline", config={"seed": 3}) as w:
        w.write(1, {"reward_mean": 0.25, "wandb_probe_metric": 7.0})
    files = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1 and b"wandb_probe_metric" in files[0].read_bytes()


def test_throughput_and_mfu():
    m = mw.throughput_metrics(2.0, tokens=1000, flops=4e9, peak_flops_per_s=1e10)
    assert m["tokens_per_s"] == 500 and m["flops_per_s"] == 2e9 and abs(m["mfu"] - 0.2) < 1e-12
