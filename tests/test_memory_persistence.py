"""Saving/loading banks: round trip, corruption detection, and kill -9 during a save."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from memr1_jax.memory import (BankFileError, Event, HashingTestEncoder, MemoryOp, apply,
                              empty_bank, load_bank, save_bank)

ENC = HashingTestEncoder(dim=16)
REPO = pathlib.Path(__file__).resolve().parents[1]


def small_bank():
    b, _ = apply(empty_bank(16, capacity=2), [MemoryOp(Event.ADD, None, "Name is John"),
                                              MemoryOp(Event.ADD, None, "Loves ☕ and 東京", speaker=1)],
                 embed_fn=ENC, timestamp="1:56 pm on 8 May, 2023", session=1)
    b, _ = apply(b, [MemoryOp(Event.UPDATE, 0, "Name is John Smith"), MemoryOp(Event.DELETE, 1),
                     MemoryOp(Event.ADD, None, "third")], embed_fn=ENC)
    return b


def assert_same(a, b):
    for f in ("embeddings", "valid", "ids", "speaker", "session", "stamp"):
        np.testing.assert_array_equal(np.asarray(getattr(a.arrays, f)), np.asarray(getattr(b.arrays, f)))
    assert dict(a.host.texts) == dict(b.host.texts) and dict(a.host.slot_of) == dict(b.host.slot_of)
    assert dict(a.host.timestamps) == dict(b.host.timestamps) and a.host.history == b.host.history
    assert (a.host.next_id, a.host.revision, a.host.lineage) == (b.host.next_id, b.host.revision, b.host.lineage)


def test_roundtrip(tmp_path):
    b = small_bank()
    p = save_bank(b, tmp_path / "bank.mr1")
    b2 = load_bank(p)
    assert_same(b, b2)
    b3, rep = apply(b2, [MemoryOp(Event.ADD, None, "after load")], embed_fn=ENC)
    assert rep.added_ids == [3]               # next_id survived: ids are never reused
    assert [f.name for f in tmp_path.iterdir()] == ["bank.mr1"]   # no temp file left behind


@pytest.mark.parametrize("damage", ["truncate_arrays", "truncate_header", "flip_byte", "magic", "empty"])
def test_corrupt_files_name_the_file_and_problem(tmp_path, damage):
    p = save_bank(small_bank(), tmp_path / "bank.mr1")
    data = bytearray(p.read_bytes())
    if damage == "truncate_arrays":
        data = data[:-7]
    elif damage == "truncate_header":
        data = data[:60]
    elif damage == "flip_byte":
        data[-3] ^= 0xFF
    elif damage == "magic":
        data[:4] = b"JUNK"
    else:
        data = b""
    p.write_bytes(bytes(data))
    with pytest.raises(BankFileError) as ei:
        load_bank(p)
    assert str(p) in str(ei.value)
    want = {"truncate_arrays": "truncated", "truncate_header": "truncated", "flip_byte": "checksum",
            "magic": "not a memory bank file", "empty": "truncated"}[damage]
    assert want in ei.value.reason
    with pytest.raises(BankFileError, match="does not exist"):
        load_bank(tmp_path / "missing.mr1")


_CHILD = r"""
import sys, numpy as np
sys.path.insert(0, {repo!r})
from memr1_jax.memory import bank_from_arrays, save_bank
rng = np.random.default_rng(0)
big = bank_from_arrays(rng.standard_normal((200_000, 384), dtype=np.float32))  # ~300 MB
print("saving", flush=True)
save_bank(big, {path!r})
print("done", flush=True)
"""


def test_kill_9_during_save_keeps_previous_bank(tmp_path):
    path = tmp_path / "bank.mr1"
    good = small_bank()
    save_bank(good, path)
    before = path.read_bytes()
    child = subprocess.Popen([sys.executable, "-c", _CHILD.format(repo=str(REPO), path=str(path))],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "saving"
        deadline = time.time() + 120
        tmp = []
        while time.time() < deadline and not tmp:   # kill as soon as the temp file exists
            tmp = [f for f in tmp_path.iterdir() if f.name.endswith(".tmp")]
            time.sleep(0.002)
        assert tmp, "child never created its temp file"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert path.read_bytes() == before            # the old file was never touched
    assert_same(good, load_bank(path))
