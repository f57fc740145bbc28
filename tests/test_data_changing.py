"""The changing-facts generator: seeded splits in the LoCoMo format, questions answerable from
its own observations through the gold manager's (oracle) bank and not from stale facts, and
the gold operations, agreement and supervised rows the manager's training reads."""

import dataclasses

import numpy as np
import pytest

from memr1_jax.agents.llm import ChatLLM
from memr1_jax.agents.memory_manager import ManagerConfig, build_banks, gold_completion
from memr1_jax.agents.rollout import manager_episode_specs, manager_gold_episodes, pack_episodes
from memr1_jax.config import ConfigError, default_config, override
from memr1_jax.data import default_split, load_conversations, load_locomo, write_flat
from memr1_jax.data.changing import (SIZES, gold_agreement, gold_line_ops, gold_notes, gold_targets,
                                     generate_conversation)
from memr1_jax.eval.metrics import simple_tokenize, token_f1
from memr1_jax.memory import Retriever, line_decisions, parse_line_ops
from memr1_jax.memory.encoder import HashingTestEncoder

ENC = HashingTestEncoder()
LINES = ManagerConfig(retrieve_k=5, max_facts_per_step=4, output="lines")


@pytest.fixture(scope="module")
def split():
    return default_split(load_conversations("changing"))


def _speaker_texts(conv, bank, qa) -> list[str]:
    """The memories of the speaker the question's evidence turn belongs to."""
    turn = next(t for t in conv.turns if t.dia_id == qa.evidence[0])
    spk = 0 if turn.speaker == conv.speaker_a else 1
    return [m["text"] for m in bank.entries(speaker=spk)]


def _extractive_f1(answer: str, texts: list[str]) -> float:
    """A perfect extractive reader: the best token F1 of any contiguous span of one memory."""
    best = 0.0
    for text in texts:
        toks = simple_tokenize(text)
        for i in range(len(toks)):
            for j in range(i + 1, min(len(toks), i + 8) + 1):
                best = max(best, token_f1(" ".join(toks[i:j]), answer))
    return best


def _bank_f1(convs, banks) -> float:
    scores = [_extractive_f1(qa.answer, _speaker_texts(c, banks[c.id], qa)) for c in convs for qa in c.questions]
    return 100 * float(np.mean(scores))


def test_splits_are_seeded_disjoint_and_in_the_locomo_format(split, tmp_path):
    assert (len(split.train), len(split.validation), len(split.test)) == (SIZES["train"], SIZES["val"], SIZES["test"])
    assert generate_conversation("test", 3)[0] == split.test[3]                  # identical on every call
    # different seeds: no test conversation repeats a training one (single facts may recur)
    story = lambda c: tuple(f for s in c.sessions for o in s.observations.values() for f, _ in o)  # noqa: E731
    assert not {story(c) for c in split.test} & {story(c) for c in split.train + split.validation}
    assert sum(len(c.questions) for c in split.test) >= 200
    cats = {q.category for c in split.test for q in c.questions}
    assert cats == {1, 2, 3, 4}                            # previous value, date, retracted, current value
    write_flat(split.test[:2], tmp_path)
    assert load_locomo(tmp_path) == split.test[:2]         # LoCoMo's flat format round-trips
    # every kind of slot event occurs, and every observation has its gold note
    notes = [gold_notes(c) for c in split.train[:16]]
    assert {n.kind for ns in notes for n in ns.values()} == {"set", "change", "correct", "end", "retract", "note"}
    for c, ns in zip(split.train[:16], notes):
        assert {f for s in c.sessions for o in s.observations.values() for f, _ in o} == set(ns)


def test_oracle_bank_answers_everything_and_stale_facts_do_not(split):
    """The gold manager's bank (one memory per slot, the latest fact) holds every answer
    (a perfect extractive reader scores F1 = 100); first values alone score low; adding
    everything keeps every answer but also a stale memory for most slots."""
    convs = split.test
    gold, stats = build_banks(convs, ENC, dataclasses.replace(LINES, kind="gold"))
    assert stats.ops["UPDATE"] > 0 and stats.ops["DELETE"] > 0 and stats.parse_failures == 0
    assert _bank_f1(convs, gold) == 100.0
    first = [dataclasses.replace(c, sessions=c.sessions[:1]) for c in convs]
    stale, _ = build_banks(first, ENC, dataclasses.replace(LINES, kind="add-all"))
    assert _bank_f1(convs, stale) < 50.0
    every, _ = build_banks(convs, ENC, dataclasses.replace(LINES, kind="add-all"))
    for conv in convs:
        notes = gold_notes(conv)
        for bank, most in ((gold[conv.id], 1), (every[conv.id], None)):
            slots = [(m["speaker"], notes[m["text"]].slot) for m in bank.entries() if notes[m["text"]].slot]
            counts = {s: slots.count(s) for s in slots}
            if most == 1:
                assert max(counts.values()) == 1, conv.id
    extra = sum(n - 1 for conv in convs for n in _slot_counts(conv, every[conv.id]).values())
    assert extra >= len(convs) * 4


def _slot_counts(conv, bank) -> dict:
    notes = gold_notes(conv)
    out: dict = {}
    for m in bank.entries():
        slot = notes[m["text"]].slot
        if slot:
            out[(m["speaker"], slot)] = out.get((m["speaker"], slot), 0) + 1
    return out


def test_gold_operations_and_agreement():
    conv, notes = generate_conversation("train", 0)
    name = conv.speaker_a
    city0 = next(f for f, n in notes.items() if f.startswith(name + " lives in ") and n.kind == "set")
    move = f"{name} moved from X to Y in May 2023."
    code = next(f for f, n in notes.items() if f.startswith(name + "'s gym") and n.kind == "set")
    forget = f"{name} asked to forget {name}'s gym locker code."
    filler = f"{name} baked sourdough bread in May 2023."
    notes = {**notes, move: dataclasses.replace(notes[city0], kind="change"),
             forget: dataclasses.replace(notes[code], kind="retract"), filler: dataclasses.replace(notes[city0], slot="", kind="note")}
    shown = [code, city0]
    facts = [move, forget, filler]
    assert gold_targets(facts, shown, notes) == [("UPDATE", {1}), ("DELETE", {0}), ("ADD", set())]
    text = gold_line_ops(facts, shown, notes)
    assert text == "1: UPDATE 1\n2: DELETE 0\n3: ADD"
    assert gold_agreement(line_decisions(text, 3), facts, shown, notes) == 1.0
    assert gold_agreement(line_decisions("1: ADD\n2: DELETE 0\n3: ADD", 3), facts, shown, notes) == pytest.approx(2 / 3)
    assert gold_agreement(line_decisions("1: UPDATE 0\n2: NONE", 3), facts, shown, notes) == 0.0
    assert gold_agreement(line_decisions("garbage", 3), facts, shown, notes) == 0.0
    # with nothing shown, a change is an ADD and a retraction removes nothing
    assert gold_line_ops(facts, [], notes) == "1: ADD\n2: NONE\n3: ADD"


def test_line_decisions_read_lines_as_the_parser_does():
    facts = ["a", "b", "c"]
    text = "Sure:\n2) update id 1\n1: add\n2: DELETE 0\n7: ADD\n"
    assert line_decisions(text, 3) == [("ADD", None), ("UPDATE", 1), ("NONE", None)]
    parsed = parse_line_ops(text, facts, {"0": 10, "1": 11})
    assert [(op.event.value, op.target_id) for op in parsed.ops] == [("ADD", None), ("UPDATE", 11)]
    assert line_decisions(None, 2) == [("NONE", None)] * 2


def test_supervised_rows_are_the_gold_completion_with_advantage_one(split):
    from memr1_jax.models.registry import load_model
    m = load_model("tiny-llama")
    llm = ChatLLM(cfg=m.cfg, params=m.params, tokenizer=m.tokenizer, max_prompt_tokens=4096)
    conv = split.train[0]
    specs = manager_episode_specs(conv, conv.questions, ENC, Retriever(), LINES)
    notes = {conv.id: gold_notes(conv)}
    eps = manager_gold_episodes(llm, specs, notes)
    for spec, ep in zip(specs, eps):
        text = gold_completion(spec.bank, spec.state, notes[conv.id])
        assert llm.tokenizer.decode(list(ep.completion_ids[:-1])) == text
        assert ep.completion_ids[-1] in llm.tokenizer.stop_ids and ep.advantage == 1.0
        assert list(ep.prompt_ids) == llm.chat_ids(spec.state.prompt)
    assert any(e.info["completion"].count("UPDATE") for e in eps)
    batch = pack_episodes(eps, 0)
    np.testing.assert_array_equal(np.asarray(batch.advantages), np.ones(len(eps)))
    with pytest.raises(ValueError, match="fixed advantage"):
        pack_episodes([eps[0], dataclasses.replace(eps[1], advantage=None)], 0)


def test_supervised_warm_start_config_is_checked():
    base = override(default_config(), {"task.agent": "manager", "data.path": "changing", "rl.mini_batch_size": None,
                                       "rollout.old_logprobs_from_sampler": False})
    with pytest.raises(ConfigError, match="rl.group_size"):
        override(base, {"task.manager_sft": True, "rl.group_size": 4, "rl.beta": 0.0})
    with pytest.raises(ConfigError, match="rl.beta"):
        override(base, {"task.manager_sft": True, "rl.group_size": 1, "rl.beta": 0.04})
    override(base, {"task.manager_sft": True, "rl.group_size": 1, "rl.beta": 0.0})
    with pytest.raises(ConfigError, match="task.manager_reward"):
        override(base, {"task.manager_reward": "vibes"})


def test_mixed_sources_keep_their_own_splits(split):
    convs = load_conversations("changing+embedded")
    sp = default_split(convs)
    assert [c.id for c in sp.train] == [c.id for c in split.train] + ["emb-01"]
    assert [c.id for c in sp.validation] == [c.id for c in split.validation] + ["emb-02"]
    with pytest.raises(ValueError, match="more than one source"):
        load_conversations("changing+changing")
