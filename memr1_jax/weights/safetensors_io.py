"""Minimal safetensors reading/writing over numpy, with bfloat16 via ml_dtypes.

Format: u64 little-endian header length N | N bytes of JSON {name: {dtype, shape,
data_offsets: [begin, end]}, "__metadata__": {...}} | raw little-endian data.
Reading memory-maps the file, so a tensor costs memory only when it is copied.
"""

from __future__ import annotations

import json
import os
import struct

import ml_dtypes
import numpy as np

from memr1_jax.files import atomic_write

DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype("<i8"), "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"), "I8": np.dtype("i1"), "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
_CODES = {v: k for k, v in DTYPES.items()}


class SafetensorsError(ValueError):
    pass


class SafetensorsFile:
    """Lazily readable safetensors file: ``.shapes`` from the header, ``.get(name)`` copies one tensor."""

    def __init__(self, path):
        self.path = os.fspath(path)
        size = os.path.getsize(self.path)
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise SafetensorsError(f"{self.path}: too short to be a safetensors file")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, 100 << 20):
                raise SafetensorsError(f"{self.path}: implausible header length {n}")
            try:
                header = json.loads(f.read(n))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise SafetensorsError(f"{self.path}: unreadable header ({err})") from None
        self.metadata = header.pop("__metadata__", None) or {}
        self.data_start = 8 + n
        self.entries = {}
        for name, info in header.items():
            try:
                dt = DTYPES[info["dtype"]]
                shape = tuple(int(s) for s in info["shape"])
                begin, end = (int(v) for v in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise SafetensorsError(f"{self.path}: tensor {name!r}: bad header entry {info!r}") from None
            if end - begin != dt.itemsize * int(np.prod(shape)) or self.data_start + end > size:
                raise SafetensorsError(f"{self.path}: tensor {name!r}: data_offsets {begin}..{end} do not fit "
                                       f"shape {shape} {info['dtype']} in a {size}-byte file")
            self.entries[name] = (dt, shape, begin)
        self._mm = None

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: v[1] for k, v in self.entries.items()}

    def dtype(self, name: str) -> np.dtype:
        return self.entries[name][0]

    def get(self, name: str) -> np.ndarray:
        dt, shape, begin = self.entries[name]
        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        start = self.data_start + begin
        raw = self._mm[start:start + dt.itemsize * int(np.prod(shape))]
        return np.array(raw.view(dt).reshape(shape), copy=True)

    def close(self):
        self._mm = None


def write_safetensors(path, tensors, metadata: dict | None = None) -> None:
    """Write tensors given as an ordered list of (name, shape, dtype, producer) where
    ``producer()`` returns the array; arrays are produced and written one at a time."""
    header, offset = {}, 0
    for name, shape, dtype, _ in tensors:
        dtype = np.dtype(dtype)
        if dtype not in _CODES:
            raise SafetensorsError(f"{path}: tensor {name!r}: dtype {dtype} cannot be stored")
        nbytes = dtype.itemsize * int(np.prod(shape))
        header[name] = {"dtype": _CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt", **(metadata or {})}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # keep tensor data 8-byte aligned
    with atomic_write(path) as f:   # a tensor that fails to produce leaves no file behind
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape, dtype, produce in tensors:
            x = np.ascontiguousarray(produce(), dtype=np.dtype(dtype))
            if x.shape != tuple(shape):
                raise SafetensorsError(f"{path}: tensor {name!r} produced shape {x.shape}, declared {shape}")
            f.write(x.astype(x.dtype.newbyteorder("<"), copy=False).tobytes())
