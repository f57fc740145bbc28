"""The compact line format of the Memory Manager: the parser reads what a model writes and
survives garbage; the regex's automaton accepts exactly the complete, in-order outputs; constrained
samples of a real tokenizer always parse with every fact decided; a manager step in this format
changes the bank as its lines say."""

from __future__ import annotations

import functools
import re

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memr1_jax.agents.memory_manager import ManagerConfig, apply_step, make_step
from memr1_jax.memory import (Event, HashingTestEncoder, MemoryOp, ParseResult, Retriever, apply, empty_bank,
                              line_ops, line_ops_regex, parse_line_ops)
from memr1_jax.memory.line_ops import line_decisions

FACTS = ["Name is Ana", "Moved to Lisbon in May", "Has a dog called Rex"]
ID_MAP = {"0": 11, "1": 7}


def test_reads_each_fact_once_with_its_own_text():
    text = "1: ADD\n2: UPDATE 1\n3: DELETE 0\n"
    r = parse_line_ops(text, FACTS, ID_MAP)
    assert r.found_json and not r.problems
    assert r.ops == (MemoryOp(Event.ADD, None, FACTS[0]), MemoryOp(Event.UPDATE, 7, FACTS[1]),
                     MemoryOp(Event.DELETE, 11, ""))


def test_lenient_forms_and_reported_problems():
    text = ("Sure! Here are the operations:\nF1 - add\n2) **update** id 0\n2: NONE\n7: ADD\n"
            "3: DELETE 5\n")
    r = parse_line_ops(text, FACTS, ID_MAP)
    assert r.ops == (MemoryOp(Event.ADD, None, FACTS[0]), MemoryOp(Event.UPDATE, 11, FACTS[1]))
    joined = " | ".join(r.problems)
    for part in ("line 1: not an operation", "fact 2 decided again", "fact 7 does not exist",
                 "DELETE of unknown id '5'", "facts without an operation: [3]"):
        assert part in joined, (part, r.problems)


def test_none_keeps_nothing_and_nothing_found_is_reported():
    r = parse_line_ops("1: NONE\n2: NONE\n3: NONE", FACTS, ID_MAP)
    assert r.found_json and r.ops == () and r.problems == ()
    r = parse_line_ops('{"memory": [{"id": "0", "event": "ADD", "text": "x"}]}', FACTS, ID_MAP)
    assert not r.found_json and r.ops == ()


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=100).map(lambda b: b.decode("latin-1")),
                 st.lists(st.sampled_from(["1", "2", ":", " ", "\n", "ADD", "UPDATE", "DELETE", "NONE",
                                           "0", "99", "id", "#", "*", "-", "F"]), max_size=40).map("".join),
                 st.integers(), st.none()))
def test_never_raises_and_only_yields_valid_ops(text):
    r = parse_line_ops(text, FACTS, ID_MAP)
    # the parser's last-resort guard turns any exception into this problem: it must never fire
    assert not any(p.startswith("internal parser error") for p in r.problems), r.problems
    for op in r.ops:
        assert op.event in (Event.ADD, Event.UPDATE, Event.DELETE)
        assert op.event == Event.ADD or op.target_id in ID_MAP.values()
        assert op.event == Event.DELETE or op.text in FACTS
    assert len(r.ops) <= len(FACTS)


_OPS = st.sampled_from(["ADD", "NONE", "UPDATE 0", "UPDATE 1", "DELETE 0", "DELETE 1"])


@settings(max_examples=200, deadline=None)
@given(st.lists(_OPS, min_size=3, max_size=3), st.lists(st.sampled_from([" ", "", "  "]), min_size=3, max_size=3),
       st.permutations(range(3)), st.lists(st.sampled_from(["Sure!", "Here you go:", "", "---"]), max_size=3))
def test_well_formed_lines_round_trip_in_any_order_among_chatter(ops, spaces, order, chatter):
    """Any decision per fact, written one line each (any order, spacing, chatter lines between):
    the parser returns exactly those operations, in fact order, with no problem but the chatter."""
    lines = [f"{i + 1}:{spaces[i]} {ops[i]}" for i in order]
    text = "\n".join(chatter + lines)
    r = parse_line_ops(text, FACTS, ID_MAP)
    want = []
    for fact, op in zip(FACTS, ops):
        event, _, shown = op.partition(" ")
        if event == "ADD":
            want.append(MemoryOp(Event.ADD, None, fact))
        elif event == "UPDATE":
            want.append(MemoryOp(Event.UPDATE, ID_MAP[shown], fact))
        elif event == "DELETE":
            want.append(MemoryOp(Event.DELETE, ID_MAP[shown], ""))
    assert r.found_json and r.ops == tuple(want), (text, r)
    assert all(p.endswith("not an operation, ignored") for p in r.problems), r.problems
    assert len(r.problems) == sum(1 for c in chatter if c.strip())


def test_regex_language():
    pat = re.compile(line_ops_regex(2, 3))
    assert pat.fullmatch("1: ADD\n2: UPDATE 1\n3: NONE")
    assert pat.fullmatch("1: DELETE 0\n2: ADD\n3: ADD")
    for bad in ("1: ADD\n2: ADD", "1: ADD\n3: ADD\n2: ADD", "1: UPDATE 2\n2: ADD\n3: ADD",
                "1: ADD\n2: ADD\n3: ADD\n", "1: MERGE\n2: ADD\n3: ADD"):
        assert not pat.fullmatch(bad), bad
    assert line_ops_regex(0, 1) == "1: (ADD|NONE)"       # nothing shown: no id to name
    with pytest.raises(ValueError, match="num_facts"):
        line_ops_regex(3, 0)


def test_one_shown_memory_can_be_named():
    pat = re.compile(line_ops_regex(1, 2))
    assert pat.fullmatch("1: UPDATE 0\n2: DELETE 0") and not pat.fullmatch("1: UPDATE 1\n2: ADD")


def test_problems_name_the_line_and_noop_spellings_mean_none():
    text = "1: ADD\n\n5: ADD\n1: NONE\n2: NOOP\n3: no_op"
    r = parse_line_ops(text, FACTS, ID_MAP)
    assert r.ops == (MemoryOp(Event.ADD, None, FACTS[0]),)
    assert r.problems == ("line 3: fact 5 does not exist (3 facts), ignored", "line 4: fact 1 decided again, ignored")
    assert line_decisions(text, 3) == [("ADD", None), ("NONE", None), ("NONE", None)]
    assert line_decisions("2: update #1\n1: delete 0", 3) == [("DELETE", 0), ("UPDATE", 1), ("NONE", None)]
    assert line_decisions(None, 2) == [("NONE", None), ("NONE", None)]
    assert parse_line_ops("2: ADD", FACTS, ID_MAP).problems == ("facts without an operation: [1, 3]",)


def test_non_string_and_the_problem_cap():
    assert parse_line_ops(7, FACTS, ID_MAP) == ParseResult((), ("output is not a string but int",), False)
    for n, tail in ((64, ()), (65, ("... and 1 more problems",))):
        r = parse_line_ops("\n".join(["junk"] * n), FACTS, ID_MAP)
        assert r.problems == tuple(f"line {k}: not an operation, ignored" for k in range(1, 65)) + tail


def test_the_last_resort_guard_reports_and_keeps_nothing(monkeypatch):
    def boom(*args):
        raise RuntimeError("boom")
    monkeypatch.setattr(line_ops, "_parse", boom)
    assert parse_line_ops("1: ADD", FACTS, ID_MAP) == ParseResult(
        (), ("internal parser error: RuntimeError: boom",), False)


@functools.lru_cache(maxsize=None)
def _tiny():
    from memr1_jax.models.registry import load_model
    return load_model("tiny-qwen2")


def test_constrained_samples_always_parse_with_every_fact_decided():
    from memr1_jax.sampling.constraint import manager_automaton
    from memr1_jax.sampling.sampler import SamplingConfig, generate
    m = _tiny()
    tok = m.tokenizer
    auto = manager_automaton(tok, m.cfg.vocab_size, 2, 3, "lines")
    assert auto.num_states < 200
    out = generate(m.cfg, m.params, [tok.encode("manage")], SamplingConfig(temperature=1.0),
                   jax.random.PRNGKey(0), stop_ids=sorted(tok.stop_ids), max_new_tokens=64, num_samples=8,
                   pad_id=tok.pad_id, constraints=auto)
    texts = set()
    for r in range(8):
        ids = out.tokens[r, :out.lengths[r]].tolist()
        assert out.stopped[r] and auto.accepts(ids, sorted(tok.stop_ids))
        text = tok.decode(ids[:-1])
        parsed = parse_line_ops(text, FACTS, ID_MAP)
        assert parsed.found_json and not parsed.problems, (text, parsed.problems)
        texts.add(text)
    assert len(texts) > 1                                   # still a distribution


def test_a_line_format_step_changes_the_bank_as_its_lines_say():
    enc = HashingTestEncoder(dim=32)
    bank, _ = apply(empty_bank(32), [MemoryOp(Event.ADD, None, "Lives in Porto"),
                                     MemoryOp(Event.ADD, None, "Has a cat")], embed_fn=enc, speaker=0)
    cfg = ManagerConfig(output="lines", retrieve_k=2)
    state = make_step(bank, FACTS, 0, 2, "1 May 2023", enc, Retriever(), cfg)
    assert "1. Name is Ana\n2. Moved to Lisbon in May\n3. Has a dog called Rex" in state.prompt
    shown = {v: k for k, v in state.id_map.items()}
    porto = next(mid for mid in shown if bank.text(mid) == "Lives in Porto")
    cat = next(mid for mid in shown if bank.text(mid) == "Has a cat")
    assert f"{shown[porto]}: Lives in Porto" in state.prompt
    completion = f"1: ADD\n2: UPDATE {shown[porto]}\n3: DELETE {shown[cat]}"
    new, report, problems = apply_step(bank, state, completion, enc, cfg)
    assert problems == () and all(r.applied for r in report.results)
    assert sorted(new.text(i) for i in new.host.slot_of) == ["Moved to Lisbon in May", "Name is Ana"]
    assert new.host.timestamps[porto] == "1 May 2023"      # an UPDATE carries its session's date
    assert np.isclose(np.linalg.norm(new.arrays.embeddings[new.host.slot_of[porto]]), 1.0)
