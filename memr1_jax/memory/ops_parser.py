"""Parse Memory Manager output into bank operations, and render memories for its prompt.

The schema is Mem0's / Memory-R1's:
    {"memory": [{"id": "0", "text": "...", "event": "ADD|UPDATE|DELETE|NONE", "old_memory": "..."}]}

LLM output is messy, so `parse_memory_ops` never raises. It finds the JSON (inside code fences,
after prose, or bare), reads it with a lenient parser (single quotes, trailing commas, Python
literals, bare keys, truncation) and keeps every complete, well-typed item. Everything it had
to repair or drop is listed in `problems`, which the RL reward uses as a format penalty.

The model only sees small string ids ("0", "1", ...); `render_memories` builds that view and
the mapping back to real bank ids that `parse_memory_ops` takes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any, Iterable, Mapping, Sequence

from memr1_jax.memory.bank import Event, MemoryOp

_MAX_DEPTH = 64          # deeper nesting is reported, never recursed into (no RecursionError)
_MAX_CANDIDATES = 64     # JSON start positions tried per output (bounds time on '{{{{...')
_MAX_ITEMS = 4096        # items kept from one output
_MAX_PROBLEMS = 64       # problems listed per output (the rest counted), so logs stay small
_EVENTS = {"ADD": Event.ADD, "UPDATE": Event.UPDATE, "DELETE": Event.DELETE,
           "NONE": Event.NONE, "NOOP": Event.NONE, "NO_OP": Event.NONE}


@dataclasses.dataclass(frozen=True)
class ParseResult:
    ops: tuple[MemoryOp, ...]
    problems: tuple[str, ...]
    found_json: bool            # a JSON object/array with memory items was located at all

    @property
    def ok(self) -> bool:
        return self.found_json and not self.problems


class _Incomplete:
    """Marker: the value was cut off by the end of the text (truncated generation)."""


_INCOMPLETE = _Incomplete()


class _Lenient:
    """A forgiving JSON reader. `value()` returns (value, end_pos, complete, notes).

    It accepts ' or " strings, trailing commas, missing commas, bare identifier keys,
    True/False/None, and stops cleanly at the end of input, returning what was complete.
    """

    _num = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
    _ident = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")

    def __init__(self, text: str):
        self.s = text
        self.n = len(text)
        self.notes: list[str] = []

    def ws(self, i: int) -> int:
        s, n = self.s, self.n
        while i < n and s[i] in " \t\r\n\ufeff\u00a0":
            i += 1
        return i

    def value(self, i: int, depth: int = 0):
        """Parse one value at i; returns (value | _INCOMPLETE | None-on-error, pos, ok)."""
        i = self.ws(i)
        if i >= self.n:
            return _INCOMPLETE, i, False
        c = self.s[i]
        if depth > _MAX_DEPTH:
            self.notes.append(f"nesting deeper than {_MAX_DEPTH}")
            return None, i, False
        if c == "{":
            return self.obj(i + 1, depth + 1)
        if c == "[":
            return self.arr(i + 1, depth + 1)
        if c in "\"'":
            return self.string(i)
        m = self._num.match(self.s, i)
        if m:
            txt = m.group(0)
            try:
                v = float(txt) if any(ch in txt for ch in ".eE") else int(txt)
            except (ValueError, OverflowError):
                v = None
            return v, m.end(), True
        m = self._ident.match(self.s, i)
        if m:
            word = m.group(0)
            lit = {"true": True, "false": False, "null": None, "none": None}
            if word.lower() in lit:
                return lit[word.lower()], m.end(), True
            self.notes.append(f"bare word {word[:20]!r} read as a string")
            return word, m.end(), True
        return None, i, False   # unexpected character: caller decides

    def string(self, i: int):
        q = self.s[i]
        i += 1
        out = []
        s, n = self.s, self.n
        esc = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}   # any other escaped character is itself
        while i < n:
            c = s[i]
            if c == q:
                if q == "'":
                    self.notes.append("single-quoted strings")
                return _fix_surrogates("".join(out)), i + 1, True
            if c == "\\":
                if i + 1 >= n:
                    break
                d = s[i + 1]
                if d == "u":
                    h = s[i + 2:i + 6]
                    if len(h) == 4 and all(ch in "0123456789abcdefABCDEF" for ch in h):
                        out.append(chr(int(h, 16)))
                        i += 6
                        continue
                    out.append("u")     # not an escape (or cut off: then the string is never closed)
                    i += 2
                    continue
                out.append(esc.get(d, d))
                i += 2
                continue
            out.append(c)
            i += 1
        return _INCOMPLETE, n, False

    def _sep(self, i: int, close: str) -> tuple[int, str]:
        """Skip separators after an element. Returns (pos, what): what in {',', close, 'eof', 'junk'}
        (the callers' loop head returns the partial container at the end of the text)."""
        i = self.ws(i)
        if i >= self.n:
            return i, "eof"
        c = self.s[i]
        if c == ",":
            j = self.ws(i + 1)
            if j < self.n and self.s[j] == close:
                self.notes.append("trailing comma")
                return j + 1, close
            return i + 1, ","
        if c == close:
            return i + 1, close
        return i, "junk"

    def arr(self, i: int, depth: int):
        items: list = []
        while True:
            i = self.ws(i)
            if i >= self.n:
                return _Partial(items), i, False
            c = self.s[i]
            if c == "]":
                return items, i + 1, True
            if c == ",":            # leading / doubled comma
                self.notes.append("extra comma in list")
                i += 1
                continue
            v, j, ok = self.value(i, depth)
            if not ok:
                if v is _INCOMPLETE or isinstance(v, _Partial):   # else v is None at a character
                    if isinstance(v, _Partial):
                        items.append(v)
                    return _Partial(items), self.n, False
                self.notes.append(f"unexpected {self.s[j]!r} in list at offset {j}")
                return _Partial(items), j, False
            items.append(v)
            i, what = self._sep(j, "]")
            if what == "]":
                return items, i, True
            if what == "junk":
                self.notes.append(f"missing comma in list at offset {i}")

    def obj(self, i: int, depth: int):
        d: dict = {}
        while True:
            i = self.ws(i)
            if i >= self.n:
                return _Partial(d), i, False
            c = self.s[i]
            if c == "}":
                return d, i + 1, True
            if c == ",":
                self.notes.append("extra comma in object")
                i += 1
                continue
            if c in "\"'":
                k, j, ok = self.string(i)
                if not ok:
                    return _Partial(d), self.n, False
            else:
                m = self._ident.match(self.s, i) or _INT_KEY.match(self.s, i)
                if not m:
                    self.notes.append(f"unexpected {c!r} in object at offset {i}")
                    return _Partial(d), i, False
                k, j = m.group(0), m.end()
                self.notes.append(f"unquoted key {k[:20]!r}")
            j = self.ws(j)
            if j >= self.n:
                return _Partial(d), j, False
            if self.s[j] not in ":=":
                self.notes.append(f"expected ':' after key {k[:20]!r} at offset {j}")
                return _Partial(d), j, False
            v, j, ok = self.value(j + 1, depth)
            if not ok:
                if isinstance(v, _Partial):
                    d[k] = v
                if v is None:           # an unexpected character at j (the text goes on)
                    self.notes.append(f"unexpected {self.s[j]!r} in object at offset {j}")
                    return _Partial(d), j, False
                return _Partial(d), self.n, False
            d[k] = v
            i, what = self._sep(j, "}")
            if what == "}":
                return d, i, True
            if what == "junk":
                self.notes.append(f"missing comma in object at offset {i}")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _fix_surrogates(s: str) -> str:
    """Join \\uD83D\\uDE00-style escaped pairs; lone halves become U+FFFD (tokenizers choke on them)."""
    if not _SURROGATE.search(s):
        return s
    return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class _Partial:
    """A container cut off before its closing bracket; holds what was complete."""

    def __init__(self, value):
        self.value = value


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\r?\n?")


def _candidate_texts(text: str) -> Iterable[str]:
    """Regions that may hold the JSON: contents of code fences (innermost first), then the whole."""
    fences = [m for m in _FENCE.finditer(text)]
    seen = set()
    # Pair consecutive fences; a fence left open (truncated output) runs to the end.
    for a in range(len(fences)):
        start = fences[a].end()
        end = fences[a + 1].start() if a + 1 < len(fences) else len(text)
        chunk = text[start:end]
        if chunk.strip() and chunk not in seen:
            seen.add(chunk)
            yield chunk
        if len(seen) > 8:
            break
    yield text


def _find_json(text: str):
    """Locate the JSON holding memory items.

    Returns (payload, complete, notes, how, source) or None. A complete {"memory": ...}
    object wins at once; otherwise the best partial or unwrapped candidate is kept.
    """
    best, best_rank = None, None
    regions = list(_candidate_texts(text))
    starts = [[m.start() for m in _START.finditer(r)][:_MAX_CANDIDATES] for r in regions]
    # Round-robin over regions: the first '{' of each region (fence contents, whole text) is
    # the likeliest start, and braces inside prose must not exhaust the candidate budget.
    order = [(r, ss[rank]) for rank in range(_MAX_CANDIDATES) for r, ss in enumerate(starts) if rank < len(ss)]
    for r, st in order[:_MAX_CANDIDATES]:
        region = regions[r]
        p = _Lenient(region)
        v, end, ok = p.value(st)
        items, how = _memory_items(v)
        if items is None:
            continue
        found = (v, ok, p.notes, how, region[st:end])
        if how == "object" and ok:
            return found
        listed = _unwrap(items)
        rank = (how == "object", ok, len(listed) if isinstance(listed, list) else 0)
        if best_rank is None or rank > best_rank:
            best, best_rank = found, rank
    return best


_START = re.compile(r"[\{\[]")
_INT_KEY = re.compile(r"-?\d+")


def _unwrap(v):
    return v.value if isinstance(v, _Partial) else v


def _memory_items(v):
    """(items, how) if v looks like the schema: {"memory": [...]}, or a bare list of op dicts."""
    v = _unwrap(v)
    if isinstance(v, dict):
        for key in v:
            if isinstance(key, str) and key.strip().lower() in ("memory", "memories"):
                items = v[key]
                if isinstance(_unwrap(items), list):
                    return items, "object"
                if isinstance(_unwrap(items), dict):    # a single item, not in a list
                    return [items], "object"
                return _NotAList(items), "object"
        if "event" in v:
            return [v], "item"
        return None, None
    if isinstance(v, list):
        if any(isinstance(_unwrap(x), dict) and "event" in _unwrap(x) for x in v):
            return v, "list"
    return None, None


class _NotAList:
    def __init__(self, value):
        self.value = value


def _as_id(x) -> str | None:
    """Normalise an id field to a string; None if it is not id-like."""
    if isinstance(x, bool) or x is None:
        return None
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if math.isfinite(x) and x == int(x):
            return str(int(x))
        return None
    if isinstance(x, str):
        return x.strip()
    return None


def parse_memory_ops(text: Any, id_map: Mapping[str, int] | None = None) -> ParseResult:
    """Parse a Memory Manager generation into ops. Never raises.

    id_map maps the ids the model saw ("0", "1", ...) to real bank ids. UPDATE / DELETE / NONE
    must name a known id, otherwise the item is dropped and reported. ADD ids are ignored (the
    bank assigns fresh ones).
    """
    try:
        return _parse(text, dict(id_map or {}))
    except Exception as e:   # last-resort guard; the property test checks it is never reached
        return ParseResult((), (f"internal parser error: {type(e).__name__}: {e}",), False)


def _parse(text: Any, id_map: dict) -> ParseResult:
    problems: list[str] = []
    if not isinstance(text, str):
        return ParseResult((), (f"output is not a string but {type(text).__name__}",), False)
    id_map = {str(k).strip(): v for k, v in id_map.items()}
    found = _find_json(text)
    if found is None:
        return ParseResult((), ("no JSON with memory items found",), False)
    payload, complete, notes, how, source = found
    if not complete:
        problems.append("output truncated: JSON not closed")
    if how == "list":
        problems.append("missing top-level {\"memory\": [...]} wrapper")
    elif how == "item":
        problems.append("a single item without the {\"memory\": [...]} wrapper")
    problems.extend(dict.fromkeys(notes))   # repairs made (quotes, commas, ...), de-duplicated
    if complete and _FENCE.sub("", text.replace(source, "", 1)).strip():
        problems.append("text outside the JSON")
    items, _ = _memory_items(payload)
    if isinstance(items, _NotAList):
        problems.append(f"'memory' is {type(_unwrap(items.value)).__name__}, not a list")
        items = []
    items = _unwrap(items)
    ops: list[MemoryOp] = []
    for n, raw in enumerate(items[:_MAX_ITEMS]):
        if isinstance(raw, _Partial):
            problems.append(f"item {n}: cut off, dropped")
            continue
        if not isinstance(raw, dict):
            problems.append(f"item {n}: not an object ({type(raw).__name__}), dropped")
            continue
        op, problem = _item_to_op(n, raw, id_map)
        if problem:
            problems.append(problem)
        if op is not None:
            ops.append(op)
    if len(items) > _MAX_ITEMS:
        problems.append(f"more than {_MAX_ITEMS} items; the rest were dropped")
    if len(problems) > _MAX_PROBLEMS:
        problems[_MAX_PROBLEMS:] = [f"... and {len(problems) - _MAX_PROBLEMS} more problems"]
    return ParseResult(tuple(ops), tuple(problems), True)


def _item_to_op(n: int, raw: dict, id_map: dict) -> tuple[MemoryOp | None, str | None]:
    fields = {str(k).strip().lower(): v for k, v in raw.items()}
    ev_raw = fields.get("event")
    if not isinstance(ev_raw, str) or ev_raw.strip().upper() not in _EVENTS:
        return None, f"item {n}: bad event {str(ev_raw)[:30]!r}, dropped"
    ev = _EVENTS[ev_raw.strip().upper()]
    text = fields.get("text")
    if text is None:
        text = ""
    if not isinstance(text, str):
        if ev in (Event.ADD, Event.UPDATE):
            return None, f"item {n}: {ev.value} text is {type(text).__name__}, not a string, dropped"
        text = ""
    old = fields.get("old_memory")
    old = old if isinstance(old, str) else None
    if ev == Event.ADD:
        if not text.strip():
            return None, f"item {n}: ADD with empty text, dropped"
        return MemoryOp(Event.ADD, None, text.strip()), None
    mid = _as_id(fields.get("id"))
    if mid is None or mid not in id_map:
        shown = str(fields.get("id"))[:30]
        return None, f"item {n}: {ev.value} of unknown id {shown!r}, ignored"
    if ev == Event.UPDATE and not text.strip():
        return None, f"item {n}: UPDATE with empty text, dropped"
    return MemoryOp(ev, int(id_map[mid]), text.strip(), old), None


def render_memories(memories: Sequence[Mapping[str, Any]] | Sequence[tuple[int, str]]
                    ) -> tuple[str, dict[str, int]]:
    """Render retrieved memories as the prompt's `[{"id": "0", "text": ...}, ...]`.

    Accepts dicts with "id" and "text" (as `MemoryBank.entries()` gives) or (id, text) pairs.
    Returns (json string, {"0": real_id, ...}) for `parse_memory_ops`.
    """
    shown, id_map = [], {}
    for k, m in enumerate(memories):
        real, text = (m["id"], m["text"]) if isinstance(m, Mapping) else (m[0], m[1])
        id_map[str(k)] = int(real)
        shown.append({"id": str(k), "text": text})
    return json.dumps(shown, ensure_ascii=False), id_map
