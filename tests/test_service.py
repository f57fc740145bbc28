"""memr1_jax.Memory in process: Mem0's API and shapes, the manager's operations, the store, the Engine."""

from __future__ import annotations

import os
import sqlite3
import threading
import types

import numpy as np
import pytest

from _scripted import Scripted, policy
from memr1_jax import Memory
from memr1_jax.agents.memory_manager import ManagerConfig, apply_step, make_step
from memr1_jax.memory import Retriever, empty_bank
from memr1_jax.memory.encoder import HashingTestEncoder
from memr1_jax.service import MemoryNotFound, StoreError
from memr1_jax.service.memory import DONT_KNOW

STEPS = [["Alice lives in Paris", "Alice works as a nurse"],
         ["Alice lives in Rome", "Alice has a cat named Tom"],
         ["Alice works as a pilot"],
         ["Alice has no longer a cat"],
         ["Alice likes jazz", "Alice lives in Oslo"]]


@pytest.fixture
def memory(store_spec):
    m = Memory({"store": store_spec, "encoder": "hashing", "agents": "untrained", "extraction": "model", "constrained": False}, llm=Scripted())
    yield m
    m.close()


def test_add_applies_the_managers_operations_as_the_training_environment_does(memory):
    # The same facts and the same policy through the RL environment's bank (make_step /
    # apply_step) and through the service must leave the same memories behind.
    enc, cfg = HashingTestEncoder(), ManagerConfig()
    bank, retriever = empty_bank(enc.dim), Retriever()
    events = []
    for i, facts in enumerate(STEPS):
        state = make_step(bank, facts, 0, i, f"day {i}", enc, retriever, cfg)
        bank, report, problems = apply_step(bank, state, policy(state.prompt), enc, cfg)
        assert not problems
        out = memory.add([{"role": "user", "content": f} for f in facts], user_id="alice", timestamp=f"day {i}")
        events += [r["event"] for r in out["results"]]
    assert events == ["ADD", "ADD", "UPDATE", "ADD", "UPDATE", "DELETE", "ADD", "UPDATE"]
    kept = sorted(m["memory"] for m in memory.get_all(filters={"user_id": "alice"})["results"])
    assert kept == sorted(e["text"] for e in bank.entries()) == [
        "Alice likes jazz", "Alice lives in Oslo", "Alice works as a pilot"]
    lives = next(m for m in memory.get_all(filters={"user_id": "alice"})["results"] if "lives" in m["memory"])
    assert [(h["event"], h["old_memory"], h["new_memory"]) for h in memory.history(lives["id"])] == [
        ("ADD", None, "Alice lives in Paris"), ("UPDATE", "Alice lives in Paris", "Alice lives in Rome"),
        ("UPDATE", "Alice lives in Rome", "Alice lives in Oslo")]
    assert lives["created_at"] == "day 0"    # the timestamp the facts were said at


def test_concurrent_adds_to_one_user_are_decided_one_after_another(store_spec):
    # Without the per-scope lock two managers could both see no "lives" memory and both ADD.
    memory = Memory({"store": store_spec, "encoder": "hashing", "agents": "untrained", "extraction": "model", "constrained": False},
                    llm=Scripted(delay=0.05))
    cities = ["Paris", "Rome", "Oslo", "Lima", "Kyiv", "Quito"]
    threads = [threading.Thread(target=memory.add, args=(f"Alice lives in {c}",), kwargs={"user_id": "alice"})
               for c in cities]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kept = memory.get_all(filters={"user_id": "alice"})["results"]
    assert len(kept) == 1 and kept[0]["memory"].startswith("Alice lives in ")
    assert [h["event"] for h in memory.history(kept[0]["id"])] == ["ADD"] + ["UPDATE"] * 5


def test_add_without_inference_and_every_call_return_mem0s_shapes(memory):
    out = memory.add([{"role": "user", "content": "I like tea"}, {"role": "assistant", "content": "Noted"},
                      {"role": "system", "content": "ignored"}], user_id="u1", metadata={"src": "chat"}, infer=False)
    assert [set(r) for r in out["results"]] == [{"id", "memory", "event", "actor_id", "role"}] * 2
    mid = out["results"][0]["id"]
    item = memory.get(mid)
    # Mem0's MemoryItem, plus what produced it
    assert set(item) == {"id", "memory", "hash", "created_at", "updated_at", "score", "user_id", "role", "metadata",
                         "source"}
    assert item["source"]["decided_by"] == "infer=false" and item["source"]["messages"][0]["text"] == "I like tea"
    assert item["metadata"] == {"src": "chat"} and item["score"] is None
    assert "score" not in memory.get_all(filters={"user_id": "u1"})["results"][0]
    hits = memory.search("I like tea", filters={"user_id": "u1"})["results"]
    assert hits[0]["id"] == mid and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert memory.search("I like tea", user_id="u2")["results"] == []     # scopes do not mix
    assert memory.update(mid, text="I like green tea") == {"message": "Memory updated successfully!"}
    assert memory.get(mid)["memory"] == "I like green tea"
    assert memory.delete(mid) == {"message": "Memory deleted successfully!"}
    assert memory.get(mid) is None
    assert [h["event"] for h in memory.history(mid)] == ["ADD", "UPDATE", "DELETE"]
    assert memory.history(mid)[-1]["is_deleted"] is True
    assert memory.delete_all(user_id="u1") == {"message": "Memories deleted successfully!"}
    assert memory.get_all(filters={"user_id": "u1"})["results"] == []


def test_filters_select_by_metadata_with_mem0s_operators(memory):
    for i, (topic, n) in enumerate([("food", 1), ("food", 5), ("travel", 9)]):
        memory.add(f"memory {i}", user_id="u", metadata={"topic": topic, "n": n}, infer=False)

    def got(**cond):
        return sorted(m["memory"] for m in memory.get_all(filters={"user_id": "u", **cond})["results"])
    assert got(topic="food") == ["memory 0", "memory 1"]
    assert got(n={"gte": 5}) == ["memory 1", "memory 2"]
    assert got(topic={"in": ["travel"]}) == ["memory 2"]
    assert got(topic={"ne": "food"}) == ["memory 2"]
    assert got(OR=[{"n": 1}, {"n": 9}]) == ["memory 0", "memory 2"]
    assert got(NOT=[{"topic": "food"}]) == ["memory 2"]
    assert got(topic="*") == ["memory 0", "memory 1", "memory 2"]
    assert got(topic={"icontains": "TRAV"}) == ["memory 2"]
    assert got(n={"gt": "3"}) == []          # incomparable types: no match, no error
    with pytest.raises(ValueError, match="near"):
        got(n={"near": 3})
    with pytest.raises(ValueError, match="at least one of user_id"):
        memory.get_all(filters={"topic": "food"})


@pytest.mark.parametrize("call, match", [
    (lambda m: m.add([], user_id="u"), "non-empty"),
    (lambda m: m.add([{"role": "boss", "content": "x"}], user_id="u"), r"messages\[0\].role='boss'"),
    (lambda m: m.add([{"role": "user", "content": 3}], user_id="u"), r"messages\[0\].content"),
    (lambda m: m.add("x"), "one of user_id, agent_id, run_id"),
    (lambda m: m.add("x", user_id=" "), "user_id must be a non-empty string"),
    (lambda m: m.add("x", user_id="u", metadata=[1]), "metadata must be a dict"),
    (lambda m: m.add("x", user_id="u", timestamp=object()), "timestamp"),
    (lambda m: m.search("", user_id="u"), "query"),
    (lambda m: m.search("q", user_id="u", top_k=0), "top_k"),
    (lambda m: m.update("nope", text="x"), "Memory with id nope not found"),
    (lambda m: m.update("nope"), "at least one of text or metadata"),
    (lambda m: m.delete("nope"), "Memory with id nope not found"),
])
def test_bad_calls_name_the_problem_and_change_nothing(memory, call, match):
    memory.add("kept", user_id="u", infer=False)
    with pytest.raises(ValueError, match=match):
        call(memory)
    assert [m["memory"] for m in memory.get_all(user_id="u")["results"]] == ["kept"]


def test_unknown_ids_raise_memory_not_found(memory):
    with pytest.raises(MemoryNotFound):
        memory.delete("missing")


def test_threads_adding_and_searching_lose_nothing(memory):
    acked, errors = [], []

    def client(k):
        try:
            for i in range(15):
                r = memory.add(f"fact {k} {i}", user_id=f"user{k % 3}", infer=False)
                acked.append(r["results"][0]["id"])
                memory.search(f"fact {k}", user_id=f"user{k % 3}")
        except Exception as e:   # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    stored = {m["id"] for u in range(3) for m in memory.get_all(user_id=f"user{u}", top_k=1000)["results"]}
    assert len(acked) == 120 and stored == set(acked)


def test_store_persists_and_refuses_another_encoder_or_a_damaged_file(tmp_path):
    path = tmp_path / "m.db"
    with Memory({"store": str(path), "encoder": "hashing"}) as m:
        mid = m.add("durable", user_id="u", infer=False)["results"][0]["id"]
    with Memory({"store": str(path), "encoder": "hashing"}) as m, Memory({"store": str(path), "encoder": "hashing"}) as other:
        assert m.get(mid)["memory"] == "durable"
        assert [h["memory"] for h in m.search("durable", user_id="u")["results"]] == ["durable"]
        other.update(mid, text="still durable")    # another connection writes: the search cache sees it
        assert [h["memory"] for h in m.search("still durable", user_id="u")["results"]] == ["still durable"]
    with pytest.raises(StoreError, match=r"m\.db.*dim="):
        Memory({"store": str(path), "encoder": "hashing"}, encoder=HashingTestEncoder(dim=16))
    bad = tmp_path / "bad.db"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(StoreError, match=r"bad\.db"):
        Memory({"store": str(bad), "encoder": "hashing"})
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_config_rejects_unknown_keys_and_values(tmp_path):
    with pytest.raises(ValueError, match="unknown keys.*'lm'"):
        Memory({"lm": "x"})
    with pytest.raises(ValueError, match="manager"):
        Memory({"store": str(tmp_path / "m.db"), "manager": "magic"})


def test_answer_reads_the_scopes_memories_and_says_when_it_does_not_know(store_spec):
    m = Memory({"store": store_spec, "encoder": "hashing", "agents": "untrained",
                "answer_min_score": 0.2}, llm=Scripted())
    m.add("Alice lives in Oslo", user_id="alice", infer=False, timestamp="8 May, 2023")
    m.add("Bob lives in Lima", user_id="bob", infer=False)
    reply = {"text": "Relevant: ...\n**Answer:** Oslo"}
    asked = []

    def generate(prompts, max_new_tokens=64, **kw):
        asked.extend(prompts)
        return [types.SimpleNamespace(text=reply["text"]) for _ in prompts]
    m.llm.generate = generate
    out = m.answer("Where does Alice live?", user_id="alice")
    assert out["answer"] == "Oslo"
    assert [x["memory"] for x in out["memories"]] == ["Alice lives in Oslo"]
    reply["text"] = "**Answer:** Alice lives in Paris"      # on no memory read: not an answer
    out = m.answer("Where does Alice live?", user_id="alice")
    assert out["answer"] == DONT_KNOW and out["completion"] == reply["text"]
    reply["text"] = "**Answer:** Yes, in Oslo"
    assert m.answer("Does Alice live in Oslo?", user_id="alice")["answer"] == "Yes, in Oslo"
    n = len(asked)      # nothing similar enough in the scope: the model is not asked
    assert m.answer("Which instrument does Bob play?", user_id="alice")["answer"] == DONT_KNOW
    assert m.answer("Where does Alice live?", user_id="carol")["answer"] == DONT_KNOW
    assert len(asked) == n


def test_the_manager_decodes_under_its_schema_with_the_shown_ids(tmp_path):
    from memr1_jax.models.registry import load_model
    tiny = load_model("tiny-qwen2")

    class Manager:   # records the automaton it is given; answers what the policy would
        tokenizer, cfg, seen = tiny.tokenizer, tiny.cfg, []

        def generate(self, prompts, max_new_tokens=64, constraints=None):
            self.seen.append(constraints[0])
            return [types.SimpleNamespace(text=policy(p)) for p in prompts]
    manager = Manager()
    m = Memory({"store": str(tmp_path / "m.db"), "encoder": "hashing", "agents": "untrained", "extraction": "model", "constrained": True}, llm=Scripted(),
               manager_llm=manager)
    for facts in STEPS[:2]:
        m.add([{"role": "user", "content": f} for f in facts], user_id="alice")
    second = manager.seen[-1]           # 2 memories shown ("0", "1"), 2 new facts ("2", "3")
    enc = tiny.tokenizer.encode
    assert second.accepts(enc('{"memory": [{"id": "0", "text": "x", "event": "DELETE"}]}'))
    assert second.accepts(enc('{"memory": [{"id": "3", "text": "y", "event": "ADD"}]}'))
    assert not second.accepts(enc('{"memory": [{"id": "4", "text": "y", "event": "ADD"}]}'))
    assert len(m.get_all(user_id="alice")["results"]) == 3


def test_the_line_format_manager_applies_one_operation_per_fact(tmp_path):
    """manager_output="lines": the manager sees "<id>: <memory>" and numbered facts, writes one
    line per fact under the regex automaton, and its lines become the store's changes."""
    from memr1_jax.models.registry import load_model
    tiny = load_model("tiny-qwen2")

    class Manager:
        tokenizer, cfg, seen, prompts = tiny.tokenizer, tiny.cfg, [], []

        def generate(self, prompts, max_new_tokens=64, constraints=None):
            self.seen.append(constraints[0])
            self.prompts.append(prompts[0])
            p = prompts[0].rsplit("Old memories:", 1)[1]
            if "0: Lives in Porto" in p:            # the second add: move, and forget the cat
                return [types.SimpleNamespace(text="1: UPDATE 0\n2: DELETE 1")]
            return [types.SimpleNamespace(text="1: ADD\n2: ADD")]
    manager = Manager()
    m = Memory({"store": str(tmp_path / "m.db"), "encoder": "hashing", "agents": "untrained", "extraction": "model", "constrained": True,
                "manager_output": "lines", "retrieve_k": 1}, llm=Scripted(), manager_llm=manager)
    m.add([{"role": "user", "content": f} for f in ("Lives in Porto", "Has a cat")], user_id="alice")
    out = m.add([{"role": "user", "content": f} for f in ("Lives in Lisbon now", "Has no cat anymore")],
                user_id="alice")
    assert [r["event"] for r in out["results"]] == ["UPDATE", "DELETE"]
    assert [r["memory"] for r in m.get_all(user_id="alice")["results"]] == ["Lives in Lisbon now"]
    second = manager.seen[-1]
    enc = tiny.tokenizer.encode
    assert second.accepts(enc("1: UPDATE 0\n2: DELETE 1")) and second.accepts(enc("1: ADD\n2: NONE"))
    assert not second.accepts(enc("1: UPDATE 2\n2: ADD")) and not second.accepts(enc("1: ADD"))
    assert "1. Lives in Lisbon now\n2. Has no cat anymore" in manager.prompts[-1]
    with pytest.raises(ValueError, match="manager_output='xml'"):
        Memory({"store": str(tmp_path / "n.db"), "encoder": "hashing", "manager_output": "xml"}, llm=Scripted())


@pytest.mark.parametrize("floor", [None, 0.3])
def test_manager_min_score_hides_unrelated_memories_from_the_manager(tmp_path, floor):
    """manager_min_score: a memory less similar than it to every new fact is not shown; with
    nothing shown the fact is ADDed without a manager call. None (the default) shows the top k."""
    from memr1_jax.models.registry import load_model
    tiny = load_model("tiny-qwen2")

    class Manager:
        tokenizer, cfg, prompts = tiny.tokenizer, tiny.cfg, []

        def generate(self, prompts, max_new_tokens=64, constraints=None):
            self.prompts.append(prompts[0].rsplit("Old memories:", 1)[1])
            return [types.SimpleNamespace(text="1: ADD")]
    manager = Manager()
    m = Memory({"store": str(tmp_path / "m.db"), "encoder": "hashing", "agents": "untrained", "constrained": True,
                "manager_output": "lines", "manager_min_score": floor}, llm=Scripted(), manager_llm=manager)
    for said in ("I live in Porto.", "I play the cello.", "I live in Lisbon now."):
        m.add(said, user_id="alice")
    texts = sorted(r["memory"] for r in m.get_all(user_id="alice")["results"])
    assert texts == ["Alice lives in Lisbon now.", "Alice lives in Porto.", "Alice plays the cello."]
    if floor:    # the cello has no word in common with Porto: added with no call; Lisbon sees Porto only
        assert len(manager.prompts) == 1
        assert "Alice lives in Porto." in manager.prompts[0] and "cello" not in manager.prompts[0]
    else:
        assert len(manager.prompts) == 2 and "cello" in manager.prompts[1]
    with pytest.raises(ValueError, match="manager_min_score"):
        Memory({"store": str(tmp_path / "n.db"), "encoder": "hashing", "manager_min_score": 1.5}, llm=Scripted())


# ---------------------------------------------------------------------------- Engine
def test_engine_batches_concurrent_requests_and_matches_a_direct_batch():
    from memr1_jax.agents.llm import ChatLLM
    from memr1_jax.service.engine import Engine
    llm = ChatLLM.from_registry("tiny-qwen2")
    prompts = [llm.chat_ids(p) for p in ("hello there", "a", "what is the capital", "xyz")]
    direct = llm.generate_ids(prompts, max_new_tokens=6)
    engine = Engine(llm, max_batch=4, window_s=1.0)
    limits = [6, 2, 6, 3]
    futs = [engine.submit(p, n) for p, n in zip(prompts, limits)]
    got = [f.result(timeout=120) for f in futs]
    engine.close()
    assert engine.batches == [4]
    for g, d, n in zip(got, direct, limits):
        assert g.completion_ids == d.completion_ids[:n]
        np.testing.assert_allclose(g.logprobs, d.logprobs[:n], rtol=0, atol=1e-6)
