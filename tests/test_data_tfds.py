"""tfds builders (array_record + as_data_source) work without TensorFlow. tensorflow-datasets is
the optional ``tfds`` extra, which the test extra installs: missing, these tests fail."""

import sys

import pytest
import tensorflow_datasets as tfds

from memr1_jax.data.embedded import embedded_split
from memr1_jax.data.locomo import load_locomo, question_records, split_conversations
from memr1_jax.data.tfds_builders import (Memr1EmbeddedQa, Memr1LocomoQa, decode_record,
                                          prepare_embedded_qa, prepare_locomo_qa)


def _expected(split):
    return {name: [(r.conversation_id, r.qa_index, r.qa.category, r.qa.question, r.qa.answer, list(r.qa.evidence))
                   for r in question_records(convs)]
            for name, convs in split.as_dict().items()}


def _read(builder_or_name, data_dir=None):
    out = {}
    for name in ("train", "validation", "test"):
        if isinstance(builder_or_name, str):
            ds = tfds.data_source(builder_or_name, data_dir=str(data_dir), split=name)
        else:
            ds = builder_or_name.as_data_source(split=name)
        recs = [decode_record(ds[i]) for i in range(len(ds))]
        out[name] = [(r["conversation_id"], r["qa_index"], r["category"], r["question"], r["answer"], r["evidence"])
                     for r in recs]
    return out


def test_embedded_builder_round_trip(tmp_path):
    b = prepare_embedded_qa(tmp_path)
    want = _expected(embedded_split())
    assert _read(b) == want
    assert {k: len(v) for k, v in _read("memr1_embedded_qa", tmp_path).items()} == {k: len(v) for k, v in want.items()}
    rec = decode_record(b.as_data_source(split="train")[0])
    assert rec["label"] in ("single-hop", "temporal", "multi-hop", "open-domain")
    assert Memr1EmbeddedQa(data_dir=str(tmp_path)).info.splits["test"].num_examples == len(want["test"])
    assert "tensorflow" not in sys.modules


def test_locomo_builder_counts(locomo_dir, tmp_path):
    b = prepare_locomo_qa(locomo_dir, tmp_path)
    got = _read(b)
    assert {k: len(v) for k, v in got.items()} == {"train": 152, "validation": 81, "test": 1307}
    assert got == _expected(split_conversations(load_locomo(locomo_dir)))
    # Reading back a prepared dataset needs no source.
    assert len(tfds.data_source("memr1_locomo_qa", data_dir=str(tmp_path), split="test")) == 1307
    assert "tensorflow" not in sys.modules


def test_locomo_builder_needs_source(tmp_path):
    with pytest.raises(ValueError, match="needs source"):
        Memr1LocomoQa(data_dir=str(tmp_path)).download_and_prepare()
