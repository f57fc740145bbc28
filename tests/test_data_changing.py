"""The changing-facts generator: seeded splits in the LoCoMo format, questions answerable from
its own observations through the gold manager's (oracle) bank and not from stale facts, and
the gold operations, agreement and supervised rows the manager's training reads."""

import dataclasses

import numpy as np
import pytest

from memr1_jax.agents.llm import ChatLLM
from memr1_jax.agents.memory_manager import ManagerConfig, build_banks, gold_completion, shown_texts
from memr1_jax.agents.rollout import manager_episode_specs, manager_gold_episodes, manager_step_specs, pack_episodes
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
    """The memories of the speaker the question's evidence turn belongs to, each after its date, as
    the Answer Agent reads them (a change said without a date is dated by its session)."""
    turn = next(t for t in conv.turns if t.dia_id == qa.evidence[0])
    spk = 0 if turn.speaker == conv.speaker_a else 1
    return [f"{m['timestamp']}. {m['text']}" for m in bank.entries(speaker=spk)]


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


def _oracle_bank_answers_all(convs) -> dict:
    """The gold manager's banks (UPDATEs and DELETEs among their operations, every step parsed),
    from which a perfect extractive reader answers every question."""
    gold, stats = build_banks(convs, ENC, dataclasses.replace(LINES, kind="gold"))
    assert stats.ops["UPDATE"] > 0 and stats.ops["DELETE"] > 0 and stats.parse_failures == 0
    assert _bank_f1(convs, gold) == 100.0
    return gold


def _first_session_f1(convs) -> float:
    """The perfect reader's F1 from the first session's facts alone (first values only)."""
    first = [dataclasses.replace(c, sessions=c.sessions[:1]) for c in convs]
    stale, _ = build_banks(first, ENC, dataclasses.replace(LINES, kind="add-all"))
    return _bank_f1(convs, stale)


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
    gold = _oracle_bank_answers_all(convs)
    assert _first_session_f1(convs) < 50.0
    every, _ = build_banks(convs, ENC, dataclasses.replace(LINES, kind="add-all"))
    for conv in convs:   # the oracle keeps one memory per (speaker, slot) ...
        assert max(_slot_counts(conv, gold[conv.id]).values()) == 1, conv.id
    # ... add-all keeps the stale ones beside the latest
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


def test_supervised_rows_train_the_cross_entropy():
    """Advantage-1 rows through the GRPO update (ratio 1 on its first pass): the first Adam step
    moves every weight against the sign of the gradient of the completions' mean token NLL,
    computed here without rl/update.py, and a few steps lower that NLL."""
    import jax
    import jax.numpy as jnp
    from _rl_toy import fresh_params, tiny
    from memr1_jax.models import decoder as dec
    from memr1_jax.rl.train_state import RLConfig, init_train_state
    from memr1_jax.rl.update import make_batch, make_update_fn

    cfg = tiny(vocab=64, num_layers=1)
    rng = np.random.default_rng(0)
    b, p, r = 4, 6, 5
    tokens = rng.integers(3, 64, (b, p + r))
    valid = np.ones((b, p + r), bool)
    resp = np.zeros((b, p + r), bool)
    resp[:, p:] = True
    valid[1, p + 3:], resp[1, p + 3:] = False, False          # a shorter completion
    tokens = np.where(valid, tokens, 0)
    batch = make_batch(tokens, valid, resp, np.ones(b, np.float32), prompt_len=p, advantages=np.ones(b, np.float32))

    def nll(params):   # mean over completion tokens of -log p(token | prefix), float32 forward
        logits, _ = dec.forward(cfg, params, jnp.asarray(tokens), dec.positions_from_valid(jnp.asarray(valid)),
                             dec.causal_mask(jnp.asarray(valid)))
        logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
        picked = jnp.take_along_axis(logp, jnp.asarray(tokens)[:, 1:, None], axis=-1)[..., 0]
        mask = jnp.asarray(resp)[:, 1:]
        return -jnp.sum(jnp.where(mask, picked, 0.0)) / jnp.sum(mask)

    params = fresh_params(cfg)
    rl = RLConfig(algorithm="grpo", group_size=1, beta=0.0, learning_rate=1e-3, max_grad_norm=None,
                  shuffle=False, logprob_chunk=16)
    state = init_train_state(cfg, rl, params, jax.random.PRNGKey(1))
    up = make_update_fn(cfg, rl)
    grad = jax.grad(nll)(params)
    before = nll(params)
    state, _ = up(state, batch)
    moved = jax.tree_util.tree_map(lambda new, old: np.asarray(new) - np.asarray(old), state.params, params)
    for d, g in zip(jax.tree_util.tree_leaves(moved), jax.tree_util.tree_leaves(grad)):
        g = np.asarray(g)
        big = np.abs(g) > 1e-6 * np.abs(g).max()
        np.testing.assert_array_equal(np.sign(d[big]), -np.sign(g[big]))
    for _ in range(4):
        state, _ = up(state, batch)
    assert float(nll(state.params)) < 0.9 * float(before)


def test_gold_reward_scores_each_sample_without_the_reader(split):
    """task.manager_reward="gold": each sample earns the fraction of facts decided as the gold
    operations; no answer is generated (EM / F1 NaN); "answer" keeps the paper's reward and
    still reports the agreement."""
    import jax
    from test_train import ScriptedLLM
    from memr1_jax.agents.answer_agent import AnswerConfig
    from memr1_jax.agents.memory_manager import shown_texts
    from memr1_jax.agents.rollout import manager_rollouts
    from memr1_jax.sampling.sampler import SamplingConfig

    conv = split.train[0]
    notes = {conv.id: gold_notes(conv)}
    specs = manager_episode_specs(conv, conv.questions, ENC, Retriever(), LINES)
    spec = next(s for s in specs if "UPDATE" in gold_completion(s.bank, s.state, notes[conv.id]))
    gold = gold_completion(spec.bank, spec.state, notes[conv.id])
    n = len(spec.state.facts)
    all_add = "\n".join(f"{k}: ADD" for k in range(1, n + 1))
    outputs = [gold, all_add, "nothing useful"]
    llm = ScriptedLLM(lambda prompt, g: outputs[g])
    eps = manager_rollouts(llm, "POLICY", None, None, [spec], ENC, Retriever(), LINES, AnswerConfig(), 3,
                           SamplingConfig(1.0), jax.random.PRNGKey(0), gold=notes, reward="gold")
    expected = gold_agreement(line_decisions(all_add, n), spec.state.facts, shown_texts(spec.bank, spec.state),
                              notes[conv.id])
    assert [e.reward for e in eps] == [1.0, expected, 0.0] and expected < 1.0
    assert all(np.isnan(e.info["em"]) for e in eps) and len(llm.calls) == 1
    reader = ScriptedLLM(lambda prompt, g: "**Answer:** " + spec.qa.answer)
    eps = manager_rollouts(llm, "POLICY", reader, "FROZEN", [spec], ENC, Retriever(), LINES,
                           AnswerConfig(), 3, SamplingConfig(1.0), jax.random.PRNGKey(0),
                           gold=notes, reward="answer")
    assert [e.info["gold_agreement"] for e in eps] == [1.0, expected, 0.0]
    assert [e.reward for e in eps] == [1.0, 1.0, 1.0]          # EM: the reader answers right whatever the bank


def test_batched_manager_rollout_equals_one_at_a_time(split):
    """Several specs decoded as one batch (padding, length buckets, one automaton per row) give
    each spec the operations and gold rewards it gets alone (greedy, a real tiny model under the
    line format's automaton)."""
    import jax
    from memr1_jax.agents.answer_agent import AnswerConfig
    from memr1_jax.agents.rollout import manager_rollouts
    from memr1_jax.models.registry import load_model
    from memr1_jax.sampling.sampler import SamplingConfig

    m = load_model("tiny-qwen2")
    llm = ChatLLM(cfg=m.cfg, params=m.params, tokenizer=m.tokenizer, batch_size=8, max_prompt_tokens=256)
    cfg = dataclasses.replace(LINES, constrained=True, max_new_tokens=16)
    conv = split.train[1]
    notes = {conv.id: gold_notes(conv)}
    specs = manager_episode_specs(conv, conv.questions, ENC, Retriever(), cfg)[:5]
    run = lambda items: manager_rollouts(llm, m.params, None, None, items, ENC, Retriever(), cfg,  # noqa: E731
                                         AnswerConfig(), 1, SamplingConfig(0.0), jax.random.PRNGKey(0),
                                         gold=notes, reward="gold")
    together = run(specs)
    alone = [e for s in specs for e in run([s])]
    key = lambda e: (e.info["completion"], e.info["applied"], e.reward, e.completion_ids)  # noqa: E731
    assert [key(e) for e in together] == [key(e) for e in alone]
    assert len({len(s.state.facts) for s in specs} | {len(s.state.id_map) for s in specs}) > 1   # rows differ


def test_step_items_cover_every_fact_once_with_its_gold_operation(split):
    """task.manager_items="steps": every observation of a training conversation is in exactly one
    item, in order, over the add-all snapshot the question items use; retractions (which no
    question cites) are among the gold DELETEs."""
    events = {}
    for conv in split.train[:6]:
        cache = {}
        steps = manager_step_specs(conv, ENC, Retriever(), LINES, cache)
        said = [f for s in conv.sessions for name in (conv.speaker_a, conv.speaker_b)
                for f, _ in s.observations.get(name, ())]
        assert [f for spec in steps for f in spec.state.facts] == said
        assert all(len(spec.state.facts) <= LINES.max_facts_per_step for spec in steps)
        for q in manager_episode_specs(conv, conv.questions, ENC, Retriever(), LINES, cache):
            same = [s for s in steps if s.state.session == q.state.session and s.state.facts == q.state.facts]
            assert same and same[0].bank is q.bank          # the same snapshot, shared through the cache
        notes = gold_notes(conv)
        for spec in steps:
            for ev, _ in gold_targets(spec.state.facts, shown_texts(spec.bank, spec.state), notes):
                events[ev] = events.get(ev, 0) + 1
    assert events.get("DELETE", 0) > 0 and events.get("UPDATE", 0) > 0 and events.get("ADD", 0) > 0


def test_sparse_step_items_see_smaller_banks_with_the_same_facts(split):
    conv = split.train[0]
    full = manager_step_specs(conv, ENC, Retriever(), LINES)
    sparse = manager_step_specs(conv, ENC, Retriever(), LINES, keep=0.25, seed=0)
    again = manager_step_specs(conv, ENC, Retriever(), LINES, keep=0.25, seed=0)
    assert [s.state.facts for s in sparse] == [s.state.facts for s in full]
    assert [s.bank.size for s in sparse] == [s.bank.size for s in again]            # seeded
    assert sum(s.bank.size for s in sparse) < 0.5 * sum(s.bank.size for s in full)
    assert all(a.bank.size <= b.bank.size for a, b in zip(sparse, full))


def test_crowd_step_items_show_the_other_speakers_memories_and_gold_never_targets_them(split):
    conv = split.train[0]
    notes = gold_notes(conv)
    full = manager_step_specs(conv, ENC, Retriever(), LINES)
    crowd = manager_step_specs(conv, ENC, Retriever(), LINES, crowd=True)
    assert [s.state.facts for s in crowd] == [s.state.facts for s in full]
    foreign = targeted = 0
    for spec in crowd:
        shown = shown_texts(spec.bank, spec.state)
        who = {notes[spec.state.facts[0]].who}
        others = {i for i, m in enumerate(shown) if m in notes and notes[m].who not in who}
        foreign += len(others)
        for ev, ids in gold_targets(spec.state.facts, shown, notes):
            assert not ids & others          # another person's slot is never the one to change
            targeted += bool(ids)
    assert foreign > 0 and targeted > 0
    # ... and without the crowd the other speaker's memories are never shown
    for spec in full:
        shown = shown_texts(spec.bank, spec.state)
        assert all(notes[m].who == notes[spec.state.facts[0]].who for m in shown if m in notes)


def test_plain_conversations_are_unchanged_by_the_people_variant(split):
    """The chg- conversations and notes every recorded result was measured on: pinned (the
    variant draws from its own stream)."""
    import hashlib
    digest = lambda x: hashlib.sha1(repr(x).encode()).hexdigest()[:12]  # noqa: E731
    convs = split.train + split.validation + split.test
    assert digest(convs) == "6d78be815958"
    assert digest([sorted(gold_notes(c).items()) for c in convs]) == "67e8fa5c6946"


@pytest.fixture(scope="module")
def people():
    return default_split(load_conversations("changing-people"))


def test_people_variant_oracle_bank_answers_everything(people):
    """data.path="changing-people": seeded chp- splits of the same sizes; the gold manager's bank
    answers every question (relatives included) and the first session alone does not."""
    assert (len(people.train), len(people.validation), len(people.test)) == (64, 8, 16)
    assert all(c.id.startswith("chp-") for c in people.all)
    assert generate_conversation("val", 2, people=True)[0] == people.validation[2]
    convs = people.test
    assert sum(len(c.questions) for c in convs) >= 200
    assert any("'s cousin " in q.question or "'s friend " in q.question for c in convs for q in c.questions)
    _oracle_bank_answers_all(convs)
    assert _first_session_f1(convs) < 40.0
    for c in people.train[:16]:
        assert {f for s in c.sessions for o in s.observations.values() for f, _ in o} == set(gold_notes(c))
    mixed = default_split(load_conversations("changing+changing-people"))
    assert len(mixed.train) == 128 and {c.id[:4] for c in mixed.test} == {"chg-", "chp-"}


def test_people_variant_steps_teach_what_a_service_meets(people):
    """Its steps show small banks where the gold operation is ADD (a memory or two, unrelated);
    a near-namesake's fact beside the other's memory is an ADD and a relative's move UPDATEs
    that relative's memory only; "forget my code" DELETEs."""
    from memr1_jax.data.changing import _NEAR_NAMES
    small_add = namesake_add = move = deletes = 0
    for conv in people.train[:24]:
        notes = gold_notes(conv)
        for spec in manager_step_specs(conv, ENC, Retriever(), LINES):
            shown = shown_texts(spec.bank, spec.state)
            for fact, (ev, ids) in zip(spec.state.facts, gold_targets(spec.state.facts, shown, notes)):
                note = notes[fact]
                small_add += 1 <= len(shown) <= 2 and ev == "ADD"
                deletes += ev == "DELETE"
                if " " not in note.slot:
                    continue
                name = note.slot.split()[1]
                pair = next(p for p in _NEAR_NAMES if name in p)
                twin = [m for m in shown if m in notes and notes[m].who == note.who and " " in notes[m].slot
                        and notes[m].slot.split()[-1] in pair and notes[m].slot != note.slot]
                if twin and note.kind == "set":
                    namesake_add += 1
                    assert ev == "ADD"
                if note.kind == "change" and ids:
                    move += 1
                    assert ev == "UPDATE" and all(notes[shown[i]].slot == note.slot for i in ids)
    assert small_add >= 20 and namesake_add >= 3 and move >= 10 and deletes >= 3


def test_people_variant_says_changes_as_users_do(people):
    """Neither a month in a fact nor its absence gives its operation away (the shipped manager of
    2026-12-07 UPDATEd "Alice moved to Lisbon in June 2023." and ADDed "Alice moved to Lisbon."):
    dated first values and dateless changes both occur, at rates a few points apart. Changes
    are also said in relative time and the first person, some speakers' facts are the service's
    own rewriting (``sentence_facts``), and a speaker the service calls "The user" occurs."""
    import re

    from memr1_jax.agents.message_facts import sentence_facts
    from memr1_jax.data.embedded import MONTHS
    dated = re.compile(r"\b(%s) \d{4}\b" % "|".join(MONTHS))
    counts = {(change, has): 0 for change in (False, True) for has in (False, True)}
    relative = first_person = service_words = 0
    for conv in people.train:
        notes = gold_notes(conv)
        said = {f: t.text for s in conv.sessions for o in s.observations.values() for f, d in o
                for t in s.turns if t.dia_id == d}
        for fact, note in notes.items():
            if note.kind in ("set", "change", "correct", "end"):
                counts[note.kind != "set", bool(dated.search(fact))] += 1
            relative += note.kind == "change" and ("last week" in fact or "a few days ago" in fact)
            first_person += note.kind == "change" and " my " in f" {said[fact].lower()}"
            service_words += [fact] == sentence_facts(said[fact], conv.speaker_a if fact.startswith(conv.speaker_a)
                                                       else conv.speaker_b) and note.kind != "note"
    p_change = {has: counts[True, has] / (counts[True, has] + counts[False, has]) for has in (False, True)}
    assert min(counts.values()) >= 100 and abs(p_change[True] - p_change[False]) < 0.1, (counts, p_change)
    assert relative >= 20 and first_person >= 20 and service_words >= 200, (relative, first_person, service_words)
    assert any(c.speaker_a == "The user" for c in people.train)


def test_counterfactual_items_differ_from_their_step_only_in_the_slots_memory(people):
    """task.manager_counterfactual: each step that changes or retracts a slot, again without the
    speaker's memories of that slot; its facts' gold turns from UPDATE / DELETE to ADD / NONE,
    every other memory shown stays available, and nothing of the step's own facts changes."""
    from memr1_jax.agents.rollout import manager_counterfactual_specs
    flips = 0
    for conv in people.train[:6] + default_split(load_conversations("changing")).train[:2]:
        notes = gold_notes(conv)
        steps = {(s.state.session, s.state.speaker, s.state.facts): s
                 for s in manager_step_specs(conv, ENC, Retriever(), LINES)}
        counter = manager_counterfactual_specs(conv, notes, ENC, Retriever(), LINES)
        assert counter and all(c.state.facts for c in counter)
        for c in counter:
            real = steps[(c.state.session, c.state.speaker, c.state.facts)]        # the same step's facts
            name = (conv.speaker_a, conv.speaker_b)[c.state.speaker]
            changed = {notes[f].slot for f in c.state.facts if notes[f].kind in ("change", "correct", "end", "retract")}
            kept = [m["text"] for m in c.bank.entries()]
            assert not [m for m in kept if notes[m].who == name and notes[m].slot in changed]
            assert c.bank.size < real.bank.size
            gold_c = gold_targets(c.state.facts, shown_texts(c.bank, c.state), notes)
            gold_r = gold_targets(real.state.facts, shown_texts(real.bank, real.state), notes)
            for fact, (ev_c, _), (ev_r, _) in zip(c.state.facts, gold_c, gold_r):
                if notes[fact].slot in changed and notes[fact].kind != "set":
                    assert ev_c in ("ADD", "NONE")
                    flips += ev_r in ("UPDATE", "DELETE")
    assert flips >= 20
    with pytest.raises(ConfigError, match="manager_counterfactual"):
        override(default_config(), {"task.manager_counterfactual": True})
