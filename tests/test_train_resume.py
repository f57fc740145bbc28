"""Resume and pre-emption of ``python -m memr1_jax.train`` (configs/tiny_cpu.py, in
subprocesses as a user runs it): a run killed with SIGKILL at a random step, or stopped by
SIGTERM, and then rerun with the same command ends with exactly the logs of an
uninterrupted run."""

import dataclasses
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("shared_compile_cache")   # launches after the first load, not compile
STEPS = 6
LOGS = ("metrics.jsonl", "validation.jsonl", "samples.jsonl")


def _cmd(run_dir, *extra):
    return [sys.executable, "-m", "memr1_jax.train", "--config", "configs/tiny_cpu.py",
            f"--config.steps={STEPS}", f"--config.run_dir={run_dir}", *extra]


def _run(run_dir, *extra, check=True):
    p = subprocess.run(_cmd(run_dir, *extra), cwd=REPO, capture_output=True, text=True, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"rc {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def _rows(run_dir, name):
    return (pathlib.Path(run_dir) / name).read_text().splitlines()


def _start_and_signal(run_dir, sig, after_step):
    """Starts a run, sends ``sig`` once metrics.jsonl holds ``after_step`` rows; returns (rc, output)."""
    p = subprocess.Popen(_cmd(run_dir), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = pathlib.Path(run_dir) / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= after_step:
            break
        time.sleep(0.05)
    assert p.poll() is None, "the run ended before the signal"
    p.send_signal(sig)
    out, _ = p.communicate(timeout=240)
    return p.returncode, out


def _events(run_dir):
    """The reward curve as TensorBoard shows it (its reader; a resumed run's purge applied)."""
    from _events import tensorboard_scalars
    return tensorboard_scalars(run_dir, "reward_mean")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    _run(run)
    rows = {name: _rows(run, name) for name in LOGS}
    rows["events"] = _events(run)
    assert [step for step, _ in rows["events"]] == list(range(1, STEPS + 1))
    metrics = [json.loads(x) for x in rows["metrics.jsonl"]]
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    # the weights move at every step (else identical logs would prove nothing)
    assert all(m["grad_norm"] > 0 for m in metrics)
    assert len({m["entropy"] for m in metrics}) == STEPS
    return rows


def test_kill9_at_a_random_step_then_rerun_gives_identical_logs(tmp_path, reference):
    run = tmp_path / "run"
    after = random.Random(os.getpid()).randint(1, STEPS - 1)
    rc, _ = _start_and_signal(run, signal.SIGKILL, after)
    assert rc == -signal.SIGKILL
    logged = len(_rows(run, "metrics.jsonl"))
    ckpts = run / "checkpoints"
    saved = sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) if ckpts.is_dir() else []
    out = _run(run).stdout
    if saved:       # killed after a checkpoint: it resumes there, dropping rows logged after it
        assert f"resumed from the checkpoint of step {saved[-1]}" in out, out[-2000:]
    else:           # killed before the first checkpoint was complete: it starts afresh
        assert "resumed" not in out
    for name in LOGS:
        assert _rows(run, name) == reference[name], (name, after, logged, saved)
    assert _events(run) == reference["events"]   # each step once, although the killed run logged some


def test_sigterm_saves_and_exits_then_rerun_gives_identical_logs(tmp_path, reference):
    run = tmp_path / "run"
    rc, out = _start_and_signal(run, signal.SIGTERM, 2)
    assert rc == 143, out[-2000:]
    stopped = len(_rows(run, "metrics.jsonl"))
    assert 2 <= stopped < STEPS
    assert f"SIGTERM: stopped after step {stopped}, checkpoint saved" in out
    assert (run / "checkpoints" / str(stopped)).is_dir()
    assert json.loads((run / "summary.json").read_text())["preempted"] is True
    assert not (run / "hf").exists()             # nothing exported from an unfinished run
    out = _run(run).stdout
    assert f"resumed from the checkpoint of step {stopped}" in out
    for name in LOGS:
        assert _rows(run, name) == reference[name], name
    assert (run / "hf").is_dir()


def test_ctrl_c_saves_and_exits_130_with_one_line_then_rerun_gives_identical_logs(tmp_path, reference):
    # Ctrl-C used to print orbax's KeyboardInterrupt traceback and lose the step in progress.
    run = tmp_path / "run"
    rc, out = _start_and_signal(run, signal.SIGINT, 2)
    assert rc == 130, out[-2000:]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-3000:]
    stopped = len(_rows(run, "metrics.jsonl"))
    assert f"Ctrl-C: stopped after step {stopped}, checkpoint saved" in out
    assert (run / "checkpoints" / str(stopped)).is_dir()
    out = _run(run).stdout
    assert f"resumed from the checkpoint of step {stopped}" in out
    for name in LOGS:
        assert _rows(run, name) == reference[name], name


def test_rerun_with_another_config_is_refused_and_loses_nothing(tmp_path):
    run = tmp_path / "run"
    _run(run, "--config.steps=2")
    before = _rows(run, "metrics.jsonl")
    p = _run(run, "--config.steps=2", "--config.rl.learning_rate=0.5", check=False)
    assert p.returncode == 2
    assert "rl.learning_rate: 0.001 -> 0.5" in p.stderr
    assert _rows(run, "metrics.jsonl") == before


def test_a_rerun_replaces_config_json_whole_for_the_processes_reading_it(tmp_path):
    """Process 0 rewrites config.json while the others of a multi-process run check it: a
    reader holding the file must keep reading the whole old one, never a truncated one."""
    from memr1_jax.config import load_config_file, override
    from memr1_jax.run.records import RunRecords, check_same_run
    cfg = lambda steps: override(load_config_file(str(REPO / "configs/tiny_cpu.py")),  # noqa: E731
                                 {"steps": steps, "run_dir": str(tmp_path)})
    RunRecords(tmp_path, cfg(1)).close()
    with open(tmp_path / "config.json") as held:
        RunRecords(tmp_path, cfg(2)).close()
        assert json.loads(held.read())["steps"] == 1
    assert json.loads((tmp_path / "config.json").read_text())["steps"] == 2
    check_same_run(tmp_path / "config.json", cfg(2))


def test_a_run_from_before_a_config_field_existed_resumes_while_the_field_keeps_its_default(tmp_path):
    """A run folder written before a field joined the schema (its config.json lacks the key)
    resumes with that field at its default, the behaviour before it; any other value is a new run."""
    from memr1_jax.config import load_config_file, override
    from memr1_jax.run.records import RunRecords, check_same_run
    cfg = override(load_config_file(str(REPO / "configs/tiny_cpu.py")), {"run_dir": str(tmp_path)})
    RunRecords(tmp_path, cfg).close()
    old = json.loads((tmp_path / "config.json").read_text())
    del old["task"]["manager_counterfactual"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    check_same_run(tmp_path / "config.json", cfg)
    with pytest.raises(ValueError, match=r"task.manager_counterfactual: False -> True"):
        task = dataclasses.replace(cfg.task, agent="manager", manager_sft=True, manager_items="steps",
                                   manager_counterfactual=True)
        check_same_run(tmp_path / "config.json", dataclasses.replace(cfg, task=task))
    with pytest.raises(ValueError, match=r"rl.learning_rate: 0.001 -> 0.5"):
        check_same_run(tmp_path / "config.json", override(cfg, {"rl.learning_rate": 0.5}))


def test_a_corrupt_latest_checkpoint_is_set_aside_and_the_one_before_resumes(tmp_path, reference):
    run = tmp_path / "run"
    _run(run, "--config.steps=3")             # checkpoints 2 and 3 kept
    # Step 2's arrays under step 3's name: valid orbax data that restores without complaint (so
    # does a flipped byte inside a stored value); only the saved fingerprints tell. Flipped bytes,
    # which may instead break the store's own structure, are tests/test_checkpoint.py's.
    ckpts = run / "checkpoints"
    shutil.rmtree(ckpts / "3" / "state")
    shutil.copytree(ckpts / "2" / "state", ckpts / "3" / "state")
    out = _run(run).stdout
    assert "checkpoints/3 is corrupt" in out and "trying the one before" in out, out[-2000:]
    assert "resumed from the checkpoint of step 2" in out
    assert len(list((run / "corrupt_checkpoints").iterdir())) == 1
    for name in LOGS:
        assert _rows(run, name) == reference[name], name


def test_checkpoints_in_another_folder_resume(tmp_path):
    """checkpoint_dir (what tpu_scripts/launch.sh points at a bucket) holds the checkpoints."""
    run, store = tmp_path / "run", tmp_path / "bucket" / "r"
    _run(run, "--config.steps=1", f"--config.checkpoint_dir={store}")
    out = _run(run, "--config.steps=2", f"--config.checkpoint_dir={store}").stdout
    assert "resumed from the checkpoint of step 1" in out
    assert (store / "checkpoints" / "2").is_dir() and not (run / "checkpoints").exists()


def test_a_full_disk_stops_with_one_line_naming_the_folder_and_the_rerun_resumes(tmp_path, monkeypatch, capsys):
    # A full disk used to print 88 tracebacks from orbax's writer threads before the error line.
    import collections

    from memr1_jax import train
    from memr1_jax.rl import checkpoint
    run = tmp_path / "run"
    real, calls = checkpoint.shutil.disk_usage, []

    def full_after_first(path):
        calls.append(path)
        u = real(path)
        return u if len(calls) == 1 else collections.namedtuple("U", "total used free")(u.total, u.total, 4096)

    monkeypatch.setattr(checkpoint.shutil, "disk_usage", full_after_first)
    args = ["--config", str(REPO / "configs/tiny_cpu.py"), "--config.steps=3", f"--config.run_dir={run}",
            "--config.export_hf=false", "--config.eval.after_training=false"]
    capsys.readouterr()
    assert train.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {run / 'checkpoints'}: no room for the checkpoint of step 2")
    assert "resume from step 1" in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == ["1"]
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", real)
    assert train.main(args) == 0
    assert "resumed from the checkpoint of step 1" in (run / "train.log").read_text()
    assert [json.loads(x)["step"] for x in _rows(run, "metrics.jsonl")] == [1, 2, 3]
