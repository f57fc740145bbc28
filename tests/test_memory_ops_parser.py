"""The Memory Manager output parser: never raises, recovers every well-formed item."""

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memr1_jax.memory import Event, MemoryOp, ParseResult, parse_memory_ops, render_memories
from memr1_jax.memory import ops_parser as P

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
    assert "‘tea’ ☕" in shown                    # the prompt shows the characters, not \\u escapes
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


# --- the lenient reader, read against json.loads and by hand -------------------------------------


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10 ** 18, 10 ** 18) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4), max_leaves=16)


@settings(max_examples=300, deadline=None)
@given(_JSON, st.sampled_from([None, 0, 2]), st.booleans())
def test_lenient_reader_reads_valid_json_as_json_loads_does(value, indent, ascii_only):
    """Independent reference: on any valid JSON (escapes, astral characters as surrogate pairs,
    exponents, nesting, indentation) the reader returns json.loads' value, complete, with no notes."""
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only)
    p = P._Lenient(text)
    got, end, ok = p.value(0)
    assert ok and end == len(text) and p.notes == [], (text, p.notes)
    assert got == json.loads(text)


def _plain(v):
    if isinstance(v, P._Partial):
        return ("partial", _plain(v.value))
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return "incomplete" if v is P._INCOMPLETE else v


@pytest.mark.parametrize("text, value, end, ok, notes", [
    ("{'a': 1,}", {"a": 1}, 9, True, ["single-quoted strings", "trailing comma"]),
    ("{a: True, b: none, c: null, d: FALSE}", {"a": True, "b": None, "c": None, "d": False}, 37, True,
     ["unquoted key 'a'", "unquoted key 'b'", "unquoted key 'c'", "unquoted key 'd'"]),
    ("[1 2]", [1, 2], 5, True, ["missing comma in list at offset 3"]),
    ("[,1]", [1], 4, True, ["extra comma in list"]),
    ("{,'a'= 1}", {"a": 1}, 9, True, ["extra comma in object", "single-quoted strings"]),
    ('{"a" 1}', ("partial", {}), 5, False, ["expected ':' after key 'a' at offset 5"]),
    ('{"a": 1 "b": 2}', {"a": 1, "b": 2}, 15, True, ["missing comma in object at offset 8"]),
    ("[foo]", ["foo"], 5, True, ["bare word 'foo' read as a string"]),
    ("[1, @]", ("partial", [1]), 4, False, ["unexpected '@' in list at offset 4"]),
    ('{"a": @}', ("partial", {}), 6, False, ["unexpected '@' in object at offset 6"]),
    ("{@}", ("partial", {}), 1, False, ["unexpected '@' in object at offset 1"]),
    ('{1: "x"}', {"1": "x"}, 8, True, ["unquoted key '1'"]),
    ('"\\u00e9\\n\\q\\/\\t\\"x\\\'"', "é\nq/\t\"x'", 21, True, []),
    ('"\\uZZZZ"', "uZZZZ", 8, True, []),
    ('"\\ud83d\\ude00 \\ud83d"', "\U0001F600 \ufffd", 21, True, []),
    ('"\\u12', "incomplete", 5, False, []),
    ('"ab\\', "incomplete", 4, False, []),
    ("   ", "incomplete", 3, False, []),
    ("[1e3, -2.5, .5, 7]", [1000.0, -2.5, 0.5, 7], 18, True, []),
    ("[1, 2", ("partial", [1, 2]), 5, False, []),
    ("[1,", ("partial", [1]), 3, False, []),
    ('{"a": [1', ("partial", {"a": ("partial", [1])}), 8, False, []),
    ('{"a": "b"', ("partial", {"a": "b"}), 9, False, []),
    ('{"a": 1,', ("partial", {"a": 1}), 8, False, []),
    ('{"a":', ("partial", {}), 5, False, []),
    ('{"a"', ("partial", {}), 4, False, []),
    ("[[1], [2", ("partial", [[1], ("partial", [2])]), 8, False, []),
    ("[1]junk", [1], 3, True, []),
    ("X", "X", 1, True, ["bare word 'X' read as a string"]),
    ("{X: 1}", {"X": 1}, 6, True, ["unquoted key 'X'"]),
    ('{"a"X1}', ("partial", {}), 4, False, ["expected ':' after key 'a' at offset 4"]),
    ('{"a":1}', {"a": 1}, 7, True, []),
    ('{"ab', ("partial", {}), 4, False, []),
    ("[1E3, 2e-1]", [1000.0, 0.2], 11, True, []),
    ("9" * 5000, None, 5000, True, []),             # past int()'s digit limit: no value, no crash
    ('"\\uXXXX \\u00E9"', "uXXXX é", 15, True, []),
    ('"\\r\\b\\f"', "\r\b\f", 8, True, []),
    ("[[1, @]]", ("partial", [("partial", [1])]), 8, False, ["unexpected '@' in list at offset 5"]),
    ('{"a": [1, @]}', ("partial", {"a": ("partial", [1])}), 13, False, ["unexpected '@' in list at offset 10"]),
    ("[" + "w" * 25 + "]", ["w" * 25], 27, True, [f"bare word {'w' * 20!r} read as a string"]),
    ("{" + "k" * 25 + " 1}", ("partial", {}), 27, False,
     [f"unquoted key {'k' * 20!r}", f"expected ':' after key {'k' * 20!r} at offset 27"]),
])
def test_lenient_reader_by_hand(text, value, end, ok, notes):
    p = P._Lenient(text)
    got, got_end, got_ok = p.value(0)
    assert (_plain(got), got_end, got_ok, p.notes) == (value, end, ok, notes)


@pytest.mark.parametrize("open_, close", [("[", "]"), ('{"k": ', "}"), ('[{"k": ', "}]")])
def test_nesting_is_cut_at_the_bound(open_, close):
    depth = len(open_.replace('"k": ', ""))                  # brackets per repetition
    n = P._MAX_DEPTH // depth
    p = P._Lenient(open_ * n + "1" + close * n)
    assert p.value(0)[2] and p.notes == []                    # the number at depth 64
    p = P._Lenient(open_ * (n + 1) + "1" + close * (n + 1))
    assert not p.value(0)[2] and p.notes[0] == f"nesting deeper than {P._MAX_DEPTH}"


@pytest.mark.parametrize("text, ops, problems, found", [
    ('{"memory": [{"id": "0", "event": "DELETE"}]} thanks', (MemoryOp(Event.DELETE, 100, ""),),
     ("text outside the JSON",), True),
    ('```json\n{"memory": [{"id": "0", "event": "DELETE"}]}\n```', (MemoryOp(Event.DELETE, 100, ""),), (), True),
    ('{"event": "ADD", "text": " t "}', (MemoryOp(Event.ADD, None, "t"),),
     ('a single item without the {"memory": [...]} wrapper',), True),
    ('[{"event": "ADD", "text": "t"}]', (MemoryOp(Event.ADD, None, "t"),),
     ('missing top-level {"memory": [...]} wrapper',), True),
    ('{"Memories": "none"}', (), ("'memory' is str, not a list",), True),
    ('{"memory": [{"event": "ADD", "text": "  "}, {"event": "UPDATE", "id": "1", "text": ""},'
     ' {"event": "update", "id": 2, "text": ["x"]}, {"event": "DELETE", "id": "3", "text": 4},'
     ' {"EVENT": "none", "ID": " 0 ", "TEXT": null, "Old_Memory": 5}, {"event": "MERGE"}, 7]}',
     (MemoryOp(Event.DELETE, 7, ""), MemoryOp(Event.NONE, 100, "")),
     ("item 0: ADD with empty text, dropped", "item 1: UPDATE with empty text, dropped",
      "item 2: UPDATE text is list, not a string, dropped", "item 5: bad event 'MERGE', dropped",
      "item 6: not an object (int), dropped"), True),
    ('{"memory": [{"event": "UPDATE", "id": "1", "text": "new", "old_memory": "old"},'
     ' {"event": "DELETE", "id": 1.5}, {"event": "DELETE", "id": true}, {"event": "NOOP", "id": 2.0}]}',
     (MemoryOp(Event.UPDATE, 101, "new", "old"), MemoryOp(Event.NONE, 205, "")),
     ("item 1: DELETE of unknown id '1.5', ignored", "item 2: DELETE of unknown id 'True', ignored"), True),
    ("no json here {", (), ("no JSON with memory items found",), False),
    ('["an event"]', (), ("no JSON with memory items found",), False),
    ('{"x": 1} {"memory": [{"event": "ADD", "text": "b"}]}', (MemoryOp(Event.ADD, None, "b"),),
     ("text outside the JSON",), True),
    # a complete {"memory": ...} object wins over a complete bare list before it
    ('[{"event": "ADD", "text": "a"}] {"memory": [{"event": "ADD", "text": "b"}]}', (MemoryOp(Event.ADD, None, "b"),),
     ("text outside the JSON",), True),
    ('[{"event": "ADD", "text": "a"}] {"memory": {"event": "ADD", "text": "b"}}', (MemoryOp(Event.ADD, None, "b"),),
     ("text outside the JSON",), True),
    ('[{"event": "ADD", "text": "a"}] {"memory": "none"}', (), ("text outside the JSON", "'memory' is str, not a list"),
     True),
    ('{"memory": []} {"memory": []}', (), ("text outside the JSON",), True),      # the same JSON twice
    ('{"memory": [{"event": "ADD", "text": null}, {"event": "' + "E" * 40 + '"}, {"event": "DELETE", "id": "'
     + "9" * 40 + '"}]}', (), ("item 0: ADD with empty text, dropped",
                              f"item 1: bad event {'E' * 30!r}, dropped",
                              f"item 2: DELETE of unknown id {'9' * 30!r}, ignored"), True),
    ('{"memory": "none"', (), ("output truncated: JSON not closed", "'memory' is str, not a list"), True),
    # of two bare lists, the one with more items
    ('[{"event": "ADD", "text": "a"}] [{"event": "ADD", "text": "b"}, {"event": "ADD", "text": "c"}]',
     (MemoryOp(Event.ADD, None, "b"), MemoryOp(Event.ADD, None, "c")),
     ('missing top-level {"memory": [...]} wrapper', "text outside the JSON"), True),
])
def test_parse_results_by_hand(text, ops, problems, found):
    assert parse_memory_ops(text, ID_MAP) == ParseResult(ops, problems, found)


def test_the_last_resort_guard_reports_and_keeps_nothing(monkeypatch):
    def boom(*args):
        raise RuntimeError("boom")
    monkeypatch.setattr(P, "_parse", boom)
    assert parse_memory_ops("{}", ID_MAP) == ParseResult((), ("internal parser error: RuntimeError: boom",), False)


_J = '{"memory": [{"event": "ADD", "text": "a"}]}'
_PROSE = "{" * 70 + "\n"          # more braces than candidate starts are tried in the whole text


@pytest.mark.parametrize("text, ops, problems", [
    # the fence's contents are tried first, so prose braces do not exhaust the budget
    (_PROSE + "```json\n" + _J + "\n```", ("a",), ("text outside the JSON",)),
    (_PROSE + "```json\nprose\n```\n" + _J, ("a",), ("text outside the JSON",)),
    # a cut-off JSON inside a fence ends at the fence, not in the fence's backticks
    (_PROSE + '```json\n{"memory": [{"event": "ADD", "text": "a"}\n```\n', ("a",), ("output truncated: JSON not closed",)),
    # at most 9 fenced regions are tried (then the whole text)
    (_PROSE + "".join(f"```\n{k}\n" for k in range(8)) + "```\n" + _J, ("a",), ("text outside the JSON",)),
    (_PROSE + "".join(f"```\n{k}\n" for k in range(9)) + "```\n" + _J, (), ("no JSON with memory items found",)),
    ("".join(f"```\n{k}\n" for k in range(12)) + "```\n" + _J, ("a",), ("text outside the JSON",)),
])
def test_fenced_regions(text, ops, problems):
    r = parse_memory_ops(text, ID_MAP)
    assert (tuple(op.text for op in r.ops), r.problems) == (ops, problems)


def test_item_and_problem_bounds():
    item = '{"event": "ADD", "text": "x"}'
    for n, extra in ((P._MAX_ITEMS, ()), (P._MAX_ITEMS + 1, (f"more than {P._MAX_ITEMS} items; the rest were dropped",))):
        r = parse_memory_ops('{"memory": [' + ", ".join([item] * n) + "]}")
        assert len(r.ops) == P._MAX_ITEMS and r.problems == extra
    bad = '{"event": "UPDATE", "id": "7", "text": "x"}'
    for n in (P._MAX_PROBLEMS, P._MAX_PROBLEMS + 5):
        r = parse_memory_ops('{"memory": [' + ", ".join([bad] * n) + "]}")
        want = tuple(f"item {k}: UPDATE of unknown id '7', ignored" for k in range(P._MAX_PROBLEMS))
        assert r.problems == want + ((("... and 5 more problems",) if n > P._MAX_PROBLEMS else ()))
    assert parse_memory_ops(7) == ParseResult((), ("output is not a string but int",), False)


def test_parse_result_ok_needs_json_and_no_problem():
    assert ParseResult((), (), True).ok and not ParseResult((), ("x",), True).ok and not ParseResult((), (), False).ok
