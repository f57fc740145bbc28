"""The Memory Manager output parser: never raises, recovers every well-formed item."""

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memr1_jax.memory import Event, MemoryOp, ParseResult, parse_memory_ops, render_memories

ID_MAP = {"0": 100, "1": 101, "2": 205, "3": 7}


def test_canonical_output():
    out = ('{"memory": [{"id": "0", "text": "User is a software engineer", "event": "NONE"},'
           ' {"id": "1", "text": "Name is John", "event": "ADD"}]}')
    r = parse_memory_ops(out, {"0": 42})
    assert r.ok and r.problems == ()
    assert r.ops == (MemoryOp(Event.NONE, 42, "User is a software engineer"),
                     MemoryOp(Event.ADD, None, "Name is John"))


def test_fences_prose_single_quotes_trailing_commas():
    out = ("Sure, here you go:\n```json\n{'memory': [{'id': '2', 'text': 'Loves cheese and chicken pizza',"
           " 'event': 'UPDATE', 'old_memory': 'I really like cheese pizza',},]}\n```\nHope that helps!")
    r = parse_memory_ops(out, ID_MAP)
    assert r.ops == (MemoryOp(Event.UPDATE, 205, "Loves cheese and chicken pizza", "I really like cheese pizza"),)
    assert {"single-quoted strings", "trailing comma", "text outside the JSON"} <= set(r.problems)


def test_truncated_list_keeps_complete_items():
    full = json.dumps({"memory": [{"id": "0", "text": "a", "event": "DELETE"},
                                  {"id": "1", "text": "b", "event": "UPDATE", "old_memory": "c"},
                                  {"id": "9", "text": "d", "event": "ADD"}]})
    cut = full[:full.index('"d"') + 2]
    r = parse_memory_ops(cut, ID_MAP)
    assert r.ops == (MemoryOp(Event.DELETE, 100, "a"), MemoryOp(Event.UPDATE, 101, "b", "c"))
    assert "output truncated: JSON not closed" in r.problems and "item 2: cut off, dropped" in r.problems


def test_unknown_and_huge_ids_reported():
    out = json.dumps({"memory": [{"id": "12", "text": "x", "event": "UPDATE"},
                                 {"id": 10 ** 30, "event": "DELETE"},
                                 {"id": 3, "event": "delete"}, {"id": 1.0, "event": "NoOp"},
                                 {"id": [1], "event": "DELETE"}]})
    r = parse_memory_ops(out, ID_MAP)
    assert r.ops == (MemoryOp(Event.DELETE, 7, ""), MemoryOp(Event.NONE, 101, ""))
    assert sum("unknown id" in p for p in r.problems) == 3


def test_wrong_types_and_no_json():
    assert parse_memory_ops(None).problems == ("output is not a string but NoneType",)
    assert not parse_memory_ops("I have no idea.").found_json
    r = parse_memory_ops('{"memory": {"id": "0", "text": "t", "event": "DELETE"}}', ID_MAP)
    assert r.ops == (MemoryOp(Event.DELETE, 100, "t"),)
    r = parse_memory_ops('{"memory": [{"text": 5, "event": "ADD"}, "junk", {"event": 3}]}', ID_MAP)
    assert r.ops == () and len(r.problems) == 3
    r = parse_memory_ops('[' * 5000 + ']' * 5000)
    assert r.ops == () and not r.found_json


def test_nested_fences_and_bare_list():
    item = '{"id": "1", "text": "t", "event": "DELETE"}'
    r = parse_memory_ops('```json\n```json\n{"memory": [' + item + ']}\n```\n```', ID_MAP)
    assert r.ops == (MemoryOp(Event.DELETE, 101, "t"),)
    r = parse_memory_ops("[" + item + "]", ID_MAP)
    assert r.ops == (MemoryOp(Event.DELETE, 101, "t"),) and not r.ok


def test_render_memories_roundtrip():
    shown, id_map = render_memories([{"id": 55, "text": "Loves ‘tea’ ☕"}, (9, 'say "hi"')])
    assert json.loads(shown) == [{"id": "0", "text": "Loves ‘tea’ ☕"}, {"id": "1", "text": 'say "hi"'}]
    assert id_map == {"0": 55, "1": 9}
    r = parse_memory_ops(json.dumps({"memory": [{"id": "1", "event": "DELETE", "text": ""}]}), id_map)
    assert r.ops == (MemoryOp(Event.DELETE, 9, ""),)


# --- property tests ------------------------------------------------------------------------
# Structured cases are built by `random.Random(seed)` with the seed drawn by hypothesis:
# hypothesis' nested strategies (and st.randoms) cost ~20 ms per example on this machine,
# which would blow the time budget; a failing seed still reproduces exactly.

_ALPHABETS = [
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJ0123456789.,-",
    "\u00e9\u00fc\u00df\u4e2d\u6587\u65e5\u672c\u0627\u0644\u2019\u201c\u201d\U0001f600\U0001f355\u200b\ufeff",
    "{}[]:,\\/\n\t`'\"",
]
IDS = ["0", "1", "2", "3", "17", "-1", "99999999999999999999999", "", 0, 1, 3, 10 ** 20, -5, 2.0, 1.5]
EVENTS = ["ADD", "UPDATE", "DELETE", "NONE", "update", " Delete ", "NOOP", "MERGE", ""]


def _rtext(rnd, plain=False, max_len=30):
    pools = _ALPHABETS[:2] if plain else _ALPHABETS
    return "".join(rnd.choice(rnd.choice(pools)) for _ in range(rnd.randint(0, max_len)))


def _ritem(rnd, plain=False):
    d = {"id": rnd.choice(IDS), "text": _rtext(rnd, plain), "event": rnd.choice(EVENTS)}
    if rnd.random() < 0.4:
        d["old_memory"] = _rtext(rnd, plain)
    return d


def _rjson(rnd, depth=0):
    r = rnd.random()
    if depth > 3 or r < 0.4:
        return rnd.choice([None, True, False, rnd.randint(-10 ** 25, 10 ** 25), rnd.random() * 1e6,
                           _rtext(rnd), rnd.choice(EVENTS), rnd.choice(IDS)])
    if r < 0.7:
        return [_rjson(rnd, depth + 1) for _ in range(rnd.randint(0, 4))]
    keys = ["memory", "id", "text", "event", "old_memory", "x"]
    return {rnd.choice(keys): _rjson(rnd, depth + 1) for _ in range(rnd.randint(0, 4))}


def _expected(item):
    """What the parser must produce for one complete item (None if it must be dropped)."""
    ev = str(item["event"]).strip().upper()
    ev = {"NOOP": "NONE"}.get(ev, ev)
    if ev not in ("ADD", "UPDATE", "DELETE", "NONE"):
        return None
    text = item["text"].strip()
    if ev == "ADD":
        return MemoryOp(Event.ADD, None, text) if text else None
    mid = item["id"]
    if isinstance(mid, float):
        mid = int(mid) if mid == int(mid) else None
    mid = str(mid).strip()
    if mid not in ID_MAP or (ev == "UPDATE" and not text):
        return None
    return MemoryOp(Event(ev), ID_MAP[mid], text, item.get("old_memory"))


def _render(items, style):
    if style == "single":   # Python-ish repr with single quotes and trailing commas
        body = ", ".join("{" + ", ".join(f"'{k}': " + (f"'{v}'" if isinstance(v, str) else str(v))
                                         for k, v in it.items()) + ",}" for it in items)
        return "{'memory': [" + body + ",]}"
    return json.dumps({"memory": items}, ensure_ascii=(style == "ascii"),
                      indent=2 if style == "indent" else None)


def _rwell_formed(rnd):
    style = rnd.choice(["compact", "ascii", "indent", "single"])
    items = [_ritem(rnd, plain=(style == "single")) for _ in range(rnd.randint(0, 6))]
    body = _render(items, style)
    pre = rnd.choice(["", "Here is the update:\n", "Thinking... no braces here.\n", "Note {this}: "])
    post = rnd.choice(["", "\nDone.", "\n\nLet me know! {}"])
    wrap = rnd.choice(["bare", "fence", "nested_fence", "prose", "prose_fence"])
    if wrap == "fence":
        body = f"```json\n{body}\n```"
    elif wrap == "nested_fence":
        body = f"```json\n```json\n{body}\n```\n```"
    elif wrap == "prose":
        body = pre + body + post
    elif wrap == "prose_fence":
        body = f"{pre}```json\n{body}\n```{post}"
    return items, body


def _radversarial(rnd):
    kind = rnd.randint(2, 5)
    if kind == 2:   # random JSON values with schema-like keys
        s = json.dumps(_rjson(rnd), ensure_ascii=rnd.random() < 0.5)
    elif kind == 3:  # wrong types inside the schema
        s = json.dumps({"memory": [_rjson(rnd) for _ in range(rnd.randint(0, 4))]})
    else:           # well-formed outputs, corrupted at one place
        _, s = _rwell_formed(rnd)
        if kind == 5 and s:
            i = rnd.randrange(len(s))
            s = s[:i] + rnd.choice(["", "}", "]", "```", "\\", "'", '"', "{{", "\x00", "[" * 80]) + s[i + 1:]
    if rnd.random() < 0.5 and s:
        s = s[:rnd.randint(0, len(s))]
    return s


_adversarial = st.one_of(
    st.text(max_size=200),                                        # arbitrary unicode
    st.text(st.sampled_from(list('{}[]"\':,`\\ \nmemoryidtextevent0123ADUPTENOL')), max_size=300),
    st.integers(0, 2 ** 32).map(lambda seed: _radversarial(random.Random(seed))),
)


@settings(max_examples=5000, deadline=None, suppress_health_check=list(HealthCheck))
@given(_adversarial)
def test_property_never_raises(s):
    r = parse_memory_ops(s, ID_MAP)
    assert isinstance(r, ParseResult)
    assert not any(p.startswith("internal parser error") for p in r.problems), r.problems
    for op in r.ops:
        assert isinstance(op, MemoryOp) and isinstance(op.text, str)
        assert op.target_id is None if op.event == Event.ADD else op.target_id in ID_MAP.values()
    if not r.ops and not r.found_json:
        assert r.problems


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(0, 2 ** 32), st.floats(0, 1))
def test_property_recovers_well_formed_parts(seed, cut_frac):
    items, text = _rwell_formed(random.Random(seed))
    r = parse_memory_ops(text, ID_MAP)
    expected = tuple(e for e in map(_expected, items) if e is not None)
    assert r.ops == expected
    assert sum(p.startswith("item ") for p in r.problems) == len(items) - len(expected)
    # Truncate the output anywhere: every item closed before the cut is still recovered,
    # and nothing that was not in the output appears.
    cut = int(cut_frac * len(text))
    r2 = parse_memory_ops(text[:cut], ID_MAP)
    n_closed = _count_closed_items(text, cut)
    assert r2.ops == tuple(e for e in map(_expected, items[:n_closed]) if e is not None)


def _count_closed_items(text, cut):
    """How many items of the memory list end (closing brace) before `cut`."""
    start = text.find("emory")
    start = start + len("emory") + 1 if start >= 0 else -1   # past the key's closing quote
    depth, n, i, quote = 0, 0, start, None
    while 0 <= i < min(cut, len(text)):
        c = text[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                n += 1
        i += 1
    return n


def test_the_problem_list_is_bounded():
    text = '{"memory": [' + ",".join(['{"id": "%d", "text": "x", "event": "UPDATE"}' % i for i in range(3000)]) + "]}"
    res = parse_memory_ops(text, {})
    assert len(res.problems) == 65 and res.problems[-1].startswith("... and ")
    assert res.ops == () and res.problems[0] == "item 0: UPDATE of unknown id '0', ignored"
