"""Conversations and questions: LoCoMo (read from disk) and the embedded default dataset."""

from __future__ import annotations

import os

from memr1_jax.data.embedded import (EMBEDDED_TRAIN_IDS, EMBEDDED_VALIDATION_IDS, EmbeddedConfig,
                                     embedded_split, make_embedded_dataset)
from memr1_jax.data.locomo import (LOCOMO_LABELS, PAPER_LABELS, QA, Conversation, LocomoFormatError,
                                   LocomoWarning, QuestionRecord, Session, Split, Turn, category_counts, category_label,
                                   content_hash,
                                   download_locomo, load_locomo, question_records, split_conversations,
                                   write_flat, write_nested)


def load_conversations(source: str | os.PathLike = "embedded") -> tuple[Conversation, ...]:
    """``"embedded"`` for the generated default dataset, otherwise a LoCoMo path (see load_locomo)."""
    if str(source) == "embedded":
        return make_embedded_dataset()
    return load_locomo(source)


def default_split(convs: tuple[Conversation, ...]) -> Split:
    """The paper split for LoCoMo ids (conv-26/conv-30/rest), the analogous one for the embedded set."""
    ids = {c.id for c in convs}
    if set(EMBEDDED_TRAIN_IDS) <= ids:
        return split_conversations(convs, EMBEDDED_TRAIN_IDS, EMBEDDED_VALIDATION_IDS)
    return split_conversations(convs)


__all__ = [
    "QA", "Conversation", "Session", "Turn", "QuestionRecord", "Split", "LocomoFormatError",
    "LocomoWarning", "content_hash",
    "PAPER_LABELS", "LOCOMO_LABELS", "category_label", "category_counts", "load_locomo", "download_locomo",
    "write_flat", "write_nested", "split_conversations", "question_records", "EmbeddedConfig",
    "make_embedded_dataset", "embedded_split", "load_conversations", "default_split",
]
