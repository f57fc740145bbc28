"""Reading a GGUF file's metadata (key/value header) without touching tensor data.

`gguf.GGUFReader` memory-maps the file and builds numpy views for every field
and tensor, which takes 4-17 s for our models. The tokenizer and the weight
loader only need the header, so this is a small direct parser of the GGUF
v2/v3 layout (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md):

    magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv | n_kv * (key, type, value)
    | n_tensors * (name, u32 n_dims, u64 dims[n_dims], u32 ggml_type, u64 offset)
    | padding to general.alignment | tensor data

Strings are (u64 length, utf-8 bytes). Numeric arrays are decoded with numpy in
one call, which is what keeps 150k-entry vocab arrays fast.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from typing import Any

import numpy as np

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32  # llama.cpp's default when general.alignment is absent

# GGUF metadata value types -> numpy dtype (little-endian); 8 = string, 9 = array.
_NUMERIC = {
    0: np.dtype("<u1"), 1: np.dtype("<i1"), 2: np.dtype("<u2"), 3: np.dtype("<i2"),
    4: np.dtype("<u4"), 5: np.dtype("<i4"), 6: np.dtype("<f4"), 7: np.dtype("?"),
    10: np.dtype("<u8"), 11: np.dtype("<i8"), 12: np.dtype("<f8"),
}
_STRING, _ARRAY = 8, 9


class GGUFFormatError(ValueError):
    """The file is not a GGUF file we can parse (names the file and the offending field)."""


@dataclasses.dataclass(frozen=True)
class GGUFTensorInfo:
    """Where one tensor lives. shape is in ggml order (fastest-moving dimension first)."""
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # relative to GGUFHeader.data_start


@dataclasses.dataclass(frozen=True)
class GGUFHeader:
    path: str
    version: int
    metadata: dict[str, Any]
    tensors: tuple[GGUFTensorInfo, ...]
    data_start: int  # absolute byte offset of the tensor data section


class _Cursor:
    """Sequential reader over a buffered file; avoids mapping the (large) tensor data."""

    def __init__(self, f, path: str):
        self.f = f
        self.path = path

    def read(self, n: int) -> bytes:
        b = self.f.read(n)
        if len(b) != n:
            raise GGUFFormatError(
                f"{self.path}: truncated GGUF header (wanted {n} bytes at offset "
                f"{self.f.tell() - len(b)}, got {len(b)})")
        return b

    def u32(self) -> int:
        return struct.unpack("<I", self.read(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.read(8))[0]

    def string(self, what: str) -> str:
        n = self.u64()
        if n > (1 << 31):
            raise GGUFFormatError(f"{self.path}: implausible string length {n} in {what}")
        raw = self.read(n)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            # llama.cpp vocabularies occasionally hold invalid UTF-8 pieces; keep them lossless-ish.
            return raw.decode("utf-8", errors="surrogateescape")

    def value(self, vtype: int, key: str):
        if vtype in _NUMERIC:
            dt = _NUMERIC[vtype]
            return np.frombuffer(self.read(dt.itemsize), dt)[0].item()
        if vtype == _STRING:
            return self.string(key)
        if vtype == _ARRAY:
            etype = self.u32()
            count = self.u64()
            if count > (1 << 32):
                raise GGUFFormatError(f"{self.path}: implausible array length {count} for key {key!r}")
            if etype in _NUMERIC:
                dt = _NUMERIC[etype]
                return np.frombuffer(self.read(dt.itemsize * count), dt).tolist()
            if etype == _STRING:
                return [self.string(key) for _ in range(count)]
            if etype == _ARRAY:
                return [self.value(_ARRAY, key) for _ in range(count)]
            raise GGUFFormatError(f"{self.path}: unknown array element type {etype} for key {key!r}")
        raise GGUFFormatError(f"{self.path}: unknown metadata value type {vtype} for key {key!r}")


def read_gguf_header(path: os.PathLike | str, with_tensors: bool = True) -> GGUFHeader:
    """Parse the metadata and (optionally) the tensor table of a GGUF file; no tensor data is read."""
    path = os.fspath(path)
    with open(path, "rb") as raw:
        f = _Cursor(raw, path)
        magic = raw.read(4)
        if magic != GGUF_MAGIC:
            raise GGUFFormatError(f"{path}: not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})")
        version = f.u32()
        if version not in (2, 3):
            raise GGUFFormatError(
                f"{path}: unsupported GGUF version {version} (supported: 2, 3; "
                "big-endian files are not supported)")
        n_tensors = f.u64()
        n_kv = f.u64()
        if n_kv > 1_000_000 or n_tensors > 10_000_000:
            raise GGUFFormatError(f"{path}: implausible counts n_kv={n_kv}, n_tensors={n_tensors}")
        meta: dict[str, Any] = {}
        for _ in range(n_kv):
            key = f.string("metadata key")
            vtype = f.u32()
            meta[key] = f.value(vtype, key)
        tensors: list[GGUFTensorInfo] = []
        data_start = -1
        if with_tensors:
            for _ in range(n_tensors):
                name = f.string("tensor name")
                n_dims = f.u32()
                if n_dims > 8:
                    raise GGUFFormatError(f"{path}: tensor {name!r} has {n_dims} dims")
                dims = struct.unpack(f"<{n_dims}Q", f.read(8 * n_dims))
                ggml_type = f.u32()
                offset = f.u64()
                tensors.append(GGUFTensorInfo(name, tuple(dims), ggml_type, offset))
            align = int(meta.get("general.alignment", DEFAULT_ALIGNMENT))
            pos = raw.tell()
            data_start = (pos + align - 1) // align * align
    return GGUFHeader(path, version, meta, tuple(tensors), data_start)


def read_gguf_metadata(path: os.PathLike | str) -> dict[str, Any]:
    """All metadata key/values of a GGUF file as Python values (ints, floats, bools, str, lists).

    Arrays become Python lists. Tensor infos and tensor data are skipped.
    """
    return read_gguf_header(path, with_tensors=False).metadata
