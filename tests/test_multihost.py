"""Two processes on localhost, each with 4 virtual CPU devices and gloo collectives, train
configs/tiny_cpu.py over one 8-device mesh: the same metrics as one process with 8 devices,
one writer of the logs, a checkpoint saved by both processes restored by both after both found
the newer one corrupt (a barrier lets process 0 set it aside before the others look again), and no
persistent compilation cache (JAX writes it from process 0 alone: a resumed process 0 would
load in a second what process 1 compiles, and reach gloo's fixed 30-s deadline alone)."""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(run_dir, steps, mesh=("--config.mesh.fsdp=8",), rc=0):
    port = _free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "memr1_jax.train", "--config", "configs/tiny_cpu.py", f"--config.steps={steps}",
         *mesh, "--config.export_hf=false", f"--config.run_dir={run_dir}",
         f"--config.distributed.coordinator=127.0.0.1:{port}", "--config.distributed.num_processes=2",
         f"--config.distributed.process_id={i}"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=400)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    # both tails: when one process stops early, the other's error is only gloo's timeout
    assert [p.returncode for p in procs] == [rc, rc], "\n".join(
        f"--- process {i} (rc {p.returncode}):\n{out[-2500:]}" for i, (p, out) in enumerate(zip(procs, outs)))
    return outs


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (virtual) devices for the one-process reference")
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
