"""The divergence guard and finite checks of training (probe rows 5a, 5b of
shared/docs/reviews/reliability-probe.md): a NaN reward or an exploding update stops the run
with exit 3 before the bad step is saved; logs stay valid JSON."""

import dataclasses
import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from memr1_jax.config import ConfigError, load_config_file, override
from memr1_jax.rl.metrics_writer import MetricsWriter, json_safe
from memr1_jax.run.guards import TrainingDiverged, check_finite_weights, check_update
from memr1_jax.config import GuardSection

REPO = pathlib.Path(__file__).resolve().parents[1]


def _tiny(run_dir, **keys):
    cfg = load_config_file(REPO / "configs" / "tiny_cpu.py")
    return override(cfg, {"run_dir": str(run_dir), "eval.after_training": False, **keys})


def _strict_json(line: str):
    def refuse(c):
        raise ValueError(f"non-JSON constant {c}")
    return json.loads(line, parse_constant=refuse)


def test_config_refuses_non_finite_numbers():
    cfg = load_config_file(REPO / "configs" / "tiny_cpu.py")
    with pytest.raises(ConfigError, match=r"task.answer.f1_weight=inf: must be a finite number"):
        override(cfg, {"task.answer.f1_weight": "1e999"}, from_strings=True)


def test_nan_reward_stops_the_run_before_anything_is_saved(tmp_path):
    from memr1_jax.train import train
    cfg = _tiny(tmp_path / "run")
    # inf x F1 0 = NaN, as --config.answer.f1_weight=1e999 gave before the config refused it
    bad = dataclasses.replace(cfg.task.answer, f1_weight=math.inf)
    cfg = dataclasses.replace(cfg, task=dataclasses.replace(cfg.task, answer=bad))
    with pytest.raises(TrainingDiverged, match=r"step 1: 8 of 8 rollout rewards are not finite \(nan\)"):
        train(cfg)
    run = tmp_path / "run"
    assert not list((run / "checkpoints").glob("*")) and not (run / "hf").exists()
    assert "last good checkpoint is none" in (run / "train.log").read_text()


def test_exploding_update_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "memr1_jax.train", "--config", "configs/tiny_cpu.py", f"--config.run_dir={run}",
           "--config.eval.after_training=false"]
    ok = subprocess.run(cmd + ["--config.steps=2"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    # The resumed run (a guard limit may change on resume) meets a limit at step 3.
    p = subprocess.run(cmd + ["--config.steps=4", "--config.guard.max_update_ratio=1e-6"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 3, (p.returncode, p.stderr[-2000:])
    assert "error: training stopped at step 3: update_ratio" in p.stderr
    assert "exceeds guard.max_update_ratio = 1e-06" in p.stderr
    steps = sorted(int(d.name) for d in (run / "checkpoints").iterdir() if d.name.isdigit())
    assert steps[-1] == 2
    rows = [_strict_json(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]     # the bad step's row is kept for diagnosis
    assert rows[2]["update_ratio"] > 1e-6


def test_update_reports_non_finite_weights_and_check_update_stops():
    guard = GuardSection()
    check_update(1, {"pg_loss": 0.1, "params_finite": 1.0, "update_ratio": 0.01}, guard)
    with pytest.raises(TrainingDiverged, match="non-finite grad_norm, pg_loss"):
        check_update(4, {"pg_loss": math.nan, "grad_norm": math.inf, "params_finite": 1.0}, guard)
    with pytest.raises(TrainingDiverged, match="non-finite weights"):
        check_update(4, {"params_finite": 0.0}, guard)
    with pytest.raises(TrainingDiverged, match="ppo_kl = -7 exceeds guard.max_kl"):
        check_update(4, {"ppo_kl": -7.0}, guard)
    check_update(4, {"ppo_kl": -7.0}, GuardSection(max_kl=0.0))   # 0 turns a limit off


def test_weights_with_nan_are_never_written():
    check_finite_weights({"a": np.ones(3, np.float32)}, "out/hf")
    with pytest.raises(ValueError, match=r"out/hf: 1 weight tensors hold NaN or inf \(e.g. \['b'\]\)"):
        check_finite_weights({"a": np.ones(3, np.float32), "b": np.array([1.0, np.nan], np.float32)}, "out/hf")


def test_metrics_and_samples_are_strict_json_with_nonfinite_flagged(tmp_path):
    with MetricsWriter(tmp_path, progress=False) as w:
        row = w.write(1, {"reward_mean": np.float32("nan"), "kl": 0.5, "grad_norm": np.inf})
    line = (tmp_path / "metrics.jsonl").read_text().splitlines()[0]
    rec = _strict_json(line)
    assert rec == {"step": 1, "reward_mean": None, "kl": 0.5, "grad_norm": None,
                   "nonfinite": ["reward_mean", "grad_norm"]} and row["kl"] == 0.5
    safe, bad = json_safe({"reward": float("nan"), "info": {"f1": [1.0, float("-inf")]}})
    assert safe == {"reward": None, "info": {"f1": [1.0, None]}} and bad == ["reward", "info.f1[1]"]
