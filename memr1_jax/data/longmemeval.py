"""LongMemEval (Wu et al., ICLR 2025) as :class:`Conversation` records.

The published files (``longmemeval_oracle.json``, ``longmemeval_s_cleaned.json``,
``longmemeval_m_cleaned.json``) are one JSON list of 500 questions, each with its own
haystack::

    {"question_id": "e47becba", "question_type": "single-session-user",
     "question": "...", "answer": "...", "question_date": "2023/05/30 (Tue) 23:40",
     "haystack_session_ids": ["answer_280352e9", ...], "haystack_dates": ["2023/05/20 (Sat) 02:21", ...],
     "haystack_sessions": [[{"role": "user", "content": "...", "has_answer": true}, ...], ...],
     "answer_session_ids": ["answer_280352e9"]}

Each question becomes one conversation (id: its ``question_id``) between ``user`` and
``assistant`` with one session per haystack session, in the order given (the files list
them by date), and one question whose ``qtype`` is the ``question_type``; ids ending in
``_abs`` are abstention questions, kept in their type as the Memory-R1 paper does (its
500-question total). Evidence is the turns marked ``has_answer``, or every turn of the
answer sessions where none is marked. The question date is put before the question
("Current date: ..."), as LongMemEval's own reader prompt does: temporal questions are
relative to it. The haystack has no per-speaker facts: evaluate it with ``rag`` or
``fullctx``, or build memory with ``data.facts=extract``.

The data (MIT) is not shipped: it is on the Hugging Face hub as
``xiaowu0162/longmemeval-cleaned``.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Mapping

from memr1_jax.data.locomo import (OTHER, QA, Conversation, LocomoFormatError, Session, Turn, _check_unique,
                                   _read_json)

QUESTION_TYPES = ("single-session-user", "single-session-assistant", "single-session-preference",
                  "multi-session", "knowledge-update", "temporal-reasoning")
SPEAKERS = ("user", "assistant")


def _field(item: Mapping, key: str, kind, source: str, i: int):
    if key not in item:
        raise LocomoFormatError(f"{source}: key '[{i}].{key}': missing")
    val = item[key]
    if not isinstance(val, kind) or isinstance(val, bool):
        raise LocomoFormatError(f"{source}: key '[{i}].{key}': expected {kind.__name__}, "
                                f"got {type(val).__name__} {val!r:.60}")
    return val


def _session(raw: Any, date: str, n: int, source: str, where: str, answer_session: bool) -> tuple[Session, list]:
    if not isinstance(raw, list):
        raise LocomoFormatError(f"{source}: key '{where}': expected a list of turns, got {type(raw).__name__}")
    turns, evidence = [], []
    for t, msg in enumerate(raw, 1):
        at = f"{where}[{t - 1}]"
        if not isinstance(msg, Mapping):
            raise LocomoFormatError(f"{source}: key '{at}': expected a turn object, got {type(msg).__name__}")
        role, content = msg.get("role"), msg.get("content")
        if role not in SPEAKERS:
            raise LocomoFormatError(f"{source}: key '{at}.role': expected 'user' or 'assistant', got {role!r:.40}")
        if not isinstance(content, str):
            raise LocomoFormatError(f"{source}: key '{at}.content': expected str, got {type(content).__name__}")
        dia_id = f"D{n}:{t}"
        turns.append(Turn(speaker=role, dia_id=dia_id, text=content))
        if msg.get("has_answer") is True:
            evidence.append(dia_id)
    if answer_session and not evidence:
        evidence = [t.dia_id for t in turns]
    return Session(index=n, date_time=date, turns=tuple(turns)), evidence


def parse_item(item: Any, source: str, i: int) -> Conversation:
    if not isinstance(item, Mapping):
        raise LocomoFormatError(f"{source}: key '[{i}]': expected a question object, got {type(item).__name__}")
    qid = _field(item, "question_id", str, source, i)
    qtype = _field(item, "question_type", str, source, i)
    question = _field(item, "question", str, source, i)
    answer = item.get("answer")
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise LocomoFormatError(f"{source}: key '[{i}].answer': expected str or number, got {type(answer).__name__}")
    sessions_raw = _field(item, "haystack_sessions", list, source, i)
    dates = _field(item, "haystack_dates", list, source, i)
    ids = item.get("haystack_session_ids", [None] * len(sessions_raw))
    if len(dates) != len(sessions_raw) or len(ids) != len(sessions_raw):
        raise LocomoFormatError(f"{source}: key '[{i}]': {len(sessions_raw)} haystack_sessions but "
                                f"{len(dates)} haystack_dates and {len(ids)} haystack_session_ids")
    answer_ids = set(item.get("answer_session_ids") or ())
    sessions, evidence = [], []
    for n, (raw, date, sid) in enumerate(zip(sessions_raw, dates, ids), 1):
        if not isinstance(date, str):
            raise LocomoFormatError(f"{source}: key '[{i}].haystack_dates[{n - 1}]': expected str")
        sess, ev = _session(raw, date, n, source, f"[{i}].haystack_sessions[{n - 1}]", sid in answer_ids)
        sessions.append(sess)
        evidence += ev
    date = item.get("question_date")
    text = f"Current date: {date}. {question}" if isinstance(date, str) and date else question
    qa = QA(question=text, answer=str(answer), evidence=tuple(evidence), category=OTHER, qtype=qtype)
    return Conversation(id=qid, speaker_a=SPEAKERS[0], speaker_b=SPEAKERS[1], sessions=tuple(sessions),
                        questions=(qa,))


def load_longmemeval(path: os.PathLike | str) -> tuple[Conversation, ...]:
    """Every question of a LongMemEval JSON file, one conversation each (see the module doc)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such LongMemEval file (longmemeval_oracle.json, "
                                "longmemeval_s_cleaned.json, ... from xiaowu0162/longmemeval-cleaned)")
    raw = _read_json(path)
    if not isinstance(raw, list):
        raise LocomoFormatError(f"{path}: expected a JSON list of LongMemEval questions, got {type(raw).__name__}")
    convs = tuple(parse_item(item, str(path), i) for i, item in enumerate(raw))
    _check_unique(convs, [f"{path}[{i}]" for i in range(len(convs))])
    return convs


def is_longmemeval(raw: Any) -> bool:
    return (isinstance(raw, list) and bool(raw) and isinstance(raw[0], Mapping)
            and "question_id" in raw[0] and "haystack_sessions" in raw[0])
