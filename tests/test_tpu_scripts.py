"""tpu_scripts/launch.sh against a fake ``gcloud`` / ``gsutil`` on PATH that records every call:
the dry run prints exactly what a real run executes, for one host and for a 4-host slice; a
failing step still deletes the VM; a pre-empted VM is re-created and the run resumed; missing
tools, credentials and settings give clear early errors."""

import json
import os
import pathlib
import shlex
import shutil
import stat
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / "tpu_scripts" / "launch.sh"

FAKE = r'''#!/usr/bin/env python3
"""Fake gcloud / gsutil: appends argv to $FAKE_LOG; behaviour from $FAKE_* variables."""
import json, os, pathlib, sys
tool = pathlib.Path(sys.argv[0]).name
argv = [tool] + sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(argv) + "\n")
line = " ".join(argv)
state_file = pathlib.Path(os.environ["FAKE_LOG"] + ".state")
state = json.loads(state_file.read_text()) if state_file.exists() else {"runs": 0, "vm": "absent"}
code = 0
if line.startswith("gcloud auth list"):
    print(os.environ.get("FAKE_ACCOUNT", "someone@example.com"))
elif "tpu-vm describe" in line or "queued-resources describe" in line:
    if state["vm"] == "absent":
        code = 1
    else:
        print("ACTIVE" if "queued" in line else state["vm"].upper())
elif "tpu-vm create" in line or "queued-resources create" in line:
    state["vm"] = "ready"
elif "tpu-vm delete" in line or "queued-resources delete" in line:
    state["vm"] = "absent"
elif tool == "gsutil" and sys.argv[1:2] == ["ls"]:
    code = 1             # no such bucket yet
elif "--command" in argv and "python -m " in argv[-1]:
    state["runs"] += 1
    if os.environ.get("FAKE_PREEMPT_ONCE") and state["runs"] == 1:
        state["vm"], code = "preempted", 255    # the VM went away under ssh
    else:
        code = int(os.environ.get("FAKE_RUN_EXIT", "0"))
state_file.write_text(json.dumps(state))
sys.exit(code)
'''


@pytest.fixture
def fake_cloud(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("gcloud", "gsutil"):
        p = bin_dir / tool
        p.write_text(FAKE)
        p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def _launch(tmp_path, args, *, bin_dir=None, path=None, **env):
    log = tmp_path / "calls.jsonl"
    base = {"TPU_NAME": "t", "ZONE": "us-central2-b", "OUT": str(tmp_path / "out" / "run"),
            "TMPDIR": str(tmp_path), "FAKE_LOG": str(log), "HOME": str(tmp_path)}
    full = {**os.environ, **base, **env}
    if path is not None:
        full["PATH"] = path
    elif bin_dir is not None:
        full["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
    full = {k: v for k, v in full.items() if v is not None}
    p = subprocess.run(["bash", str(LAUNCH), *args], cwd=tmp_path, env=full, capture_output=True, text=True,
                       timeout=120)
    calls = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    return p, calls


def _planned(stdout: str) -> list[list[str]]:
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def _verb(argv: list[str]) -> str:
    words = [a for a in argv if not a.startswith("-")]
    if words[0] == "gsutil":
        return "gsutil " + words[1]
    if words[0] == "gcloud":
        return " ".join(words[3:5]) if words[1:3] == ["compute", "tpus"] else " ".join(words[:3])
    return words[0]


TRAIN = ["memr1_jax.train", "--config", "configs/tiny_cpu.py"]
SEQUENCE = ["tpu-vm describe", "tpu-vm create", "tpu-vm ssh", "git", "tpu-vm scp", "tpu-vm ssh", "gsutil ls",
            "gsutil mb", "tpu-vm ssh", "mkdir", "tpu-vm scp", "tpu-vm delete"]


@pytest.mark.parametrize("accelerator, hosts", [("v4-8", "a single host"), ("v4-32", "4 hosts")])
def test_dry_run_prints_the_whole_sequence_without_gcloud(tmp_path, accelerator, hosts):
    tools = tmp_path / "tools"      # a PATH holding what the script needs, and no gcloud
    tools.mkdir()
    for t in ("bash", "sed", "head", "dirname", "seq", "mkdir", "sleep", "git", "cat", "env"):
        os.symlink(shutil.which(t), tools / t)
    p, _ = _launch(tmp_path, ["--dry-run", *TRAIN], path=str(tools), ACCELERATOR=accelerator)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0].startswith(f"# TPU VM t: {accelerator} ({hosts})")
    plan = _planned(p.stdout)
    assert [_verb(c) for c in plan] == SEQUENCE
    create = plan[1]
    assert create[create.index("--accelerator-type") + 1] == accelerator
    run = plan[8]
    assert "--worker=all" in run and run[-1].count("python -m memr1_jax.train --config configs/tiny_cpu.py "
                                                  "--config.run_dir=runs/train/t "
                                                  "--config.checkpoint_dir=gs://t-memr1/t") == 1
    assert "--worker=0" in plan[10] and plan[10][6:8] == ["t:memr1-jax/runs/train/t", str(tmp_path / "out" / "run")]
    assert "jax[tpu]==0.10.2" in plan[2][-1]


@pytest.mark.parametrize("accelerator", ["v4-8", "v4-32"])
def test_a_real_run_executes_exactly_the_dry_run(tmp_path, fake_cloud, accelerator):
    dry, _ = _launch(tmp_path, ["--dry-run", *TRAIN], bin_dir=fake_cloud, ACCELERATOR=accelerator)
    cloud = [c for c in _planned(dry.stdout) if c[0] in ("gcloud", "gsutil")]
    p, calls = _launch(tmp_path, TRAIN, bin_dir=fake_cloud, ACCELERATOR=accelerator)
    assert p.returncode == 0, p.stderr
    assert calls[0][:3] == ["gcloud", "auth", "list"]     # the preflight's credential check
    assert calls[1:] == cloud
    assert (tmp_path / "memr1-jax-t.tar.gz").stat().st_size > 0     # the code really was packed


def test_a_failing_step_still_deletes_the_vm(tmp_path, fake_cloud):
    p, calls = _launch(tmp_path, TRAIN, bin_dir=fake_cloud, FAKE_RUN_EXIT="1")
    assert p.returncode == 1 and "error: memr1_jax.train failed on the TPU VM (exit 1)" in p.stderr
    verbs = [_verb(c) for c in calls]
    assert verbs[-1] == "tpu-vm delete" and "tpu-vm scp" in verbs and verbs.count("tpu-vm ssh") == 3


def test_keep_leaves_the_vm(tmp_path, fake_cloud):
    p, calls = _launch(tmp_path, ["--keep", "memr1_jax.evaluate", "--system", "rag"], bin_dir=fake_cloud)
    assert p.returncode == 0 and "kept TPU VM t" in p.stderr
    assert "tpu-vm delete" not in [_verb(c) for c in calls]
    run = next(c for c in calls if "python -m" in c[-1])
    assert run[-1].endswith("python -m memr1_jax.evaluate --system rag")


def test_a_preempted_vm_is_recreated_and_the_run_resumed(tmp_path, fake_cloud):
    p, calls = _launch(tmp_path, TRAIN, bin_dir=fake_cloud, FAKE_PREEMPT_ONCE="1", MAX_RETRIES="2")
    assert p.returncode == 0, p.stderr
    assert "pre-empted (exit 255); re-creating it and resuming (retry 1 of 2)" in p.stderr
    verbs = [_verb(c) for c in calls]
    assert verbs.count("tpu-vm create") == 2 and verbs.count("tpu-vm delete") == 2
    runs = [c for c in calls if "python -m memr1_jax.train" in c[-1]]
    assert len(runs) == 2 and runs[0] == runs[1]         # the same command: it resumes from the bucket
    assert "--config.checkpoint_dir=gs://t-memr1/t" in runs[1][-1]
    assert verbs[-2:] == ["tpu-vm scp", "tpu-vm delete"]


def test_spot_and_queued_resources(tmp_path, fake_cloud):
    p, _ = _launch(tmp_path, ["--dry-run", *TRAIN], bin_dir=fake_cloud, SPOT="1", QUEUED="1",
                   ACCELERATOR="v5litepod-16", PROJECT="proj")
    plan = _planned(p.stdout)
    assert p.stdout.startswith("# TPU VM t: v5litepod-16 (4 hosts), runtime v2-alpha-tpuv5-lite")
    create = plan[1]
    assert create[:5] == ["gcloud", "compute", "tpus", "queued-resources", "create"] and "--spot" in create
    assert create[create.index("--project") + 1] == "proj" and create[create.index("--node-id") + 1] == "t"
    assert plan[-1][:5] == ["gcloud", "compute", "tpus", "queued-resources", "delete"]


@pytest.mark.parametrize("env, message", [
    ({"TPU_NAME": None}, "error: TPU_NAME is not set"),
    ({"ZONE": None}, "error: ZONE is not set"),
    ({"ACCELERATOR": "v9-8"}, "error: ACCELERATOR=v9-8: not a TPU type"),
    ({"BUCKET": "s3://x"}, "error: BUCKET=s3://x: expected a gs:// URL"),
    ({"FAKE_ACCOUNT": ""}, "error: gcloud is not authenticated: run 'gcloud auth login'"),
    ({"DATA": "/no/such/folder"}, "error: DATA=/no/such/folder: no such file or folder"),
])
def test_clear_early_errors(tmp_path, fake_cloud, env, message):
    p, calls = _launch(tmp_path, TRAIN, bin_dir=fake_cloud, **env)
    assert p.returncode == 2 and message in p.stderr, p.stderr
    assert all(_verb(c) != "tpu-vm create" for c in calls)        # nothing was created


def test_gcloud_missing_is_a_clear_error(tmp_path):
    tools = tmp_path / "tools"
    tools.mkdir()
    for t in ("bash", "sed", "head", "dirname"):
        os.symlink(shutil.which(t), tools / t)
    p, _ = _launch(tmp_path, TRAIN, path=str(tools))
    assert p.returncode == 2 and "error: gcloud not found: install the Google Cloud SDK" in p.stderr


def test_every_argument_reaches_the_workers_quoted(tmp_path, fake_cloud):
    args = ["memr1_jax.evaluate", "--data", "my data/it's here", "--config.eval.judge=a;rm -rf /", "$(id)"]
    p, calls = _launch(tmp_path, args, bin_dir=fake_cloud)
    assert p.returncode == 0, p.stderr
    remote = next(c for c in calls if "python -m" in c[-1])[-1]
    command = remote.split("python -m ", 1)[1]
    assert shlex.split(command) == ["memr1_jax.evaluate", "--data", "my data/it's here",
                                    "--config.eval.judge=a;rm -rf /", "$(id)"]
