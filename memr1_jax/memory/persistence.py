"""Saving and loading a memory bank: one self-checking file, replaced atomically.

File layout (all integers little-endian):
    8 bytes   magic b"MR1BANK\\x01"
    8 bytes   header length H
    32 bytes  sha256 of everything after this field (header + array bytes)
    H bytes   UTF-8 JSON header: format version, array manifest (name, dtype, shape, offset,
              nbytes) and the host half (texts, timestamps, slot map, history, next_id,
              revision, lineage)
    ...       raw C-order array bytes, in manifest order

`save_bank` writes to a temp file in the destination folder, fsyncs it, `os.replace`s it over
the target and fsyncs the folder, so a crash (even kill -9) leaves either the old or the new
file, never a mix; the next save removes temp files whose writer died. It refuses non-finite
embeddings. `load_bank` checks magic, sizes, checksum and then every field (manifest shapes,
the host section's ids against the arrays, next_id above every id, finite embeddings) and
raises `BankFileError` naming the file and the problem.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import struct
from types import MappingProxyType

import numpy as np

from memr1_jax.files import atomic_write
from memr1_jax.memory.bank import BankArrays, BankHost, HistoryEntry, MemoryBank

MAGIC = b"MR1BANK\x01"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sQ32s")
_ARRAYS = ("embeddings", "valid", "ids", "speaker", "session", "stamp")
_DTYPES = {"embeddings": "float32", "valid": "bool", "ids": "int32", "speaker": "int32",
           "session": "int32", "stamp": "int32"}
_CHUNK = 1 << 22


class BankFileError(ValueError):
    """A bank file that cannot be read: `path` and `reason` say which and why."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"memory bank file {self.path}: {reason}")


def _host_to_json(host: BankHost) -> dict:
    return {
        "texts": {str(k): v for k, v in host.texts.items()},
        "timestamps": {str(k): v for k, v in host.timestamps.items()},
        "slot_of": {str(k): v for k, v in host.slot_of.items()},
        "history": [dataclasses.astuple(h) for h in host.history],
        "next_id": host.next_id,
        "revision": host.revision,
        "lineage": list(host.lineage),
    }


def _host_from_json(d: dict, path) -> BankHost:
    if not isinstance(d, dict):
        raise BankFileError(path, "malformed host section (not an object)")
    try:
        host = BankHost(
            texts=MappingProxyType({int(k): str(v) for k, v in d["texts"].items()}),
            timestamps=MappingProxyType({int(k): str(v) for k, v in d["timestamps"].items()}),
            slot_of=MappingProxyType({int(k): int(v) for k, v in d["slot_of"].items()}),
            history=tuple(HistoryEntry(*h) for h in d["history"]),
            next_id=int(d["next_id"]), revision=int(d["revision"]),
            lineage=tuple(int(x) for x in d["lineage"]))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise BankFileError(path, f"malformed host section ({type(e).__name__}: {str(e)[:200]})") from None
    ids = set(host.texts)
    if host.next_id < 0 or host.revision < 0 or any(i < 0 or i >= host.next_id for i in ids):
        raise BankFileError(path, f"host section: next_id {host.next_id} must exceed every memory id "
                                  f"(largest {max(ids, default=None)}) and be >= 0, revision >= 0")
    if set(host.slot_of) != ids or set(host.timestamps) - ids:
        raise BankFileError(path, "host section: texts, timestamps and slot map name different memory ids")
    return host


def _check_manifest(manifest, path) -> list[tuple[str, tuple[int, ...], int]]:
    """[(name, shape, nbytes)] of a well-formed manifest (raises BankFileError otherwise)."""
    if not isinstance(manifest, list) or len(manifest) != len(_ARRAYS):
        raise BankFileError(path, f"corrupt array manifest (expected {len(_ARRAYS)} entries)")
    out = []
    for m in manifest:
        if not isinstance(m, dict):
            raise BankFileError(path, "corrupt array manifest (an entry is not an object)")
        name, shape, nbytes = m.get("name"), m.get("shape"), m.get("nbytes")
        if name not in _DTYPES or m.get("dtype") != _DTYPES[name]:
            raise BankFileError(path, f"unexpected array {name!r} of dtype {m.get('dtype')!r}")
        ok_shape = (isinstance(shape, list) and len(shape) == (2 if name == "embeddings" else 1)
                    and all(type(x) is int and 0 <= x < 2 ** 40 for x in shape))
        if not ok_shape or type(nbytes) is not int:
            raise BankFileError(path, f"array {name!r}: bad shape {shape!r:.60} or size {nbytes!r:.30}")
        if int(np.prod(shape, dtype=object)) * np.dtype(_DTYPES[name]).itemsize != nbytes:
            raise BankFileError(path, f"array {name!r}: shape {shape} does not match {nbytes} bytes")
        out.append((name, tuple(shape), nbytes))
    if sorted(n for n, _, _ in out) != sorted(_ARRAYS):
        raise BankFileError(path, "corrupt array manifest (arrays missing or repeated)")
    return out


def save_bank(bank: MemoryBank, path: os.PathLike) -> pathlib.Path:
    """Write `bank` to `path` atomically (``files.atomic_write``)."""
    path = pathlib.Path(path)
    arrays = {name: np.ascontiguousarray(np.asarray(getattr(bank.arrays, name)), _DTYPES[name])
              for name in _ARRAYS}
    if not np.isfinite(arrays["embeddings"][arrays["valid"]]).all():
        raise ValueError(f"{path}: refusing to save a bank with non-finite embeddings")
    manifest, offset = [], 0
    for name, arr in arrays.items():
        manifest.append({"name": name, "dtype": str(arr.dtype), "shape": list(arr.shape),
                         "offset": offset, "nbytes": int(arr.nbytes)})
        offset += int(arr.nbytes)
    header = json.dumps({"format_version": FORMAT_VERSION, "arrays": manifest,
                         "host": _host_to_json(bank.host)}, ensure_ascii=False).encode("utf-8")
    h = hashlib.sha256(header)
    for arr in arrays.values():
        h.update(memoryview(arr).cast("B"))
    with atomic_write(path) as f:
        f.write(_PREFIX.pack(MAGIC, len(header), h.digest()))
        f.write(header)
        for arr in arrays.values():
            f.write(memoryview(arr).cast("B"))
    return path


def load_bank(path: os.PathLike) -> MemoryBank:
    """Read a bank written by `save_bank`; raises BankFileError on any damage."""
    path = pathlib.Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise BankFileError(path, "file does not exist") from None
    except OSError as e:
        raise BankFileError(path, f"cannot open ({e.strerror})") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        prefix = f.read(_PREFIX.size)
        if len(prefix) < _PREFIX.size:
            raise BankFileError(path, f"truncated: {size} bytes, shorter than the {_PREFIX.size}-byte prefix")
        magic, hlen, digest = _PREFIX.unpack(prefix)
        if magic != MAGIC:
            raise BankFileError(path, f"not a memory bank file (magic {magic!r}, expected {MAGIC!r})")
        if _PREFIX.size + hlen > size:
            raise BankFileError(path, f"truncated: header of {hlen} bytes does not fit in {size} bytes")
        raw_header = f.read(hlen)
        h = hashlib.sha256(raw_header)
        try:
            header = json.loads(raw_header.decode("utf-8"))
            manifest = header["arrays"]
            version = header["format_version"]
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as e:
            raise BankFileError(path, f"corrupt header ({type(e).__name__})") from None
        if version != FORMAT_VERSION:
            raise BankFileError(path, f"unsupported format version {version!r:.40} (expected {FORMAT_VERSION})")
        entries = _check_manifest(manifest, path)
        expected = sum(n for _, _, n in entries)
        have = size - _PREFIX.size - hlen
        if have != expected:
            raise BankFileError(path, f"truncated or padded: {have} bytes of array data, manifest says {expected}")
        arrays = {}
        for name, shape, _ in entries:
            arr = np.empty(shape, np.dtype(_DTYPES[name]))
            view = memoryview(arr).cast("B")
            got = f.readinto(view)
            if got != arr.nbytes:
                raise BankFileError(path, f"truncated inside array {name!r}")
            h.update(view)
            arrays[name] = arr
        if h.digest() != digest:
            raise BankFileError(path, "checksum mismatch: the file is corrupt")
    host = _host_from_json(header.get("host", {}) if isinstance(header, dict) else None, path)
    cap = arrays["valid"].shape[0]
    if any(arrays[n].shape[0] != cap for n in _ARRAYS) or arrays["embeddings"].ndim != 2:
        raise BankFileError(path, "arrays have inconsistent capacities")
    bad = [mid for mid, s in host.slot_of.items()
           if not (0 <= s < cap) or not arrays["valid"][s] or arrays["ids"][s] != mid or mid not in host.texts]
    if bad or int(arrays["valid"].sum()) != len(host.slot_of):
        raise BankFileError(path, f"host section disagrees with arrays (e.g. ids {bad[:5]})")
    if not np.isfinite(arrays["embeddings"][arrays["valid"]]).all():
        raise BankFileError(path, "non-finite embeddings in stored memories")
    return MemoryBank(BankArrays(**arrays), host)
