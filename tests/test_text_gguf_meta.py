"""GGUF header parser: equivalence with the `gguf` package's writer/reader, garbage input."""

import pathlib

import numpy as np
import pytest

import gguf

from _offline import fetched
from memr1_jax import assets  # noqa: E402
from memr1_jax.text.gguf_meta import GGUFFormatError, read_gguf_header, read_gguf_metadata  # noqa: E402


def _write_synthetic(path: pathlib.Path) -> dict:
    """A small GGUF written by the reference writer, with every value type and two tensors."""
    w = gguf.GGUFWriter(str(path), "llama")
    expected = {
        "general.architecture": "llama",
        "t.u8": 200, "t.i8": -100, "t.u16": 60000, "t.i16": -30000, "t.u32": 4_000_000_000,
        "t.i32": -2_000_000_000, "t.f32": 1.5, "t.bool": True, "t.u64": 2**40, "t.i64": -(2**40),
        "t.f64": 3.141592653589793, "t.str": "héllo ▁ 世界",
        "t.arr_i32": [1, -2, 3], "t.arr_str": ["a", "", "ü b"], "t.arr_f32": [0.5, -1000.0],
    }
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4_000_000_000)
    w.add_int32("t.i32", -2_000_000_000)
    w.add_float32("t.f32", 1.5)
    w.add_bool("t.bool", True)
    w.add_uint64("t.u64", 2**40)
    w.add_int64("t.i64", -(2**40))
    w.add_float64("t.f64", 3.141592653589793)
    w.add_string("t.str", "héllo ▁ 世界")
    w.add_array("t.arr_i32", [1, -2, 3])
    w.add_array("t.arr_str", ["a", "", "ü b"])
    w.add_array("t.arr_f32", [0.5, -1000.0])
    w.add_tensor("a.weight", np.arange(12, dtype=np.float32).reshape(3, 4))
    w.add_tensor("b.bias", np.ones(5, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return expected


def test_synthetic_file_matches_reference_reader(tmp_path):
    path = tmp_path / "s.gguf"
    expected = _write_synthetic(path)
    header = read_gguf_header(path)
    meta = header.metadata
    for k, v in expected.items():
        assert meta[k] == v, k
    assert isinstance(meta["t.i32"], int) and isinstance(meta["t.bool"], bool)
    # Independent reference: gguf's own reader on the same file.
    ref = gguf.GGUFReader(str(path))
    assert set(meta) == {k for k in ref.fields if not k.startswith("GGUF.")}
    assert [t.name for t in header.tensors] == [t.name for t in ref.tensors]
    for ours, theirs in zip(header.tensors, ref.tensors):
        assert ours.shape == tuple(int(d) for d in theirs.shape)
        assert ours.ggml_type == int(theirs.tensor_type)
        assert header.data_start + ours.offset == theirs.data_offset
    # Tensor data really starts where we say: read it back.
    raw = path.read_bytes()
    a = np.frombuffer(raw, np.float32, count=12, offset=header.data_start + header.tensors[0].offset)
    np.testing.assert_array_equal(a, np.arange(12, dtype=np.float32))


def test_real_model_header_fields():
    path = fetched(assets.fetch_payload, assets.SMOLLM2_135M_GGUF)
    header = read_gguf_header(path)
    m = header.metadata
    assert m["general.architecture"] == "llama"
    assert m["llama.block_count"] == 30 and m["llama.embedding_length"] == 576
    assert len(m["tokenizer.ggml.tokens"]) == 49152
    assert m["tokenizer.ggml.tokens"][:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert len(header.tensors) == 272 and header.data_start % 32 == 0
    assert header.tensors[0].name == "token_embd.weight"
    assert header.tensors[0].shape == (576, 49152)
    assert read_gguf_metadata(path)["tokenizer.ggml.pre"] == "smollm"


@pytest.mark.parametrize("blob, needle", [
    (b"", "not a GGUF"),
    (b"GGML\x03\x00\x00\x00" + b"\x00" * 16, "not a GGUF"),
    (b"GGUF\x07\x00\x00\x00" + b"\x00" * 16, "unsupported GGUF version 7"),
    (b"GGUF\x03\x00\x00\x00" + (0).to_bytes(8, "little") + (5).to_bytes(8, "little"), "truncated"),
])
def test_garbage_raises_clear_error(tmp_path, blob, needle):
    p = tmp_path / "bad.gguf"
    p.write_bytes(blob)
    with pytest.raises(GGUFFormatError, match=needle) as ei:
        read_gguf_metadata(p)
    assert "bad.gguf" in str(ei.value)


def test_unknown_value_type_and_truncation_are_reported(tmp_path):
    path = tmp_path / "s.gguf"
    _write_synthetic(path)
    raw = path.read_bytes()
    # Corrupt the type of the first key/value (right after "general.architecture").
    key = b"general.architecture"
    i = raw.index(key) + len(key)
    bad = raw[:i] + (99).to_bytes(4, "little") + raw[i + 4:]
    (tmp_path / "t.gguf").write_bytes(bad)
    with pytest.raises(GGUFFormatError, match="unknown metadata value type 99"):
        read_gguf_metadata(tmp_path / "t.gguf")
    # Cut the file inside the metadata section.
    (tmp_path / "c.gguf").write_bytes(raw[:i + 10])
    with pytest.raises(GGUFFormatError, match="truncated"):
        read_gguf_metadata(tmp_path / "c.gguf")
