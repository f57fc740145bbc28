"""files.py's one write-then-rename: a kill -9 mid-write leaves the old file or the new one and
no partial file once the next write has run; an error leaves the target as it was and no temp;
every writer of the package goes through it."""

import os
import pathlib
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from memr1_jax import files

REPO = pathlib.Path(__file__).resolve().parents[1]

_WRITER = """
import sys
from memr1_jax.files import atomic_write
chunk = b"N" * (1 << 20)
with atomic_write(sys.argv[1]) as f:
    for _ in range(int(sys.argv[2])):
        f.write(chunk)
        f.flush()
"""


def _temps(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_kill9_during_a_large_write_leaves_the_old_file_then_no_temp(tmp_path):
    target = tmp_path / "bank.bin"
    old = b"old contents\n" * 1000
    target.write_bytes(old)
    mb = 1024   # a GiB: written over seconds on any machine, so the kill lands mid-write
    p = subprocess.Popen([sys.executable, "-c", _WRITER, str(target), str(mb)], cwd=REPO)
    wait_for = random.Random(os.getpid()).randint(1, 64) << 20    # bytes in the temp before the kill
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        sizes = [q.stat().st_size for q in tmp_path.glob(".bank.bin.*.tmp") if q.exists()]
        if sizes and max(sizes) >= wait_for:
            break
        time.sleep(0.01)
    assert p.poll() is None, "the writer finished before the kill"
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    assert target.read_bytes() == old                    # the old file, whole
    assert len(_temps(tmp_path)) == 1                    # the killed writer's temp
    files.atomic_write_text(target, "new\n")             # the next write of the target removes it
    assert target.read_text() == "new\n" and _temps(tmp_path) == []


def test_a_finished_write_replaces_the_file_whole(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    subprocess.run([sys.executable, "-c", _WRITER, str(target), "3"], cwd=REPO, check=True, timeout=120)
    assert target.read_bytes() == b"N" * (3 << 20) and _temps(tmp_path) == []


def test_an_error_mid_write_leaves_the_target_as_it_was_and_no_temp(tmp_path):
    target = tmp_path / "t.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with files.atomic_write(target, "w") as f:
            f.write("half")
            raise RuntimeError("producer failed")
    with pytest.raises(KeyboardInterrupt):
        files.atomic_write_by_name(target, lambda tmp: (pathlib.Path(tmp).write_text("half"), _interrupt()))
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(OSError):
        with files.atomic_folder(folder) as tmp:
            (tmp / "model.safetensors").write_bytes(b"partial")
            raise OSError("disk full")
    assert target.read_text() == "old" and os.listdir(folder) == ["config.json"]
    assert _temps(tmp_path) == []


def _interrupt():
    raise KeyboardInterrupt


def test_a_tensor_that_fails_to_produce_leaves_no_safetensors_file(tmp_path):
    # write_safetensors used to leave "<name>.partial" behind.
    from memr1_jax.weights.safetensors_io import write_safetensors

    def boom():
        raise ValueError("NaN in layer 3")
    with pytest.raises(ValueError, match="layer 3"):
        write_safetensors(tmp_path / "model.safetensors", [
            ("a", (2,), np.float32, lambda: np.ones(2, np.float32)), ("b", (2,), np.float32, boom)])
    assert os.listdir(tmp_path) == []


def test_a_folder_written_whole_replaces_the_old_one(tmp_path):
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "old.json").write_text("1")
    with files.atomic_folder(folder) as tmp:
        (tmp / "new.json").write_text("2")
        assert not (folder / "new.json").exists()        # invisible until the block ends
    assert os.listdir(folder) == ["new.json"] and _temps(tmp_path) == []
    with files.atomic_folder(folder, overwrite=False) as tmp:   # a concurrent writer was first: theirs stays
        (tmp / "mine.json").write_text("3")
    assert os.listdir(folder) == ["new.json"] and _temps(tmp_path) == []


def test_every_rename_of_the_package_is_files_py():
    """One write-then-rename helper: any other os.replace / os.rename / Path.replace / Path.rename
    in memr1_jax/ is a writer that skipped it (the ones allowed are listed with their reason)."""
    allowed = {("memr1_jax/eval/run.py", "os.replace(path, aside)")}   # moves a stale file aside, no write
    found = []
    for f in sorted((REPO / "memr1_jax").rglob("*.py")):
        rel = str(f.relative_to(REPO))
        if rel == "memr1_jax/files.py":
            continue
        for line in f.read_text().splitlines():
            m = re.search(r"\bos\.(replace|rename)\(.*|\.(replace|rename)\((tmp|temp)\b.*", line)
            if m and (rel, m.group(0).strip()) not in allowed:
                found.append(f"{rel}: {line.strip()}")
    assert not found, "\n".join(found)


def test_a_library_that_replaces_the_temp_gets_it_synced_with_the_usual_mode(tmp_path, monkeypatch):
    """safetensors' save_file puts a new 0600 file at the name it is given: the saved file must be
    the one fsynced before the rename and must have the mode any other saved file has."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    from memr1_jax.files import atomic_write_by_name, atomic_write_text
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_ino), real_fsync(fd)))
    target = atomic_write_by_name(tmp_path / "w.safetensors", lambda name: save_file({"w": np.arange(3.0)}, name))
    assert os.stat(target).st_ino in synced
    plain = atomic_write_text(tmp_path / "plain.txt", "x")
    assert os.stat(target).st_mode == os.stat(plain).st_mode
    np.testing.assert_array_equal(load_file(str(target))["w"], np.arange(3.0))
