"""Agent plumbing with a scripted 'LLM' and the hashing test encoder: prompts, op
application, rewards, and bank construction over a real (embedded) conversation."""

import json

import pytest

from memr1_jax.agents.answer_agent import AnswerConfig, answer_prompts, answer_reward
from memr1_jax.agents.memory_manager import (ManagerConfig, apply_step, build_banks,
                                             conversation_fact_batches, make_step)
from memr1_jax.agents.prompts import extract_answer, parse_judge_label
from memr1_jax.data import make_embedded_dataset
from memr1_jax.memory import Event, HashingTestEncoder, Retriever, empty_bank


@pytest.fixture(scope="module")
def enc():
    return HashingTestEncoder(dim=64)


def test_extract_answer_variants():
    assert extract_answer("**Memories selected as relevant:**\n- a\n**Answer:** beach") == ("beach", True)
    assert extract_answer("Answer: Paris\n\nmore text") == ("Paris", True)
    # the last marker wins (models restate the instruction first)
    assert extract_answer("output the final answer after **Answer:**\n**Answer:** 7 May 2023") == ("7 May 2023", True)
    assert extract_answer("I think it is\nBoston") == ("Boston", False)
    assert extract_answer("") == ("", False)


def test_parse_judge_label():
    assert parse_judge_label('Same topic. {"label": "CORRECT"}') == 1
    assert parse_judge_label('{"label": "WRONG"}') == 0
    assert parse_judge_label("The answer is WRONG.") == 0
    assert parse_judge_label("CORRECT or WRONG?") is None
    assert parse_judge_label("no idea") is None


def test_manager_step_update_delete_add(enc):
    cfg = ManagerConfig(retrieve_k=5)
    retriever = Retriever()
    bank = empty_bank(64)
    # step 1: an empty bank shows "Current memory is empty." and ADDs are applied
    st = make_step(bank, ["Alice lives in Paris", "Alice has a dog"], 0, 1, "1 May, 2023", enc, retriever, cfg)
    assert "Current memory is empty." in st.prompt and st.id_map == {}
    out = json.dumps({"memory": [{"id": "0", "text": "Alice lives in Paris", "event": "ADD"},
                                 {"id": "1", "text": "Alice has a dog", "event": "ADD"}]})
    bank, report, problems = apply_step(bank, st, out, enc, cfg)
    assert problems == () and bank.size == 2 and report.count(Event.ADD) == 2
    # step 2: the prompt lists the related memories with small ids mapped to bank ids
    st2 = make_step(bank, ["Alice moved to Rome"], 0, 2, "9 June, 2023", enc, retriever, cfg)
    shown = {v: k for k, v in st2.id_map.items()}
    assert set(shown) == set(bank.ids())
    paris = next(m for m in bank.ids() if "Paris" in bank.text(m))
    dog = next(m for m in bank.ids() if "dog" in bank.text(m))
    out2 = ("```json\n" + json.dumps({"memory": [
        {"id": shown[paris], "text": "Alice lives in Rome", "event": "UPDATE", "old_memory": "Alice lives in Paris"},
        {"id": shown[dog], "text": "Alice has a dog", "event": "DELETE"},
        {"id": "99", "text": "ghost", "event": "UPDATE"}]}) + "\n```")
    bank2, report2, problems2 = apply_step(bank, st2, out2, enc, cfg)
    assert bank2.text(paris) == "Alice lives in Rome"          # UPDATE keeps the id
    assert dog not in bank2.ids()                                # DELETE removes it
    assert any("99" in p for p in problems2)                     # unknown id reported, not applied
    assert bank2.get(paris)["timestamp"] == "9 June, 2023"
    assert bank.text(paris) == "Alice lives in Paris"            # apply is pure
    # garbage output: nothing applied, a problem reported
    bank3, _, problems3 = apply_step(bank2, st2, "I cannot help with that", enc, cfg)
    assert bank3.ids() == bank2.ids() and problems3


def test_build_banks_add_all_and_answer_prompts(enc):
    conv = make_embedded_dataset()[0]
    cfg = ManagerConfig(kind="add-all")
    banks, stats = build_banks([conv], enc, cfg)
    bank = banks[conv.id]
    n_facts = sum(len(f) for _, _, _, f in conversation_fact_batches(conv, cfg.max_facts_per_step))
    assert stats.steps == len(conversation_fact_batches(conv, cfg.max_facts_per_step))
    assert bank.size + stats.skipped_ops == n_facts              # only exact duplicates are skipped
    by_speaker = [len(bank.entries(speaker=s)) for s in (0, 1)]
    assert all(n > 0 for n in by_speaker)

    acfg = AnswerConfig(k_per_speaker=3)
    qs = [q.question for q in conv.questions[:4]]
    prompts = answer_prompts(conv, bank, qs, enc, Retriever(), acfg)
    assert len(prompts) == 4
    for q, p in zip(qs, prompts):
        assert p.rstrip().endswith(f"Question: {q}")
        assert f"Memories for user {conv.speaker_a}:" in p and f"Memories for user {conv.speaker_b}:" in p
        assert "**Answer:**" in p
        block_a = p.split(f"Memories for user {conv.speaker_a}:")[1].split(f"Memories for user {conv.speaker_b}:")[0]
        assert block_a.count("\n- ") == 3                        # k per speaker, timestamped lines
    no_distill = answer_prompts(conv, bank, qs[:1], enc, Retriever(), AnswerConfig(k_per_speaker=3, distill=False))
    assert "**Answer:**" not in no_distill[0]


def test_answer_reward():
    cfg = AnswerConfig()
    assert answer_reward("**Answer:** The beach.", "beach", cfg)[0] == 1.0
    assert answer_reward("**Answer:** mountains", "beach", cfg)[0] == 0.0
    shaped = AnswerConfig(f1_weight=0.5, format_penalty=0.1)
    r, ans, marked = answer_reward("near the beach house", "beach house", shaped)
    assert not marked and ans == "near the beach house"
    assert r == pytest.approx(0.5 * 2 * (2 / 4 * 1.0) / (2 / 4 + 1.0) - 0.1)


class _ScriptedManager:
    """A line-format manager whose operations are a function of each fact and the memories its
    prompt shows (ADD, UPDATE / DELETE of a shown memory, NONE, chosen by a hash): the same
    prompt always gets the same answer, whatever batch it arrives in."""

    def __init__(self):
        self.batches = []

    @staticmethod
    def answer(prompt: str) -> str:
        import hashlib
        old, new = prompt.rsplit("Old memories:", 1)[1].split("New facts:", 1)   # after the example
        shown = [line for line in old.strip().splitlines() if line[:1].isdigit()]      # "(none)": none
        facts = [line.split(". ", 1)[1] for line in new.split("Write one line", 1)[0].strip().splitlines()]
        lines = []
        for i, fact in enumerate(facts, 1):
            h = int(hashlib.sha256(fact.encode()).hexdigest(), 16)
            op = h % 4 if shown else 0
            j = (h // 4) % max(len(shown), 1)
            lines.append(f"{i}: " + ("ADD", f"UPDATE {j}", f"DELETE {j}", "NONE")[op])
        return "\n".join(lines)

    def generate(self, prompts, max_new_tokens=None, **kw):
        import types
        self.batches.append(len(prompts))
        return [types.SimpleNamespace(text=self.answer(p)) for p in prompts]


def test_lockstep_streams_equal_a_sequential_reference_per_speaker(enc):
    """build_banks advances every (conversation, speaker) stream one step per round, one LLM batch
    a round, all speakers in one bank per conversation. A reference runs each stream alone, in
    order, on a bank of its own: the prompts each stream saw, and the memories each speaker ends
    with (text, session, date, in creation order), are the same."""
    from memr1_jax.agents.memory_manager import make_step
    convs = make_embedded_dataset()[:3]
    cfg = ManagerConfig(kind="llm", output="lines", max_facts_per_step=3, retrieve_k=3)
    llm, seen = _ScriptedManager(), {}
    banks, stats = build_banks(convs, enc, cfg, llm=llm,
                               on_step=lambda cid, st, out, rep, probs: seen.setdefault((cid, st.speaker), []).append(
                                   (st.prompt, out)))
    assert max(llm.batches) == 2 * len(convs) and sum(llm.batches) == stats.steps   # one batch a round
    ops = stats.ops
    assert ops["ADD"] and ops["UPDATE"] and ops["DELETE"] and stats.parse_failures == 0
    retriever = Retriever()
    for conv in convs:
        for spk in (0, 1):
            bank, prompts = empty_bank(int(enc(["x"]).shape[-1])), []
            for sess, s, date, facts in conversation_fact_batches(conv, cfg.max_facts_per_step):
                if s != spk:
                    continue
                st = make_step(bank, facts, spk, sess, date, enc, retriever, cfg)
                out = _ScriptedManager.answer(st.prompt)
                bank, _, problems = apply_step(bank, st, out, enc, cfg)
                assert not problems
                prompts.append((st.prompt, out))
            assert seen[(conv.id, spk)] == prompts, (conv.id, spk)
            got = [{k: v for k, v in e.items() if k != "id"} for e in banks[conv.id].entries(speaker=spk)]
            want = [{k: v for k, v in e.items() if k != "id"} for e in bank.entries(speaker=spk)]
            assert got == want and want, (conv.id, spk)


def test_relatedness_floor_shows_only_memories_that_pass_it(enc):
    """ManagerConfig.min_score: a step shows exactly the top-k memories whose cosine to one of its
    facts reaches the floor (checked against float64 cosines of the bank's own vectors), and
    build_banks ADDs a step that shows nothing without asking the model."""
    import numpy as np
    conv = make_embedded_dataset()[0]
    banks, _ = build_banks([conv], enc, ManagerConfig(kind="add-all"))
    bank = banks[conv.id]
    facts = [f for _, _, _, f in conversation_fact_batches(conv, 3)][-1]
    live = [m for m in bank.ids() if bank.get(m)["speaker"] == 0]
    vecs = np.asarray(enc([bank.text(m) for m in live]), np.float64)
    q = np.asarray(enc(facts), np.float64)
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).T
    for floor in (0.0, 0.2, 0.4):
        cfg = ManagerConfig(kind="llm", output="lines", retrieve_k=3, min_score=floor)
        st = make_step(bank, facts, 0, 99, "1 May, 2023", enc, Retriever(), cfg)
        top = {live[j] for row in cos for j in np.argsort(-row, kind="stable")[:3] if row[j] >= floor - 1e-6}
        assert set(st.id_map.values()) == top
    with pytest.raises(ValueError, match="min_score=1.5"):
        ManagerConfig(min_score=1.5)
    # Only the steps that show a memory reach the model; the others ADD every fact.
    llm, seen = _ScriptedManager(), []
    _, stats = build_banks([conv], enc, ManagerConfig(kind="llm", output="lines", min_score=0.5), llm=llm,
                           on_step=lambda cid, st, out, rep, probs: seen.append((bool(st.id_map), out, rep)))
    asked = [s for s in seen if s[0]]
    assert 0 < len(asked) < len(seen) and sum(llm.batches) == len(asked)
    assert all(out is None and all(r.op.event == Event.ADD for r in rep.results) for shown, out, rep in seen
               if not shown)
