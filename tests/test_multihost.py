"""Two processes on localhost, each with 4 virtual CPU devices and gloo collectives, train
configs/tiny_cpu.py over one 8-device mesh: the same metrics as one process with 8 devices,
one writer of the logs, a checkpoint saved by both processes restored by both after both found
the newer one corrupt (a barrier lets process 0 set it aside before the others look again), and no
persistent compilation cache (JAX writes it from process 0 alone: a resumed process 0 would
load in a second what process 1 compiles, and reach gloo's fixed 30-s deadline alone)."""

import json
import os
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(run_dir, steps, mesh=("--config.mesh.fsdp=8",), extra=(), out_dir=None):
    """Starts the two processes; their output goes to files (``out_dir``) or pipes."""
    port = _free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    return [subprocess.Popen(
        [sys.executable, "-m", "memr1_jax.train", "--config", "configs/tiny_cpu.py", f"--config.steps={steps}",
         *mesh, "--config.export_hf=false", f"--config.run_dir={run_dir}", *extra,
         f"--config.distributed.coordinator=127.0.0.1:{port}", "--config.distributed.num_processes=2",
         f"--config.distributed.process_id={i}"],
        cwd=REPO, env=env, stderr=subprocess.STDOUT, text=True,
        stdout=open(out_dir / f"out{i}.txt", "w") if out_dir else subprocess.PIPE) for i in range(2)]


def _wait(procs, timeout=400):
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    return outs


def _two_processes(run_dir, steps, mesh=("--config.mesh.fsdp=8",), rc=0):
    procs = _launch(run_dir, steps, mesh)
    outs = _wait(procs)
    # both tails: when one process stops early, the other's error is only gloo's timeout
    assert [p.returncode for p in procs] == [rc, rc], "\n".join(
        f"--- process {i} (rc {p.returncode}):\n{out[-2500:]}" for i, (p, out) in enumerate(zip(procs, outs)))
    return outs


@pytest.mark.usefixtures("eight_devices")
def test_two_processes_train_like_one_process_with_eight_devices(tmp_path, shared_compile_cache):
    from memr1_jax.config import load_config_file, override
    from memr1_jax.train import train
    ref = tmp_path / "one"
    train(override(load_config_file("configs/tiny_cpu.py"), {"steps": 2, "mesh.fsdp": 8, "export_hf": False,
                                                             "run_dir": str(ref)}))
    run = tmp_path / "two"
    outs = _two_processes(run, steps=2)
    assert "step 2/2" in outs[0] and "step 2/2" not in outs[1]     # process 0 logs, process 1 is quiet
    # Step 1's arrays under step 2's name: both processes find the fingerprints differ, process 0
    # sets the folder aside, and both resume from step 1's checkpoint, which both had saved.
    ckpts = run / "checkpoints"
    shutil.rmtree(ckpts / "2" / "state")
    shutil.copytree(ckpts / "1" / "state", ckpts / "2" / "state")
    outs = _two_processes(run, steps=2)
    assert "checkpoints/2 is corrupt" in outs[0] and "resumed from the checkpoint of step 1" in outs[0]
    assert len(list((run / "corrupt_checkpoints").iterdir())) == 1
    assert not any(shared_compile_cache.iterdir())   # MEMR1_COMPILE_CACHE named it; both runs left it off
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    want = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for got, exp in zip(rows, want):
        assert set(got) == set(exp) and exp["grad_norm"] > 0
        for key in exp:
            np.testing.assert_allclose(got[key], exp[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert (run / "samples.jsonl").read_text() == (ref / "samples.jsonl").read_text()
    val, ref_val = ([json.loads(x) for x in (d / "validation.jsonl").read_text().splitlines()] for d in (run, ref))
    assert [v["step"] for v in val] == [0, 2] and val == ref_val


def _metric_rows(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_same_metrics(rows, want):
    assert [r["step"] for r in rows] == [r["step"] for r in want]
    for got, exp in zip(rows, want):
        assert set(got) == set(exp) and exp["grad_norm"] > 0
        for key in exp:
            np.testing.assert_allclose(got[key], exp[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.usefixtures("eight_devices")
def test_sigterm_to_one_process_stops_both_after_the_same_step_and_the_rerun_resumes(tmp_path, shared_compile_cache):
    """A pod's pre-emption notice reaches one VM: JAX's runtime takes the SIGTERM and agrees on a
    step with the others; both processes save one checkpoint together and exit 143 (before,
    both ran every step and exited 0)."""
    from memr1_jax.config import load_config_file, override
    from memr1_jax.train import train
    steps, flags = 5, ("--config.save_every=100", "--config.eval_every=100")
    ref = tmp_path / "one"
    train(override(load_config_file("configs/tiny_cpu.py"), {
        "steps": steps, "mesh.fsdp": 8, "export_hf": False, "run_dir": str(ref), "save_every": 100,
        "eval_every": 100}))
    run = tmp_path / "two"
    after = random.Random(os.getpid()).randint(1, 2)
    procs = _launch(run, steps, extra=flags, out_dir=tmp_path)
    metrics, deadline = run / "metrics.jsonl", time.time() + 300
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if metrics.exists() and len(metrics.read_text().splitlines()) >= after:
            break
        time.sleep(0.05)
    assert all(p.poll() is None for p in procs), "a process ended before the signal"
    procs[1].send_signal(signal.SIGTERM)
    _wait(procs, timeout=300)
    outs = [(tmp_path / f"out{i}.txt").read_text() for i in range(2)]
    assert [p.returncode for p in procs] == [143, 143], "\n".join(f"--- {i}:\n{o[-2500:]}" for i, o in enumerate(outs))
    stopped = len(_metric_rows(run))
    assert after <= stopped < steps, (after, stopped)
    assert f"SIGTERM: stopped after step {stopped} (all 2 processes), checkpoint saved" in outs[0], outs[0][-2500:]
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == [str(stopped)]
    assert json.loads((run / "summary.json").read_text())["exit_code"] == 143
    outs = _two_processes(run, steps, mesh=("--config.mesh.fsdp=8", *flags))   # the same command again
    assert f"resumed from the checkpoint of step {stopped}" in outs[0]
    _assert_same_metrics(_metric_rows(run), _metric_rows(ref))


def test_two_processes_whose_mesh_does_not_span_every_device_stop_before_loading(tmp_path):
    # The README's multi-host command without mesh flags (a 1x1x1 mesh of 8 devices) used to
    # train, then die at the first checkpoint ("Cannot serialize host local jax.Array").
    run = tmp_path / "run"
    outs = _two_processes(run, steps=2, mesh=(), rc=2)
    for out in outs:
        assert "error: mesh.data=1 x mesh.fsdp=1 x mesh.tensor=1 spans 1 of the 8 devices of 2 processes" in out, out
        assert "Traceback" not in out
    assert not run.exists()


def test_the_span_check_accepts_meshes_over_every_device():
    from memr1_jax.parallel.mesh import MeshConfig, check_spans_processes
    check_spans_processes(MeshConfig(data=1, fsdp=1, tensor=1), 1, 1)     # one process: any mesh
    check_spans_processes(MeshConfig(data=1, fsdp=-1, tensor=1), 8, 2)
    check_spans_processes(MeshConfig(data=2, fsdp=2, tensor=2), 8, 2)
    with pytest.raises(ValueError, match="spans 4 of the 8 devices"):
        check_spans_processes(MeshConfig(data=2, fsdp=2, tensor=1), 8, 2)
