"""Conversations and questions: LoCoMo-format files, LongMemEval, MSC, and the embedded default dataset."""

from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
from typing import Sequence

from memr1_jax.data.changing import changing_split, make_changing_dataset
from memr1_jax.data.embedded import (EMBEDDED_TRAIN_IDS, EMBEDDED_VALIDATION_IDS, EmbeddedConfig,
                                     embedded_split, make_embedded_dataset)
from memr1_jax.data.locomo import (LOCOMO_LABELS, PAPER_LABELS, QA, Conversation, LocomoFormatError,
                                   LocomoWarning, QuestionRecord, Session, Split, Turn, category_counts, category_label,
                                   TRAIN_IDS, VALIDATION_IDS, content_hash,
                                   download_locomo, load_locomo, question_records, split_conversations,
                                   write_flat, write_nested)
from memr1_jax.data.longmemeval import load_longmemeval
from memr1_jax.data.msc import load_msc


FORMATS = ("auto", "locomo", "longmemeval", "msc")


def detect_format(source: str | os.PathLike) -> str:
    """locomo | longmemeval | msc, from the path and the first bytes of the file: a folder is
    LoCoMo, a ``.jsonl`` file MSC, a JSON file whose first object has a ``question_id`` LongMemEval."""
    path = pathlib.Path(source)
    if not path.is_file():
        return "locomo"   # a folder, or missing: load_locomo says what is wrong
    if path.suffix == ".jsonl":
        return "msc"
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    return "longmemeval" if head.lstrip().startswith(b"[") and b'"question_id"' in head else "locomo"


def load_conversations(source: str | os.PathLike = "embedded", fmt: str = "auto") -> tuple[Conversation, ...]:
    """``"embedded"`` for the generated default dataset, ``"changing"`` for the changing-facts
    generator's train / validation / test conversations (``"changing-people"``: its variant with
    slots said over time and relatives, ``memr1_jax.data.changing``), otherwise a file or folder in ``fmt``
    (auto: :func:`detect_format`): LoCoMo (see load_locomo), LongMemEval (load_longmemeval),
    MSC-Self-Instruct (load_msc). Sources joined by ``+`` are loaded and concatenated (e.g.
    ``changing+../shared/data/locomo10``: each keeps its own split)."""
    if "+" in str(source):
        convs = tuple(c for part in str(source).split("+") for c in load_conversations(part, fmt))
        dup = sorted(k for k, n in collections.Counter(c.id for c in convs).items() if n > 1)
        if dup:
            raise ValueError(f"data {source!r}: conversation ids {dup[:5]} occur in more than one source")
        return convs
    if str(source) == "embedded":
        return make_embedded_dataset()
    if str(source) == "changing":
        return make_changing_dataset()
    if str(source) == "changing-people":
        return make_changing_dataset(people=True)
    if fmt not in FORMATS:
        raise ValueError(f"data format {fmt!r}: expected one of {FORMATS}")
    fmt = detect_format(source) if fmt == "auto" else fmt
    return {"locomo": load_locomo, "longmemeval": load_longmemeval, "msc": load_msc}[fmt](source)


def parse_ids(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"conv-26, conv-27"`` (or a sequence of ids) -> ``("conv-26", "conv-27")``."""
    items = text.split(",") if isinstance(text, str) else text
    return tuple(i.strip() for i in items if i.strip())


def default_split(convs: tuple[Conversation, ...], train_ids: str | Sequence[str] = "",
                  validation_ids: str | Sequence[str] = "") -> Split:
    """The split of ``convs`` into train / validation / test conversations.

    Ids given (comma-separated or a sequence) choose train and validation; the rest is
    test. With none given: the embedded set's own split, the paper's for LoCoMo ids
    (conv-26 / conv-30 / the rest), and for any other data every conversation is test
    (``Split.note`` says so). An id not in the data is an error naming it and the ids there.
    """
    train, val = parse_ids(train_ids), parse_ids(validation_ids)
    if train or val:
        return split_conversations(convs, train, val)
    generated = changing_split(convs)
    gen_ids = {c.id for c in generated.all}
    rest = tuple(c for c in convs if c.id not in gen_ids)
    if generated.all and rest:   # mixed sources: each keeps its own split
        other = default_split(rest)
        return Split(train=generated.train + other.train, validation=generated.validation + other.validation,
                     test=generated.test + other.test, note=other.note)
    if generated.all:
        return generated
    ids = {c.id for c in convs}
    if set(EMBEDDED_TRAIN_IDS) <= ids:
        return split_conversations(convs, EMBEDDED_TRAIN_IDS, EMBEDDED_VALIDATION_IDS)
    if set(TRAIN_IDS + VALIDATION_IDS) <= ids:
        return split_conversations(convs)
    split = split_conversations(convs, (), ())
    return dataclasses.replace(split, note=(
        f"note: the data has no {'/'.join(TRAIN_IDS + VALIDATION_IDS)} (the paper's train/validation "
        f"conversations): all {len(convs)} conversations are test; choose others with --train-ids / "
        "--validation-ids (data.train_ids / data.validation_ids)"))


__all__ = [
    "QA", "Conversation", "Session", "Turn", "QuestionRecord", "Split", "LocomoFormatError",
    "LocomoWarning", "content_hash",
    "PAPER_LABELS", "LOCOMO_LABELS", "category_label", "category_counts", "load_locomo", "download_locomo",
    "write_flat", "write_nested", "split_conversations", "question_records", "EmbeddedConfig",
    "make_embedded_dataset", "embedded_split", "load_conversations", "default_split", "parse_ids",
    "load_longmemeval", "load_msc", "detect_format", "make_changing_dataset", "changing_split",
]
