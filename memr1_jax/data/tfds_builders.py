"""tensorflow-datasets builders for LoCoMo questions and the embedded dataset, without TensorFlow.

The optional ``tfds`` extra (``pip install -e ".[tfds]"``): train and evaluate read the JSON
directly (all of LoCoMo in about 0.06 s; README "Data" has the measurement), these builders serve
a pipeline that wants array_record files and random access (grain, MaxText-style readers).

Only the TF-free path of tfds is used: a ``GeneratorBasedBuilder`` writing
``array_record`` files, prepared with ``download_and_prepare()`` and read
back with ``builder.as_data_source(split=...)`` or
``tfds.data_source(name, data_dir=...)`` (random access, numpy dicts).
``tfds.load``/``as_numpy`` need TensorFlow and are not used.

One record per question (adversarial category 5 excluded): conversation_id,
qa_index (position in that conversation's qa list), category (LoCoMo number),
label (paper naming), question, answer, evidence. Splits are by conversation
(train / validation / test); records keep the conversation order
(shuffling disabled). Text fields come back as bytes, as tfds returns them.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import utils as tfds_utils

from memr1_jax.data.embedded import embedded_split
from memr1_jax.data.locomo import Conversation, Split, load_locomo, question_records, split_conversations


def _features() -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        "conversation_id": tfds.features.Text(),
        "qa_index": np.int32,
        "category": np.int32,
        "label": tfds.features.Text(),
        "question": tfds.features.Text(),
        "answer": tfds.features.Text(),
        "evidence": tfds.features.Sequence(tfds.features.Text()),
    })


def _examples(convs: Sequence[Conversation]):
    for r in question_records(convs):
        yield f"{r.conversation_id}/{r.qa_index:05d}", {
            "conversation_id": r.conversation_id, "qa_index": r.qa_index, "category": r.qa.category,
            "label": r.qa.label, "question": r.qa.question, "answer": r.qa.answer,
            "evidence": list(r.qa.evidence)}


class _QuestionsBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared body; subclasses say where the conversations come from."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "One record per question, split by conversation."}

    @tfds_utils.classproperty
    @classmethod
    def code_path(cls):
        # No checksums file or metadata next to this module. Also, tfds'
        # own lookup needs the `importlib_resources` backport, which is
        # not installed.
        return None

    def __init__(self, *, file_format: str = "array_record", **kwargs):
        super().__init__(file_format=file_format, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        # DatasetInfo directly: dataset_info_from_configs() would look for
        # metadata files (README, CITATIONS) next to this module.
        return tfds.core.DatasetInfo(builder=self, description=self.__doc__, features=_features(),
                                     disable_shuffling=True)

    def _split(self) -> Split:
        raise NotImplementedError

    def _split_generators(self, dl_manager):
        return {name: self._generate_examples(convs) for name, convs in self._split().as_dict().items()}

    def _generate_examples(self, convs):
        yield from _examples(convs)


class Memr1LocomoQa(_QuestionsBuilder):
    """LoCoMo questions (categories 1-4), Memory-R1 split: train conv-26, validation conv-30, test the rest.

    ``source``: a directory of flat per-conversation files or the nested
    ``locomo10.json`` (only needed to prepare; reading back does not need it).
    """

    def __init__(self, *, source: str | os.PathLike | None = None, **kwargs):
        self._source = source
        super().__init__(**kwargs)

    def _split(self) -> Split:
        if self._source is None:
            raise ValueError("Memr1LocomoQa needs source=<LoCoMo dir or locomo10.json> to prepare the dataset")
        return split_conversations(load_locomo(self._source))


class Memr1EmbeddedQa(_QuestionsBuilder):
    """Questions of the embedded generated dataset: train emb-01, validation emb-02, test the rest."""

    def _split(self) -> Split:
        return embedded_split()


def prepare_locomo_qa(source: str | os.PathLike, data_dir: str | os.PathLike) -> Memr1LocomoQa:
    """Build (or reuse) the LoCoMo question dataset under data_dir and return the prepared builder."""
    b = Memr1LocomoQa(source=source, data_dir=os.fspath(data_dir))
    b.download_and_prepare()
    return b


def prepare_embedded_qa(data_dir: str | os.PathLike) -> Memr1EmbeddedQa:
    """Build (or reuse) the embedded question dataset under data_dir and return the prepared builder."""
    b = Memr1EmbeddedQa(data_dir=os.fspath(data_dir))
    b.download_and_prepare()
    return b


def decode_record(rec: dict) -> dict:
    """A data-source record with bytes turned into str and evidence into a list."""
    out = {}
    for k, v in rec.items():
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        elif k == "evidence":
            v = [e.decode("utf-8") if isinstance(e, bytes) else str(e) for e in v]
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out
