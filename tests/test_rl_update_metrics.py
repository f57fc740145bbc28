"""The TensorBoard/JSONL metrics writer and throughput helpers."""

import json
import struct

import numpy as np
import pytest

from memr1_jax.rl import metrics_writer as mw


def test_crc32c_known_vectors():
    assert mw.crc32c(b"") == 0
    assert mw.crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    assert mw.crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 test vector


def test_event_file_roundtrip_and_jsonl(tmp_path):
    with mw.MetricsWriter(tmp_path, total_steps=2, progress=False) as w:
        w.write(1, {"reward_mean": np.float32(0.25), "kl": 0.5, "name": "skip-me", "bad": float("nan")})
        w.write(2, {"reward_mean": 0.75, "step_time_s": 1.5})
    files = list(tmp_path.glob("events.out.tfevents.*"))
    assert len(files) == 1
    events = [mw.decode_event(r) for r in mw.read_records(str(files[0]))]
    assert events[0]["file_version"] == "brain.Event:2"
    assert [e["step"] for e in events[1:]] == [1, 2]
    assert events[1]["scalars"] == {"reward_mean": 0.25, "kl": 0.5}
    assert events[2]["scalars"]["reward_mean"] == 0.75
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [1, 2] and lines[0]["kl"] == 0.5 and "name" not in lines[0]


def test_corrupt_record_is_detected(tmp_path):
    w = mw.EventFileWriter(tmp_path)
    w.scalars(3, {"x": 1.0})
    w.close()
    data = bytearray(open(w.path, "rb").read())
    data[-6] ^= 0xFF
    open(w.path, "wb").write(bytes(data))
    with pytest.raises(ValueError, match="crc"):
        list(mw.read_records(w.path))


def test_record_framing_is_tfrecord():
    rec = mw.encode_record(b"abc")
    (n,) = struct.unpack("<Q", rec[:8])
    assert n == 3 and rec[12:15] == b"abc" and len(rec) == 8 + 4 + 3 + 4


def test_throughput_and_mfu():
    m = mw.throughput_metrics(2.0, tokens=1000, flops=4e9, peak_flops_per_s=1e10)
    assert m["tokens_per_s"] == 500 and m["flops_per_s"] == 2e9 and abs(m["mfu"] - 0.2) < 1e-12
