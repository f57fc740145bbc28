"""Facts from raw dialogue: Mem0's extraction step (the Memory-R1 paper's LLMExtract).

LoCoMo ships per-session facts (``observations``); other data (a user's own dialogue,
LongMemEval, MSC) has only turns. ``extract_facts`` asks a model, for each session and
speaker, to list the facts worth remembering about that speaker in a window of turns
(``FACT_EXTRACTION_PROMPT``), and returns the conversations with those facts as their
observations: everything downstream (bank construction, the manager's training items)
then runs unchanged. Each fact cites the dialogue ids of its window, so a question's
evidence still points at the facts drawn from it.

Results are cached per conversation (one JSON file named by the conversation's id and
content hash, in a folder keyed by the extracting model and settings): the extraction
runs once per conversation and model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import warnings
from typing import Any, Callable, Sequence

from memr1_jax.agents.prompts import FACT_EXTRACTION_PROMPT
from memr1_jax.data.locomo import Conversation, content_hash
from memr1_jax.files import atomic_write_text, child, entry_lock

CACHE_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class ExtractionConfig:
    turns_per_call: int = 16      # dialogue turns shown per prompt (a session is cut into windows)
    max_new_tokens: int = 160
    max_facts_per_call: int = 12  # a runaway list is cut here
    max_fact_chars: int = 300


@dataclasses.dataclass(frozen=True)
class Request:
    conversation_id: str
    session: int                  # Session.index
    speaker: str
    dia_ids: tuple[str, ...]      # the window's turns: what each fact drawn from it cites
    prompt: str


def _line(turn) -> str:
    text = turn.text
    if turn.blip_caption:
        text += f" [shares a photo: {turn.blip_caption}]"
    return f"{turn.speaker}: {text}"


def extraction_requests(conv: Conversation, cfg: ExtractionConfig = ExtractionConfig()) -> list[Request]:
    """One prompt per (session, speaker, window of turns) in which that speaker talks."""
    out = []
    for sess in conv.sessions:
        for start in range(0, len(sess.turns), cfg.turns_per_call):
            window = sess.turns[start:start + cfg.turns_per_call]
            dialogue = "\n".join(_line(t) for t in window)
            for speaker in (conv.speaker_a, conv.speaker_b):
                if not any(t.speaker == speaker for t in window):
                    continue
                prompt = FACT_EXTRACTION_PROMPT.format(speaker=speaker, date=sess.date_time, conversation=dialogue)
                out.append(Request(conv.id, sess.index, speaker, tuple(t.dia_id for t in window), prompt))
    return out


def _strings(value: Any) -> list[str] | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def parse_facts(completion: str, max_facts: int = 12, max_chars: int = 300) -> list[str]:
    """The facts of an extraction completion; never raises.

    Takes the first JSON object with a ``facts`` list of strings (or the first JSON list of
    strings); without JSON, the bulleted or numbered lines. Empty, duplicate and overlong
    facts are dropped, at most ``max_facts`` kept."""
    decoder = json.JSONDecoder()
    facts: list[str] | None = None
    for i, ch in enumerate(completion):
        if ch not in "{[":
            continue
        try:
            value, _ = decoder.raw_decode(completion, i)
        except (ValueError, RecursionError):
            continue
        facts = _strings(value.get("facts")) if isinstance(value, dict) else _strings(value)
        if facts is not None:
            break
    if facts is None:
        facts = [ln.strip().lstrip("-*•0123456789.) ").strip() for ln in completion.splitlines()
                 if ln.strip()[:1] in ("-", "*", "•") or ln.strip()[:2].rstrip(".)").isdigit()]
    out: list[str] = []
    for f in facts:
        f = " ".join(f.split())
        if f and len(f) <= max_chars and f not in out:
            out.append(f)
    return out[:max_facts]


def with_facts(conv: Conversation, facts: dict[tuple[int, str], list[tuple[str, tuple[str, ...]]]]) -> Conversation:
    """``conv`` with its observations replaced by ``{(session index, speaker): [(fact, dia_ids)]}``."""
    sessions = []
    for s in conv.sessions:
        obs = {sp: tuple((f, ids if len(ids) != 1 else ids[0]) for f, ids in facts.get((s.index, sp), ()))
               for sp in (conv.speaker_a, conv.speaker_b)}
        sessions.append(dataclasses.replace(s, observations={sp: v for sp, v in obs.items() if v}))
    return dataclasses.replace(conv, sessions=tuple(sessions))


def cache_folder(root: str | pathlib.Path, extractor: str, cfg: ExtractionConfig) -> pathlib.Path:
    """The cache of one extracting model (its identity) and these settings and prompt."""
    key = json.dumps([extractor, dataclasses.asdict(cfg), FACT_EXTRACTION_PROMPT], sort_keys=True)
    return pathlib.Path(root) / hashlib.sha1(key.encode()).hexdigest()[:12]


def _cache_file(folder: pathlib.Path, conv: Conversation) -> pathlib.Path:
    return child(folder, f"{conv.id}-{content_hash(conv)[:12]}", ".facts.json")


def _read_cached(path: pathlib.Path, conv: Conversation) -> Conversation | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != CACHE_FORMAT or data.get("content_hash") != content_hash(conv):
            raise ValueError("written for other content")
        facts = {(int(s), sp): [(str(f), tuple(str(i) for i in ids)) for f, ids in items]
                 for s, by_speaker in data["facts"].items() for sp, items in by_speaker.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        warnings.warn(f"{path}: unreadable extracted facts ({e}); extracting them again", stacklevel=3)
        return None
    return with_facts(conv, facts)


def _write_cached(path: pathlib.Path, conv: Conversation, facts, extractor: str) -> None:
    by_session: dict[str, dict[str, list]] = {}
    for (sess, sp), items in facts.items():
        by_session.setdefault(str(sess), {})[sp] = [[f, list(ids)] for f, ids in items]
    atomic_write_text(path, json.dumps({"format": CACHE_FORMAT, "conversation_id": conv.id,
                                        "content_hash": content_hash(conv), "extractor": extractor,
                                        "facts": by_session}, ensure_ascii=False, indent=1))


def extract_facts(convs: Sequence[Conversation], llm, cfg: ExtractionConfig = ExtractionConfig(), *,
                  cache_root: str | pathlib.Path | None = None, extractor: str = "",
                  progress: Callable[[int], None] | None = None) -> tuple[Conversation, ...]:
    """``convs`` with observations extracted by ``llm`` (anything with ``complete(prompts,
    max_new_tokens)``); with ``cache_root``, cached per conversation under the extractor's
    identity ``extractor``. ``llm`` may be None when every conversation is cached."""
    folder = cache_folder(cache_root, extractor, cfg) if cache_root is not None else None
    out: dict[str, Conversation] = {}
    todo = []
    for conv in convs:
        cached = _read_cached(_cache_file(folder, conv), conv) if folder is not None else None
        if cached is not None:
            out[conv.id] = cached
        else:
            todo.append(conv)
    if todo:
        if llm is None:
            raise ValueError(f"facts of {len(todo)} conversations are not cached and no extracting model was given")
        requests = [r for conv in todo for r in extraction_requests(conv, cfg)]
        completions = []
        step = max(getattr(llm, "batch_size", 8), 1) * 4
        for i in range(0, len(requests), step):   # in parts, so progress moves
            completions += llm.complete([r.prompt for r in requests[i:i + step]], max_new_tokens=cfg.max_new_tokens)
            if progress:
                progress(len(requests[i:i + step]))
        facts: dict[str, dict[tuple[int, str], list]] = {conv.id: {} for conv in todo}
        for r, text in zip(requests, completions):
            for f in parse_facts(text, cfg.max_facts_per_call, cfg.max_fact_chars):
                facts[r.conversation_id].setdefault((r.session, r.speaker), []).append((f, r.dia_ids))
        for conv in todo:
            if folder is not None:
                path = _cache_file(folder, conv)
                with entry_lock(path):
                    _write_cached(path, conv, facts[conv.id], extractor)
            out[conv.id] = with_facts(conv, facts[conv.id])
    return tuple(out[c.id] for c in convs)


def count_requests(convs: Sequence[Conversation], cfg: ExtractionConfig = ExtractionConfig()) -> int:
    return sum(len(extraction_requests(c, cfg)) for c in convs)


__all__ = ["ExtractionConfig", "Request", "extraction_requests", "parse_facts", "with_facts", "extract_facts",
           "cache_folder", "count_requests"]
