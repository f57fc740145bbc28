"""LoCoMo conversations and questions as typed, immutable records.

Two on-disk layouts hold the same content:

* flat, one JSON object per conversation (``26.json``): ``speaker_a``,
  ``speaker_b``, ``session_<n>``, ``session_<n>_date_time``,
  ``session_<n>_observation``, ``session_<n>_summary``, ``events_session_<n>``
  and ``qa`` all at the top level;
* nested, the ``locomo10.json`` release: a list of
  ``{sample_id, conversation: {speaker_a, speaker_b, session_<n>,
  session_<n>_date_time}, qa, observation: {session_<n>_observation},
  session_summary: {session_<n>_summary}, event_summary: {events_session_<n>}}``.

Both parse into the same :class:`Conversation`. Conversation ids are
``conv-<n>`` in both cases (a flat file ``26.json`` becomes ``conv-26``, as
the nested release names it).

Category numbers. The JSON keeps LoCoMo's numbers 1-5. By content LoCoMo's
own naming is 1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop,
5 adversarial (:data:`LOCOMO_LABELS`). The Mem0 paper and the Memory-R1 paper
label the same numbers 1 "single-hop", 2 "temporal", 3 "multi-hop",
4 "open-domain" (:data:`PAPER_LABELS`). The paper naming is the one that gives
the Memory-R1 test-split counts (single-hop 239, temporal 258, multi-hop 83,
open-domain 727 over conversations 41-50), so tables use it; always print the
number beside the label.

LoCoMo is CC BY-NC 4.0; the project does not ship it (see
:func:`download_locomo`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import re
import urllib.error
import urllib.request
import warnings
from typing import Any, Iterable, Mapping, Sequence

from memr1_jax.files import atomic_write, atomic_write_text, child

# Mem0 / Memory-R1 naming of LoCoMo category numbers (used in result tables).
PAPER_LABELS: Mapping[int, str] = {1: "single-hop", 2: "temporal", 3: "multi-hop", 4: "open-domain"}
# LoCoMo's own naming, by question content (its paper and evaluation code).
LOCOMO_LABELS: Mapping[int, str] = {
    1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
ADVERSARIAL = 5
OTHER = 0   # a question of a user's own data without a LoCoMo category
PAPER_CATEGORIES = (1, 2, 3, 4)

# The Memory-R1 split (1:1:8 by conversation).
TRAIN_IDS = ("conv-26",)
VALIDATION_IDS = ("conv-30",)

LOCOMO_JSON_URL = "https://raw.githubusercontent.com/snap-research/locomo/main/data/locomo10.json"
LOCOMO_HOME = "https://github.com/snap-research/locomo"
# What the public release holds (conversation id -> number of questions, 1,986 in all): a
# download is checked against it before it replaces anything.
LOCOMO_RELEASE_QUESTIONS: Mapping[str, int] = {
    "conv-26": 199, "conv-30": 105, "conv-41": 193, "conv-42": 260, "conv-43": 242, "conv-44": 158,
    "conv-47": 190, "conv-48": 239, "conv-49": 196, "conv-50": 204}

# A session's keys: turns, date, observations, summary, events. The number may be zero-padded
# (session_01 is session 1); any other key naming a session is an error, not a silent miss.
_SESSION_KEY_RE = re.compile(r"(events_)?session_(\d+)(_date_time|_observation|_summary)?")
_SESSION_PARTS = {"": "turns", "_date_time": "date", "_observation": "observations", "_summary": "summary"}
_NOT_SESSION_KEYS = {"session_summary"}   # the nested layout's block of summaries
_DIA_ID_RE = re.compile(r"D(\d+):(\d+)")


class LocomoWarning(UserWarning):
    """Data that loads but is partly unusable (e.g. facts under an unknown speaker)."""


class LocomoFormatError(ValueError):
    """Malformed LoCoMo input; the message names the file and the key."""


@dataclasses.dataclass(frozen=True)
class Turn:
    speaker: str
    dia_id: str                      # "D<session>:<turn>"
    text: str
    img_url: tuple[str, ...] = ()
    blip_caption: str | None = None
    query: str | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # other keys, kept for round trips


@dataclasses.dataclass(frozen=True)
class Session:
    index: int                       # n of session_<n>
    date_time: str                   # e.g. "1:56 pm on 8 May, 2023"
    turns: tuple[Turn, ...]
    # speaker -> ((fact, dia_id), ...); dia_id is a tuple for the few facts citing several turns
    observations: Mapping[str, tuple[tuple[str, str | tuple[str, ...]], ...]] = dataclasses.field(default_factory=dict)
    summary: str | None = None
    # events_session_<n> as given: {speaker: [event, ...], "date": str}
    events: Mapping[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class QA:
    question: str
    answer: str                      # "" for adversarial items without an answer
    evidence: tuple[str, ...]        # dia_ids, as annotated (a few LoCoMo ones are malformed)
    category: int                    # LoCoMo's 1-5; 0 for questions of other data (see qtype)
    adversarial_answer: str | None = None
    qtype: str = ""                  # category 0: the question's type (LongMemEval's question_type, ...)

    @property
    def label(self) -> str:
        """Paper (Mem0) label, e.g. "single-hop" for category 1; the type of other questions."""
        return self.qtype or category_label(self.category)


@dataclasses.dataclass(frozen=True)
class Conversation:
    id: str
    speaker_a: str
    speaker_b: str
    sessions: tuple[Session, ...]
    questions: tuple[QA, ...]

    @property
    def turns(self) -> tuple[Turn, ...]:
        return tuple(t for s in self.sessions for t in s.turns)

    def dia_ids(self) -> set[str]:
        return {t.dia_id for s in self.sessions for t in s.turns}


@dataclasses.dataclass(frozen=True)
class QuestionRecord:
    """A question with its conversation id and position in that conversation's qa list."""
    conversation_id: str
    qa_index: int
    qa: QA


@dataclasses.dataclass(frozen=True)
class Split:
    train: tuple[Conversation, ...]
    validation: tuple[Conversation, ...]
    test: tuple[Conversation, ...]
    note: str = ""     # how the split was chosen, when it was not the one asked for (printed by the CLIs)

    @property
    def all(self) -> tuple[Conversation, ...]:
        """Every conversation, train then validation then test."""
        return self.train + self.validation + self.test

    def as_dict(self) -> dict[str, tuple[Conversation, ...]]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


def category_label(category: int, naming: str = "paper") -> str:
    """Label of a category number; naming "paper" (Mem0/Memory-R1) or "locomo"."""
    table = {"paper": PAPER_LABELS, "locomo": LOCOMO_LABELS}.get(naming)
    if table is None:
        raise ValueError(f"naming must be 'paper' or 'locomo', got {naming!r}")
    if category == OTHER:
        return "question"
    if category == ADVERSARIAL:
        return "adversarial"
    if category not in table:
        raise ValueError(f"unknown LoCoMo category {category!r}")
    return table[category]


# ----------------------------------------------------------------------------- parsing

def _err(source: str, key: str, problem: str) -> LocomoFormatError:
    return LocomoFormatError(f"{source}: key {key!r}: {problem}")


def _req(obj: Mapping, key: str, kind, source: str, where: str = ""):
    path = f"{where}{key}"
    if not isinstance(obj, Mapping):
        raise _err(source, where.rstrip(".") or "<root>", f"expected an object, got {type(obj).__name__}")
    if key not in obj:
        raise _err(source, path, "missing")
    val = obj[key]
    if not isinstance(val, kind) or (kind is int and isinstance(val, bool)):
        raise _err(source, path, f"expected {getattr(kind, '__name__', kind)}, got {type(val).__name__} {val!r:.60}")
    return val


def _opt_str(obj: Mapping, key: str, source: str, where: str) -> str | None:
    if key not in obj or obj[key] is None:
        return None
    if not isinstance(obj[key], str):
        raise _err(source, f"{where}{key}", f"expected str, got {type(obj[key]).__name__}")
    return obj[key]


def _parse_turn(raw: Any, source: str, where: str) -> Turn:
    speaker = _req(raw, "speaker", str, source, where)
    dia_id = _req(raw, "dia_id", str, source, where)
    text = _req(raw, "text", str, source, where)
    img = raw.get("img_url", ())
    if isinstance(img, str):
        img = (img,)
    if not isinstance(img, (list, tuple)) or not all(isinstance(u, str) for u in img):
        raise _err(source, f"{where}img_url", "expected a list of str")
    known = {"speaker", "dia_id", "text", "img_url", "blip_caption", "query"}
    return Turn(speaker=speaker, dia_id=dia_id, text=text, img_url=tuple(img),
                blip_caption=_opt_str(raw, "blip_caption", source, where),
                query=_opt_str(raw, "query", source, where),
                extra={k: v for k, v in raw.items() if k not in known})


def _parse_observations(raw: Any, source: str, key: str) -> dict[str, tuple[tuple[str, Any], ...]]:
    if not isinstance(raw, Mapping):
        raise _err(source, key, f"expected an object {{speaker: [[fact, dia_id], ...]}}, got {type(raw).__name__}")
    out = {}
    for speaker, facts in raw.items():
        if not isinstance(facts, list):
            raise _err(source, f"{key}.{speaker}", "expected a list of [fact, dia_id]")
        pairs = []
        for i, item in enumerate(facts):
            ok = isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)
            ref = item[1] if ok else None
            # A few LoCoMo facts cite several turns: [fact, [dia_id, ...]].
            if isinstance(ref, list) and ref and all(isinstance(r, str) for r in ref):
                ref = tuple(ref)
            if not ok or not isinstance(ref, (str, tuple)):
                raise _err(source, f"{key}.{speaker}[{i}]", f"expected [fact, dia_id], got {item!r:.80}")
            pairs.append((item[0], ref))
        out[speaker] = tuple(pairs)
    return out


def _parse_qa(raw: Any, source: str, where: str) -> QA:
    question = _req(raw, "question", str, source, where)
    # A user's own questions may carry a free "question_type" instead of a LoCoMo category.
    qtype = _opt_str(raw, "question_type", source, where) or ""
    if "category" not in raw and qtype:
        category = OTHER
    elif "category" not in raw:
        raise _err(source, f"{where}category", "missing (a LoCoMo category 1-5, or a question_type string "
                   "for questions of other data)")
    else:
        category = _req(raw, "category", int, source, where)
        if category not in (1, 2, 3, 4, 5):
            raise _err(source, f"{where}category", f"expected 1-5, got {category!r}")
    evidence = raw.get("evidence", [])
    if not isinstance(evidence, list) or not all(isinstance(e, str) for e in evidence):
        raise _err(source, f"{where}evidence", f"expected a list of dia_id strings, got {evidence!r:.80}")
    answer = raw.get("answer")
    if answer is None:
        if category != ADVERSARIAL:
            raise _err(source, f"{where}answer", "missing (only category-5 items may lack an answer)")
        answer = ""
    elif isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise _err(source, f"{where}answer", f"expected str or number, got {type(answer).__name__}")
    adv = raw.get("adversarial_answer")
    if adv is not None and not isinstance(adv, str):
        adv = str(adv)
    return QA(question=question, answer=str(answer), evidence=tuple(evidence),
              category=category, adversarial_answer=adv, qtype=qtype)


def _session_parts(block: Mapping, prefix: str, source: str) -> dict[tuple[str, int], tuple[str, Any]]:
    """(part, session number) -> (the key's path, its value) for the session keys of one object.
    A key that names a session in another spelling, or a session's part given twice (session_1
    and session_01), is an error naming the key."""
    out: dict[tuple[str, int], tuple[str, Any]] = {}
    for key, value in block.items():
        m = _SESSION_KEY_RE.fullmatch(key)
        if m is None or (m.group(1) and m.group(3)):
            if "session" in key.lower() and key not in _NOT_SESSION_KEYS:
                raise _err(source, prefix + key, "not a session key LoCoMo uses (session_<n>, session_<n>_date_time, "
                           "session_<n>_observation, session_<n>_summary or events_session_<n>)")
            continue
        part, n = ("events" if m.group(1) else _SESSION_PARTS[m.group(3) or ""]), int(m.group(2))
        if (part, n) in out:
            raise _err(source, prefix + key, f"session {n}'s {part} given twice (also as {out[(part, n)][0]!r})")
        out[(part, n)] = (prefix + key, value)
    return out


def parse_conversation(raw: Any, source: str = "<memory>", conv_id: str | None = None) -> Conversation:
    """Parse one conversation in the flat or the nested (``sample_id``/``conversation``) layout.

    source names the file in error messages; conv_id overrides the id (flat
    files have none inside; :func:`load_locomo` derives it from the file name).
    """
    if not isinstance(raw, Mapping):
        raise _err(source, "<root>", f"expected a conversation object, got {type(raw).__name__}")
    if "conversation" in raw:                     # nested release layout
        conv = _req(raw, "conversation", Mapping, source)
        where = "conversation."
        obs_src = raw.get("observation") or {}
        sum_src = raw.get("session_summary") or {}
        evt_src = raw.get("event_summary") or {}
        for name, val in (("observation", obs_src), ("session_summary", sum_src), ("event_summary", evt_src)):
            if not isinstance(val, Mapping):
                raise _err(source, name, f"expected an object, got {type(val).__name__}")
        obs_where, sum_where, evt_where = "observation.", "session_summary.", "event_summary."
        if conv_id is None:
            conv_id = _req(raw, "sample_id", str, source)
    else:                                         # flat per-conversation file
        conv, where = raw, ""
        obs_src = sum_src = evt_src = raw
        obs_where = sum_where = evt_where = ""
        if conv_id is None:
            conv_id = raw.get("sample_id") if isinstance(raw.get("sample_id"), str) else None
        if conv_id is None:
            raise _err(source, "sample_id", "missing, and no conversation id was given")
    speaker_a = _req(conv, "speaker_a", str, source, where)
    speaker_b = _req(conv, "speaker_b", str, source, where)

    # The nested layout keeps observations, summaries and events in their own blocks; a file that
    # has them inside "conversation" instead is read the same (a block wins where both have one).
    parts = _session_parts(conv, where, source)
    if conv is not obs_src:
        for block, prefix in ((obs_src, obs_where), (sum_src, sum_where), (evt_src, evt_where)):
            parts.update(_session_parts(block, prefix, source))
    sessions = []
    for n in sorted(n for part, n in parts if part == "turns"):
        key, turns_raw = parts[("turns", n)]
        if not isinstance(turns_raw, list):
            raise _err(source, key, f"expected a list of turns, got {type(turns_raw).__name__}")
        if ("date", n) not in parts:
            raise _err(source, f"{key}_date_time", f"missing (session {n} has turns but no date)")
        date_key, date_time = parts[("date", n)]
        if not isinstance(date_time, str):
            raise _err(source, date_key, f"expected str, got {type(date_time).__name__}")
        turns = tuple(_parse_turn(t, source, f"{key}[{i}].") for i, t in enumerate(turns_raw))
        observations = (_parse_observations(parts[("observations", n)][1], source, parts[("observations", n)][0])
                        if ("observations", n) in parts else {})
        summary = None
        if ("summary", n) in parts:
            sum_key, summary = parts[("summary", n)]
            if summary is not None and not isinstance(summary, str):
                raise _err(source, sum_key, f"expected str, got {type(summary).__name__}")
        events = parts.get(("events", n), (None, None))[1]
        if events is not None and not isinstance(events, Mapping):
            raise _err(source, parts[("events", n)][0], "expected an object")
        sessions.append(Session(index=n, date_time=date_time, turns=turns, observations=observations,
                                summary=summary, events=dict(events) if events is not None else None))
    if sessions and not any(sess.observations for sess in sessions):
        warnings.warn(f"{source}: no session has observations (session_<n>_observation): a bank built from "
                      "observations will be empty (data.facts='extract' builds it from the turns)",
                      LocomoWarning, stacklevel=2)

    for sess in sessions:
        unknown = sorted(set(sess.observations) - {speaker_a, speaker_b})
        if unknown:
            warnings.warn(f"{source}: session {sess.index} has observations under {unknown}, neither speaker_a "
                          f"{speaker_a!r} nor speaker_b {speaker_b!r}; they are not used", LocomoWarning, stacklevel=2)
    qa_raw = _req(raw, "qa", list, source)
    questions = tuple(_parse_qa(q, source, f"qa[{i}].") for i, q in enumerate(qa_raw))
    return Conversation(id=conv_id, speaker_a=speaker_a, speaker_b=speaker_b,
                        sessions=tuple(sessions), questions=questions)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _find_surrogate(obj: Any) -> str | None:
    """The key path of the first string holding a lone UTF-16 surrogate (a ``\\ud800``
    escape): Python accepts it, but no tokenizer or UTF-8 file can hold it."""
    stack = [("", obj)]
    while stack:
        where, x = stack.pop()
        if isinstance(x, str):
            try:
                x.encode("utf-8")
            except UnicodeEncodeError:
                return (where or "<root>").encode("utf-8", "backslashreplace").decode("utf-8")
        elif isinstance(x, Mapping):
            for k, v in x.items():
                path = f"{where}.{k}" if where else k
                stack += [(path, k), (path, v)]
        elif isinstance(x, list):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(x))
    return None


def _read_json(path: pathlib.Path) -> Any:
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except UnicodeDecodeError as e:
        raise LocomoFormatError(f"{path}: not UTF-8 text (invalid byte at offset {e.start})") from None
    try:
        raw = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as e:   # JSONDecodeError, or NaN / Infinity refused
        raise LocomoFormatError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise LocomoFormatError(f"{path}: not valid LoCoMo JSON (nested too deeply)") from None
    bad = _find_surrogate(raw)
    if bad is not None:
        raise LocomoFormatError(f"{path}: key {bad!r}: text holds a lone surrogate escape (not valid Unicode)")
    return raw


def _flat_id(path: pathlib.Path) -> str:
    return f"conv-{path.stem}" if path.stem.isdigit() else path.stem


def _sort_key(path: pathlib.Path):
    return (0, int(path.stem), "") if path.stem.isdigit() else (1, 0, path.stem)


def load_locomo(path: os.PathLike | str) -> tuple[Conversation, ...]:
    """Load LoCoMo conversations from a directory of flat files or a JSON file.

    A directory: every ``*.json`` in it is one flat conversation (``26.json``
    -> ``conv-26``), sorted by number; a directory holding only
    ``locomo10.json`` is read as the nested release. A file: a list of
    conversations (nested release) or a single conversation object.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.json"), key=_sort_key)
        if not files:
            raise FileNotFoundError(f"{path}: no *.json LoCoMo files in this directory")
        if len(files) == 1 and isinstance(raw := _read_json(files[0]), list):
            return _load_list(raw, files[0])
        convs = []
        for f in files:
            raw = _read_json(f)
            if isinstance(raw, list):
                raise LocomoFormatError(
                    f"{f}: a list (nested release file) inside a directory of per-conversation files; "
                    "pass the file itself")
            cid = raw.get("sample_id") if isinstance(raw, Mapping) and "conversation" in raw else _flat_id(f)
            convs.append(parse_conversation(raw, str(f), conv_id=cid))
        _check_unique(convs, [str(f) for f in files])
        return tuple(convs)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such LoCoMo file or directory (get the data with download_locomo(dest) "
            f"or from {LOCOMO_HOME})")
    raw = _read_json(path)
    if isinstance(raw, list):
        return _load_list(raw, path)
    cid = None if isinstance(raw, Mapping) and ("conversation" in raw or "sample_id" in raw) else _flat_id(path)
    return (parse_conversation(raw, str(path), conv_id=cid),)


def _load_list(raw: list, path: pathlib.Path) -> tuple[Conversation, ...]:
    convs = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise _err(str(path), f"[{i}]", f"expected a conversation object, got {type(item).__name__}")
        convs.append(parse_conversation(item, f"{path}[{i}]"))
    _check_unique(convs, [f"{path}[{i}]" for i in range(len(raw))])
    return tuple(convs)


def _check_unique(convs: Sequence[Conversation], sources: Sequence[str]) -> None:
    """Conversation ids are run-folder and bank names: two conversations with one id would share them."""
    seen: dict[str, str] = {}
    for c, src in zip(convs, sources):
        if c.id in seen:
            raise LocomoFormatError(f"{src}: duplicate conversation id {c.id!r} (also in {seen[c.id]})")
        seen[c.id] = src


# ----------------------------------------------------------------------------- writing

def _turn_to_json(t: Turn) -> dict:
    d: dict[str, Any] = {"speaker": t.speaker, "dia_id": t.dia_id, "text": t.text}
    if t.img_url:
        d["img_url"] = list(t.img_url)
    if t.blip_caption is not None:
        d["blip_caption"] = t.blip_caption
    if t.query is not None:
        d["query"] = t.query
    d.update(t.extra)
    return d


def _qa_to_json(q: QA) -> dict:
    d: dict[str, Any] = {"question": q.question}
    if q.category != ADVERSARIAL or q.answer:
        d["answer"] = q.answer
    d["evidence"] = list(q.evidence)
    if q.category != OTHER:
        d["category"] = q.category
    if q.qtype:
        d["question_type"] = q.qtype
    if q.adversarial_answer is not None:
        d["adversarial_answer"] = q.adversarial_answer
    return d


def conversation_to_flat(conv: Conversation) -> dict:
    """The flat per-conversation layout (``<n>.json`` in the shared folder)."""
    d: dict[str, Any] = {"speaker_a": conv.speaker_a, "speaker_b": conv.speaker_b}
    for s in conv.sessions:
        k = f"session_{s.index}"
        d[k] = [_turn_to_json(t) for t in s.turns]
        d[f"{k}_date_time"] = s.date_time
        if s.observations:
            d[f"{k}_observation"] = {
                sp: [[fact, list(ref) if isinstance(ref, tuple) else ref] for fact, ref in facts]
                for sp, facts in s.observations.items()}
        if s.summary is not None:
            d[f"{k}_summary"] = s.summary
        if s.events is not None:
            d[f"events_{k}"] = dict(s.events)
    d["qa"] = [_qa_to_json(q) for q in conv.questions]
    return d


def content_hash(conv: Conversation) -> str:
    """sha256 of the conversation's content (id, dialogue, facts, questions, answers): what a
    cached result computed from it is keyed by, so an edited file is never served stale."""
    blob = json.dumps({"id": conv.id, **conversation_to_flat(conv)}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def conversation_to_nested(conv: Conversation) -> dict:
    """One element of the ``locomo10.json`` release list."""
    flat = conversation_to_flat(conv)
    inner = {"speaker_a": conv.speaker_a, "speaker_b": conv.speaker_b}
    obs, summ, evts = {}, {}, {}
    for k, v in flat.items():
        if k in ("speaker_a", "speaker_b", "qa"):
            continue
        if k.endswith("_observation"):
            obs[k] = v
        elif k.endswith("_summary"):
            summ[k] = v
        elif k.startswith("events_"):
            evts[k] = v
        else:
            inner[k] = v
    return {"sample_id": conv.id, "conversation": inner, "qa": flat["qa"],
            "observation": obs, "session_summary": summ, "event_summary": evts}


def write_flat(convs: Iterable[Conversation], directory: os.PathLike | str) -> list[pathlib.Path]:
    """Write one flat JSON file per conversation; ``conv-26`` -> ``26.json``."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for c in convs:
        stem = c.id[len("conv-"):] if c.id.startswith("conv-") else c.id
        p = child(directory, stem, ".json")
        atomic_write_text(p, json.dumps(conversation_to_flat(c), ensure_ascii=False, indent=1))
        paths.append(p)
    return paths


def write_nested(convs: Iterable[Conversation], path: os.PathLike | str) -> pathlib.Path:
    """Write the nested release layout (a list) to one JSON file."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps([conversation_to_nested(c) for c in convs], ensure_ascii=False))
    return path


# ----------------------------------------------------------------------------- splits and questions

def split_conversations(convs: Sequence[Conversation], train_ids: Sequence[str] = TRAIN_IDS,
                        validation_ids: Sequence[str] = VALIDATION_IDS) -> Split:
    """Split by conversation: the given train/validation ids, everything else is test.

    Defaults give the Memory-R1 LoCoMo split (conv-26 / conv-30 / the other eight).
    """
    ids = {c.id for c in convs}
    for name, wanted in (("train", train_ids), ("validation", validation_ids)):
        missing = [i for i in wanted if i not in ids]
        if missing:
            raise ValueError(f"{name} conversation id{'s' * (len(missing) > 1)} {', '.join(map(repr, missing))} "
                             f"not in the data (it has {', '.join(sorted(ids))})")
    if set(train_ids) & set(validation_ids):
        raise ValueError(f"train and validation ids overlap: {sorted(set(train_ids) & set(validation_ids))}")
    return Split(train=tuple(c for c in convs if c.id in train_ids),
                 validation=tuple(c for c in convs if c.id in validation_ids),
                 test=tuple(c for c in convs if c.id not in train_ids and c.id not in validation_ids))


def question_records(convs: Iterable[Conversation],
                     categories: Sequence[int] = PAPER_CATEGORIES) -> list[QuestionRecord]:
    """All questions of the given LoCoMo categories (default: 1-4, adversarial excluded) and
    every question of other data (category 0), in order."""
    return [QuestionRecord(c.id, i, q) for c in convs for i, q in enumerate(c.questions)
            if q.category in categories or q.category == OTHER]


def category_counts(records: Iterable[QuestionRecord], naming: str = "paper") -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        lab = category_label(r.qa.category, naming)
        out[lab] = out.get(lab, 0) + 1
    return out


# ----------------------------------------------------------------------------- download

def _check_release(path: pathlib.Path, sha256: str | None) -> None:
    if sha256 is not None:
        got = hashlib.sha256(path.read_bytes()).hexdigest()
        if got != sha256:
            raise LocomoFormatError(f"{path}: sha256 {got}, expected {sha256}")
    counts = {c.id: len(c.questions) for c in load_locomo(path)}
    if counts != dict(LOCOMO_RELEASE_QUESTIONS):
        diff = sorted(k for k in set(counts) | set(LOCOMO_RELEASE_QUESTIONS)
                      if counts.get(k) != LOCOMO_RELEASE_QUESTIONS.get(k))
        raise LocomoFormatError(f"{path}: not the LoCoMo release (conversations or question counts differ: {diff[:5]})")


def download_locomo(dest: os.PathLike | str, url: str = LOCOMO_JSON_URL, timeout: float = 60.0,
                    sha256: str | None = None) -> pathlib.Path:
    """Download the public ``locomo10.json`` release into ``dest`` (a directory) and return its path.

    Needs internet access to GitHub. The data is CC BY-NC 4.0 (non-commercial). The file
    must parse and hold the release's conversations and question counts
    (``LOCOMO_RELEASE_QUESTIONS``), and match ``sha256`` when one is given; its sha256 is
    written beside it (``locomo10.json.sha256``). An existing valid file is reused.
    """
    dest = pathlib.Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / "locomo10.json"
    if out.exists():
        _check_release(out, sha256)   # raises if the cached copy is bad
        return out
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            payload = resp.read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise RuntimeError(
            f"could not download LoCoMo from {url} ({e}). This needs internet access to GitHub. "
            f"Download data/locomo10.json from {LOCOMO_HOME} by hand (license CC BY-NC 4.0) and "
            f"pass its path, or a directory of per-conversation files, to load_locomo().") from e
    try:
        with atomic_write(out) as f:   # checked before it counts: a bad download leaves nothing
            f.write(payload)
            f.flush()
            _check_release(pathlib.Path(f.name), sha256)
    except (LocomoFormatError, FileNotFoundError) as e:
        raise RuntimeError(f"downloaded {url} but it is not the LoCoMo release: {e}") from e
    atomic_write_text(dest / "locomo10.json.sha256", hashlib.sha256(payload).hexdigest() + "  locomo10.json\n")
    return out
