"""Multi-Session Chat (Xu et al., 2022) in MemGPT's memory-QA form, as :class:`Conversation` records.

The Memory-R1 paper evaluates "a modified version of MSC following MemGPT": MemGPT's deep
memory retrieval task, published as ``msc_self_instruct.jsonl`` (Hugging Face
``MemGPT/MSC-Self-Instruct``, 500 lines). Each line is one episode::

    {"previous_dialogs": [{"dialog": [{"text": "..."}, ...], "time_num": 7, "time_unit": "days"}, ...],
     "dialog": [{"id": "Speaker 1", "text": "..."}, ...],
     "self_instruct": {"B": "<question about an earlier session>", "A": "<its answer>"}, ...}

An episode becomes one conversation ``msc-<line number>`` between ``Speaker 1`` and
``Speaker 2`` (turns alternate, Speaker 1 first, unless a turn names its ``id``): one
session per previous dialog, then the current ``dialog``; one question of type ``dmr``
(no evidence turns are annotated). Sessions have no dates, only the gap MSC gives
(``time_num`` ``time_unit``), which becomes the session's date text. The dialogue has no
per-speaker facts: evaluate with ``rag`` / ``fullctx``, or build memory with
``data.facts=extract``.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Mapping

from memr1_jax.data.locomo import OTHER, QA, Conversation, LocomoFormatError, Session, Turn

SPEAKERS = ("Speaker 1", "Speaker 2")
QUESTION_TYPE = "dmr"


def _session(raw: Any, n: int, source: str, where: str) -> Session:
    if not isinstance(raw, list):
        raise LocomoFormatError(f"{source}: key '{where}': expected a list of turns, got {type(raw).__name__}")
    turns = []
    for t, msg in enumerate(raw):
        if not isinstance(msg, Mapping) or not isinstance(msg.get("text"), str):
            raise LocomoFormatError(f"{source}: key '{where}[{t}].text': expected a turn with a text string")
        speaker = msg.get("id") if msg.get("id") in SPEAKERS else SPEAKERS[t % 2]
        turns.append(Turn(speaker=speaker, dia_id=f"D{n}:{t + 1}", text=msg["text"]))
    return Session(index=n, date_time=f"session {n}", turns=tuple(turns))


def parse_episode(item: Any, source: str, line: int) -> Conversation:
    where = f"line {line}"
    if not isinstance(item, Mapping):
        raise LocomoFormatError(f"{source}: {where}: expected an episode object, got {type(item).__name__}")
    qa_raw = item.get("self_instruct")
    if not isinstance(qa_raw, Mapping) or not isinstance(qa_raw.get("B"), str) or not isinstance(qa_raw.get("A"), str):
        raise LocomoFormatError(f"{source}: {where}: key 'self_instruct': expected {{\"B\": question, \"A\": answer}}")
    previous = item.get("previous_dialogs", [])
    if not isinstance(previous, list):
        raise LocomoFormatError(f"{source}: {where}: key 'previous_dialogs': expected a list")
    sessions = []
    for n, prev in enumerate(previous, 1):
        if not isinstance(prev, Mapping):
            raise LocomoFormatError(f"{source}: {where}: key 'previous_dialogs[{n - 1}]': expected an object")
        sess = _session(prev.get("dialog"), n, source, f"{where}: previous_dialogs[{n - 1}].dialog")
        gap = (prev.get("time_num"), prev.get("time_unit"))
        if isinstance(gap[0], (int, float)) and isinstance(gap[1], str):
            sess = Session(index=n, date_time=f"session {n} ({gap[0]:g} {gap[1]} gap)", turns=sess.turns)
        sessions.append(sess)
    if item.get("dialog"):   # the current session, when it has begun
        sessions.append(_session(item["dialog"], len(sessions) + 1, source, f"{where}: dialog"))
    qa = QA(question=qa_raw["B"], answer=qa_raw["A"], evidence=(), category=OTHER, qtype=QUESTION_TYPE)
    return Conversation(id=f"msc-{line}", speaker_a=SPEAKERS[0], speaker_b=SPEAKERS[1],
                        sessions=tuple(sessions), questions=(qa,))


def load_msc(path: os.PathLike | str) -> tuple[Conversation, ...]:
    """Every episode of an MSC-Self-Instruct JSONL file (see the module doc)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such MSC file (msc_self_instruct.jsonl from MemGPT/MSC-Self-Instruct)")
    convs = []
    with open(path, "rb") as f:
        for line, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                item = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise LocomoFormatError(f"{path}: line {line}: not UTF-8 text (invalid byte at {e.start})") from None
            except (ValueError, RecursionError) as e:
                raise LocomoFormatError(f"{path}: line {line}: not valid JSON ({e})") from None
            convs.append(parse_episode(item, str(path), line))
    if not convs:
        raise LocomoFormatError(f"{path}: no MSC episodes in this file")
    return tuple(convs)


def is_msc_line(raw: Any) -> bool:
    return isinstance(raw, Mapping) and "self_instruct" in raw
