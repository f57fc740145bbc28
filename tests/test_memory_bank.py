"""Semantics of bank operations: ADD / UPDATE / DELETE / NONE, history, capacity, purity."""

import numpy as np
import pytest

from memr1_jax.memory import (Event, HashingTestEncoder, MemoryOp, apply, empty_bank,
                              parse_memory_ops, render_memories, stack_banks)

ENC = HashingTestEncoder(dim=16)


def add(text, **kw):
    return MemoryOp(Event.ADD, None, text, **kw)


def check_invariants(bank):
    a = bank.arrays
    valid = np.asarray(a.valid)
    assert valid.sum() == bank.size == len(bank.host.texts)
    for mid, slot in bank.host.slot_of.items():
        assert valid[slot] and a.ids[slot] == mid
        np.testing.assert_allclose(a.embeddings[slot], ENC([bank.host.texts[mid]])[0], atol=1e-6)
    assert np.all(np.asarray(a.ids)[~valid] == -1)
    assert np.all(np.asarray(a.embeddings)[~valid] == 0)


def test_add_assigns_fresh_ids_and_embeds():
    b0 = empty_bank(16, capacity=4)
    b1, rep = apply(b0, [add("Name is John"), add("Likes pizza", speaker=1, timestamp="1 May 2023")],
                    embed_fn=ENC, session=3)
    assert [r.memory_id for r in rep.results] == [0, 1] and rep.problems == []
    assert b1.text(0) == "Name is John" and b1.get(1)["speaker"] == 1
    assert b1.get(1)["timestamp"] == "1 May 2023" and b1.get(0)["session"] == 3
    assert [h.event for h in b1.host.history] == ["ADD", "ADD"]
    check_invariants(b1)
    # apply is pure: the input bank is untouched
    assert b0.size == 0 and not np.asarray(b0.arrays.valid).any() and b0.host.history == ()


def test_update_keeps_id_and_logs_old_text():
    b, _ = apply(empty_bank(16), [add("User likes cricket")], embed_fn=ENC)
    b2, rep = apply(b, [MemoryOp(Event.UPDATE, 0, "Loves cricket with friends", "User likes cricket")],
                    embed_fn=ENC)
    assert rep.count(Event.UPDATE) == 1 and b2.ids() == [0]
    assert b2.text(0) == "Loves cricket with friends" and b.text(0) == "User likes cricket"
    h = b2.host.history[-1]
    assert (h.memory_id, h.old_text, h.new_text, h.event, h.step) == (
        0, "User likes cricket", "Loves cricket with friends", "UPDATE", 2)
    check_invariants(b2)


def test_delete_and_unknown_ids_are_reported_not_raised():
    b, _ = apply(empty_bank(16), [add("a b"), add("c d")], embed_fn=ENC)
    b2, rep = apply(b, [MemoryOp(Event.DELETE, 0), MemoryOp(Event.UPDATE, 42, "x"),
                        MemoryOp(Event.DELETE, 42), MemoryOp(Event.DELETE, 0),
                        MemoryOp(Event.NONE, 7)], embed_fn=ENC)
    assert [r.applied for r in rep.results] == [True, False, False, False, False]
    assert len(rep.problems) == 4 and all("unknown memory id" in p for p in rep.problems)
    assert b2.ids() == [1] and 0 not in b2.host.texts
    assert b2.host.history[-1].event == "DELETE" and b2.host.history[-1].old_text == "a b"
    check_invariants(b2)


def test_duplicate_adds_are_skipped_per_speaker():
    b, rep = apply(empty_bank(16), [add("Name is John"), add("Name is John "),
                                    add("Name is John", speaker=1)], embed_fn=ENC)
    assert [r.applied for r in rep.results] == [True, False, True]
    assert "duplicate" in rep.problems[0]
    b2, rep2 = apply(b, [add("Name is John")], embed_fn=ENC)
    assert not rep2.results[0].applied and b2.size == 2
    b3, rep3 = apply(b, [add("Name is John")], embed_fn=ENC, dedupe=False)
    assert rep3.results[0].applied and b3.size == 3


def test_add_after_delete_gets_new_id_and_reuses_slot():
    b, _ = apply(empty_bank(16, capacity=2), [add("one"), add("two")], embed_fn=ENC)
    slot0 = b.get(0)["slot"]
    b2, _ = apply(b, [MemoryOp(Event.DELETE, 0)], embed_fn=ENC)
    b3, rep = apply(b2, [add("one")], embed_fn=ENC)  # same text as the deleted one: not a duplicate
    assert rep.added_ids == [2] and b3.ids() == [1, 2]
    assert b3.get(2)["slot"] == slot0 and b3.capacity == 2
    check_invariants(b3)


def test_several_ops_in_one_output_applied_in_order():
    b, _ = apply(empty_bank(16), [add("I really like cheese pizza"), add("Loves cheese pizza"),
                                  add("User likes to play cricket")], embed_fn=ENC)
    shown, id_map = render_memories(b.entries())
    out = ('{"memory": [{"id": "0", "text": "Loves cheese and chicken pizza", "event": "UPDATE", '
           '"old_memory": "I really like cheese pizza"}, {"id": "1", "text": "Loves cheese pizza", '
           '"event": "DELETE"}, {"id": "2", "text": "User likes to play cricket", "event": "NONE"}, '
           '{"id": "3", "text": "Name is John", "event": "ADD"}, {"id": "1", "text": "x", "event": "UPDATE"}]}')
    parsed = parse_memory_ops(out, id_map)
    assert parsed.ok and len(parsed.ops) == 5
    b2, rep = apply(b, parsed.ops, embed_fn=ENC)
    assert [r.applied for r in rep.results] == [True, True, True, True, False]  # id 1 deleted just before
    assert {m["id"]: m["text"] for m in b2.entries()} == {
        0: "Loves cheese and chicken pizza", 2: "User likes to play cricket", 3: "Name is John"}
    assert [h.event for h in b2.host.history[3:]] == ["UPDATE", "DELETE", "NONE", "ADD"]
    assert b2.revision == b.revision + 1 and len(b2.host.lineage) == len(b.host.lineage) + 1
    check_invariants(b2)


def test_capacity_doubles_when_full():
    b = empty_bank(16, capacity=2)
    caps = []
    for i in range(9):
        b, _ = apply(b, [add(f"fact number {i}")], embed_fn=ENC)
        caps.append(b.capacity)
    assert caps == [2, 2, 4, 4, 8, 8, 8, 8, 16]
    assert b.ids() == list(range(9))
    check_invariants(b)
    b2, _ = apply(empty_bank(16, capacity=1), [add(f"x{i}") for i in range(5)], embed_fn=ENC)
    assert b2.capacity == 8 and b2.size == 5


def test_none_only_apply_keeps_arrays_and_revision():
    b, _ = apply(empty_bank(16), [add("x y")], embed_fn=ENC)
    b2, rep = apply(b, [MemoryOp(Event.NONE, 0)], embed_fn=ENC)
    assert rep.count(Event.NONE) == 1 and b2.arrays is b.arrays and b2.revision == b.revision
    assert b2.host.history[-1].event == "NONE"


def test_precomputed_embeddings_and_bad_shapes():
    b = empty_bank(4)
    emb = np.eye(4, dtype=np.float32)[:2] * 3
    b2, _ = apply(b, [add("a"), add("b")], embeddings=emb)
    np.testing.assert_allclose(b2.get(1)["embedding"], [0, 1, 0, 0])   # normalised
    with pytest.raises(ValueError, match="embeddings must have shape"):
        apply(b, [add("a")], embeddings=np.zeros((1, 3)))
    with pytest.raises(ValueError, match="need embed_fn"):
        apply(b, [add("a")])
    _, rep = apply(empty_bank(16), [add("   "), MemoryOp(Event.UPDATE, None, "x")], embed_fn=ENC)
    assert not any(r.applied for r in rep.results) and len(rep.problems) == 2


def test_stack_banks_pads_to_common_capacity():
    b1, _ = apply(empty_bank(16, capacity=2), [add("a"), add("b"), add("c")], embed_fn=ENC)
    b2, _ = apply(empty_bank(16, capacity=2), [add("d")], embed_fn=ENC)
    s = stack_banks([b1, b2])
    assert s.embeddings.shape == (2, 4, 16) and s.valid.sum() == 4
    assert list(s.ids[1]) == [0, -1, -1, -1]
