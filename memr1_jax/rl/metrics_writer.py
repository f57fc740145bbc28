"""Training metrics: throughput/MFU helpers, a TensorBoard event writer without TF, JSONL,
and a tqdm progress bar.

TensorBoard's on-disk format is a TFRecord file of ``Event`` protobufs. Each record is
    uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)
and we only need three messages (field numbers from tensorflow/core/util/event.proto and
summary.proto): Event{wall_time:1 double, step:2 int64, file_version:3 string,
summary:5 Summary}, Summary{value:1 repeated Value}, Value{tag:1 string,
simple_value:2 float}. Encoding those by hand keeps TensorFlow (and tensorboardX) out.
"""

from __future__ import annotations

import json
import math
import os
import socket
import struct
import time
from typing import Any, Iterator, Mapping

import numpy as np

# ------------------------------------------------------------------ crc32c (Castagnoli)
_POLY = 0x82F63B78
_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ _POLY if _c & 1 else _c >> 1
    _TABLE.append(_c)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ------------------------------------------------------------------ protobuf encoding
def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 two's complement, as protobuf does
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint((field << 3) | wire)


def _len_field(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def encode_event(wall_time: float, step: int, *, file_version: str | None = None,
                 scalars: Mapping[str, float] | None = None) -> bytes:
    out = _key(1, 1) + struct.pack("<d", wall_time) + _key(2, 0) + _varint(int(step))
    if file_version is not None:
        out += _len_field(3, file_version.encode())
    if scalars:
        summary = b"".join(
            _len_field(1, _len_field(1, tag.encode()) + _key(2, 5) + struct.pack("<f", float(v)))
            for tag, v in scalars.items())
        out += _len_field(5, summary)
    return out


def encode_record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


# ------------------------------------------------------------------ reading (for tests / tools)
def read_records(path: str) -> Iterator[bytes]:
    """Yields record payloads, checking both CRCs (ValueError on corruption)."""
    with open(path, "rb") as f:
        while True:
            header = f.read(8)
            if not header:
                return
            if len(header) < 8:
                raise ValueError(f"{path}: truncated record header")
            (crc,) = struct.unpack("<I", f.read(4))
            if crc != masked_crc32c(header):
                raise ValueError(f"{path}: bad length crc")
            (n,) = struct.unpack("<Q", header)
            data = f.read(n)
            (crc,) = struct.unpack("<I", f.read(4))
            if len(data) != n or crc != masked_crc32c(data):
                raise ValueError(f"{path}: bad data crc")
            yield data


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            val, i = _read_varint(buf, i)
        elif wire == 1:
            val, i = buf[i:i + 8], i + 8
        elif wire == 5:
            val, i = buf[i:i + 4], i + 4
        elif wire == 2:
            n, i = _read_varint(buf, i)
            val, i = buf[i:i + n], i + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, val


def decode_event(data: bytes) -> dict:
    """{"wall_time", "step", "file_version"?, "scalars": {tag: value}}."""
    ev: dict = {"scalars": {}}
    for field, _, val in _fields(data):
        if field == 1:
            ev["wall_time"] = struct.unpack("<d", val)[0]
        elif field == 2:
            ev["step"] = val - (1 << 64) if val >= 1 << 63 else val
        elif field == 3:
            ev["file_version"] = val.decode()
        elif field == 5:
            for f2, _, value in _fields(val):
                if f2 == 1:
                    tag, num = None, None
                    for f3, _, v in _fields(value):
                        if f3 == 1:
                            tag = v.decode()
                        elif f3 == 2:
                            num = struct.unpack("<f", v)[0]
                    ev["scalars"][tag] = num
    return ev


# ------------------------------------------------------------------ writers
class EventFileWriter:
    """Appends scalar summaries to ``logdir/events.out.tfevents.<time>.<host>``."""

    def __init__(self, logdir: str | os.PathLike):
        os.makedirs(logdir, exist_ok=True)
        self.path = os.path.join(os.fspath(logdir),
                                 f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}")
        self._f = open(self.path, "ab")
        self._f.write(encode_record(encode_event(time.time(), 0, file_version="brain.Event:2")))
        self._f.flush()

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        finite = {k: float(v) for k, v in values.items() if _is_number(v)}
        if finite:
            self._f.write(encode_record(encode_event(time.time(), step, scalars=finite)))
            self._f.flush()

    def close(self):
        self._f.close()


def _is_scalar(v) -> bool:
    """A 0-d value that converts to float (NaN and inf included)."""
    if np.ndim(v) != 0 or isinstance(v, (str, bytes)):
        return False
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def _is_number(v) -> bool:
    return _is_scalar(v) and math.isfinite(float(v))


def json_safe(obj: Any, path: str = "") -> tuple[Any, list[str]]:
    """``obj`` with every non-finite float replaced by None, and the dotted paths replaced:
    JSON has no NaN, and Python's ``json`` would write a bare ``NaN`` no parser accepts."""
    if isinstance(obj, float) or isinstance(obj, np.floating):
        return (float(obj), []) if math.isfinite(obj) else (None, [path or "value"])
    if isinstance(obj, Mapping):
        out, bad = {}, []
        for k, v in obj.items():
            out[k], b = json_safe(v, f"{path}.{k}" if path else str(k))
            bad += b
        return out, bad
    if isinstance(obj, (list, tuple)):
        pairs = [json_safe(v, f"{path}[{i}]") for i, v in enumerate(obj)]
        return [p[0] for p in pairs], [b for p in pairs for b in p[1]]
    return obj, []


class MetricsWriter:
    """Writes each step's scalars to TensorBoard events, ``metrics.jsonl`` and (optionally)
    a tqdm bar showing a few key numbers."""

    BAR_KEYS = ("reward_mean", "kl", "entropy", "tokens_per_s", "mfu")

    def __init__(self, logdir: str | os.PathLike, total_steps: int | None = None, progress: bool = True,
                 initial_step: int = 0):
        self.logdir = os.fspath(logdir)
        self.events = EventFileWriter(self.logdir)
        self._jsonl = open(os.path.join(self.logdir, "metrics.jsonl"), "a")
        self.bar = None
        if progress:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total_steps, initial=initial_step, desc="rl", dynamic_ncols=True)

    def write(self, step: int, metrics: Mapping[str, Any]) -> dict:
        """Returns the row written: scalars, non-finite ones as None (JSON null) and named
        under "nonfinite"."""
        scalars = {k: float(np.asarray(v)) for k, v in metrics.items() if _is_scalar(np.asarray(v))}
        self.events.scalars(step, scalars)
        row, bad = json_safe(scalars)
        if bad:
            row["nonfinite"] = bad
        # No wall time here: a resumed run must write the same rows as an uninterrupted one.
        self._jsonl.write(json.dumps({"step": int(step), **row}, allow_nan=False) + "\n")
        self._jsonl.flush()
        if self.bar is not None:
            self.bar.set_postfix({k: f"{scalars[k]:.3g}" for k in self.BAR_KEYS if k in scalars}, refresh=False)
            self.bar.update(1)
        return row

    def close(self):
        self.events.close()
        self._jsonl.close()
        if self.bar is not None:
            self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def throughput_metrics(step_time_s: float, tokens: float, flops: float | None = None,
                       peak_flops_per_s: float | None = None) -> dict[str, float]:
    """tokens/s, step time and, given the step's model FLOPs (``update_flops``) and the
    hardware peak, achieved FLOP/s and MFU."""
    out = {"step_time_s": step_time_s, "tokens_per_s": tokens / max(step_time_s, 1e-9)}
    if flops is not None:
        out["flops_per_s"] = flops / max(step_time_s, 1e-9)
        if peak_flops_per_s:
            out["mfu"] = out["flops_per_s"] / peak_flops_per_s
    return out
