"""Rollouts of the two Memory-R1 agents, packed as ``RLBatch``es for ``rl.update``.

Answer Agent episode: (question, conversation bank) -> answer prompt -> G sampled
completions (one GRPO group) -> reward = EM (+ optional F1 shaping / format penalty).

Memory Manager episode (the paper's appendix, reading A): for a training question, the
session holding its evidence is the step to learn; the bank is the one built (add-all:
cheap and deterministic) from the sessions *before* it (a temporal snapshot), the new
facts are that session's facts of the evidence speaker. The manager samples G
completions, each is applied to its own copy of the bank, and a frozen Answer Agent
(greedy, the base weights) answers the question from every updated bank: its EM is
the manager's reward (minus a format penalty when no JSON operation list parses).

Rows are group-major (row i * G + g is sample g of episode i), which is what
``rl.advantages.group_advantages`` expects. Prompts are left-padded and completions
right-padded to bucketed lengths so the jitted update sees few distinct shapes.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from memr1_jax.agents.answer_agent import AnswerConfig, answer_prompts, answer_reward
from memr1_jax.agents.llm import ChatLLM
from memr1_jax.agents.memory_manager import (ManagerConfig, ManagerState, apply_step, build_banks,
                                             gold_completion, make_step, shown_texts, step_constraint)
from memr1_jax.data.changing import gold_agreement
from memr1_jax.data.locomo import QA, Conversation
from memr1_jax.eval.metrics import exact_match, token_f1
from memr1_jax.memory import MemoryBank, Retriever, line_decisions
from memr1_jax.rl.update import RLBatch, make_batch
from memr1_jax.sampling.sampler import SamplingConfig, bucket_size

Encoder = Callable[[Sequence[str]], np.ndarray]
MANAGER_REWARDS = ("answer", "gold")


@dataclasses.dataclass(frozen=True)
class Episode:
    """One sampled completion with its reward; ``info`` is what the sample log keeps."""
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]     # includes the stop token when the row stopped
    sampler_logprobs: tuple[float, ...]
    reward: float
    info: dict
    advantage: float | None = None      # fixed advantage (supervised rows: 1.0); None: estimated


# ------------------------------------------------------------------ packing
def pack_episodes(episodes: Sequence[Episode], pad_id: int, min_bucket: int = 16,
                  response_len: int | None = None) -> RLBatch:
    """[B, T] batch: prompt left-padded to bucket(max prompt), completion right-padded to
    ``response_len`` (pass max_new_tokens: one shape whatever the samples' lengths) or
    bucket(max completion); the response mask covers exactly the completion tokens."""
    if not episodes:
        raise ValueError("pack_episodes: no episodes")
    p_len = bucket_size(max(len(e.prompt_ids) for e in episodes), min_bucket)
    longest = max(max(len(e.completion_ids) for e in episodes), 1)
    if response_len is not None and response_len < longest:
        raise ValueError(f"pack_episodes: response_len={response_len} < longest completion ({longest})")
    r_len = response_len or bucket_size(longest, min_bucket)
    b, t = len(episodes), p_len + r_len
    tokens = np.full((b, t), pad_id, np.int32)
    valid = np.zeros((b, t), bool)
    resp = np.zeros((b, t), bool)
    lp = np.zeros((b, t), np.float32)
    for i, e in enumerate(episodes):
        p, c = list(e.prompt_ids), list(e.completion_ids)
        if not p:
            raise ValueError("pack_episodes: an episode has an empty prompt")
        tokens[i, p_len - len(p):p_len] = p
        tokens[i, p_len:p_len + len(c)] = c
        valid[i, p_len - len(p):p_len + len(c)] = True
        resp[i, p_len:p_len + len(c)] = True
        lp[i, p_len:p_len + len(c)] = e.sampler_logprobs
    rewards = np.asarray([e.reward for e in episodes], np.float32)
    fixed = [e.advantage for e in episodes]
    if any(a is not None for a in fixed) and any(a is None for a in fixed):
        raise ValueError("pack_episodes: some episodes carry a fixed advantage and others do not")
    adv = None if fixed[0] is None else np.asarray(fixed, np.float32)
    return make_batch(tokens, valid, resp, rewards, prompt_len=p_len, sampler_logprobs=lp, advantages=adv)


def _episode(gen, reward: float, info: dict) -> Episode:
    # The behaviour policy is the tempered distribution; prefer its log-probs when reported.
    lp = gen.logprobs if gen.scaled_logprobs is None else gen.scaled_logprobs
    return Episode(tuple(gen.prompt_ids), tuple(gen.completion_ids),
                   tuple(float(x) for x in np.asarray(lp)), float(reward), info)


# ------------------------------------------------------------------ answer agent
@dataclasses.dataclass(frozen=True)
class AnswerItem:
    conv: Conversation
    qa: QA


def item_answer_prompts(items: Sequence[AnswerItem], banks: dict[str, MemoryBank], encoder: Encoder,
                        retriever: Retriever, cfg: AnswerConfig) -> list[str]:
    """Answer prompts in item order, retrieved with one encoder call per conversation."""
    prompts: list[str | None] = [None] * len(items)
    by_conv: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_conv.setdefault(it.conv.id, []).append(i)
    for idx in by_conv.values():
        conv = items[idx[0]].conv
        texts = answer_prompts(conv, banks[conv.id], [items[i].qa.question for i in idx], encoder, retriever, cfg)
        for i, t in zip(idx, texts):
            prompts[i] = t
    return prompts  # type: ignore[return-value]


def answer_rollouts(llm: ChatLLM, params: Any, items: Sequence[AnswerItem], banks: dict[str, MemoryBank],
                    encoder: Encoder, retriever: Retriever, cfg: AnswerConfig, group: int,
                    sampling: SamplingConfig, rng) -> list[Episode]:
    """``group`` sampled completions per question; episodes are group-major."""
    prompts = item_answer_prompts(items, banks, encoder, retriever, cfg)
    ids = [llm.chat_ids(p) for p in prompts]
    gens = llm.generate_ids(ids, max_new_tokens=cfg.max_new_tokens, sampling=sampling, rng=rng,
                            num_samples=group, params=params)
    out = []
    for i, it in enumerate(items):
        for g in range(group):
            gen = gens[i * group + g]
            r, ans, marked = answer_reward(gen.text, it.qa.answer, cfg)
            out.append(_episode(gen, r, {
                "agent": "answer", "conversation_id": it.conv.id, "question": it.qa.question,
                "gold": it.qa.answer, "completion": gen.text, "prediction": ans, "marker": marked,
                "em": float(exact_match(ans, it.qa.answer)), "f1": float(token_f1(ans, it.qa.answer)),
                "stopped": gen.stopped}))
    return out


def greedy_answers(llm: ChatLLM, params: Any, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """Answers extracted from greedy completions of answer prompts (the frozen agent / validation)."""
    from memr1_jax.agents.prompts import extract_answer
    gens = llm.generate_ids([llm.chat_ids(p) for p in prompts], max_new_tokens=max_new_tokens,
                            sampling=SamplingConfig(temperature=0.0), params=params)
    return [extract_answer(g.text)[0] for g in gens]


# ------------------------------------------------------------------ memory manager
_DIA = re.compile(r"^D(\d+):(\d+)$")


def evidence_session(conv: Conversation, qa: QA) -> tuple[int, int] | None:
    """(session index, speaker 0/1) of the last well-formed evidence turn, or None."""
    turns = {t.dia_id: t for t in conv.turns}
    best = None
    for ev in qa.evidence:
        m = _DIA.match(ev.strip())
        if not m or ev.strip() not in turns:
            continue
        spk_name = turns[ev.strip()].speaker
        spk = 0 if spk_name == conv.speaker_a else 1
        key = (int(m.group(1)), int(m.group(2)))
        if best is None or key > best[0]:
            best = (key, spk)
    return None if best is None else (best[0][0], best[1])


@dataclasses.dataclass(frozen=True)
class ManagerEpisodeSpec:
    """Everything one manager episode needs: the snapshot bank and the step to take."""
    conv: Conversation
    qa: QA
    bank: MemoryBank
    state: ManagerState


def manager_episode_specs(conv: Conversation, qas: Sequence[QA], encoder: Encoder, retriever: Retriever,
                          cfg: ManagerConfig, cache: dict | None = None) -> list[ManagerEpisodeSpec]:
    """Specs for the questions whose evidence session has facts for the evidence speaker.

    The snapshot bank of session s is built with add-all from sessions < s and cached
    in ``cache`` (keyed by conversation id and session)."""
    cache = {} if cache is None else cache
    out = []
    for qa in qas:
        where = evidence_session(conv, qa)
        if where is None:
            continue
        sess_idx, spk = where
        sess = next((s for s in conv.sessions if s.index == sess_idx), None)
        if sess is None:
            continue
        name = conv.speaker_a if spk == 0 else conv.speaker_b
        obs = list(sess.observations.get(name, ()))
        if not obs:
            continue
        # The chunk of at most max_facts_per_step facts that holds an evidence fact.
        evid = set(e.strip() for e in qa.evidence)
        hit = next((i for i, (_, d) in enumerate(obs)
                    if (d in evid if isinstance(d, str) else bool(evid & set(d)))), 0)
        n = cfg.max_facts_per_step
        start = (hit // n) * n
        out.append(_step_spec(conv, qa, sess, spk, [f for f, _ in obs[start:start + n]], encoder, retriever, cfg,
                              cache))
    return out


def manager_step_specs(conv: Conversation, encoder: Encoder, retriever: Retriever, cfg: ManagerConfig,
                       cache: dict | None = None, keep: float = 1.0, seed: int = 0,
                       crowd: bool = False) -> list[ManagerEpisodeSpec]:
    """One spec per manager step of the conversation (each session, speaker and chunk of at most
    max_facts_per_step facts), question or not: the items of gold-scored training, where every
    fact has a gold operation (retractions and corrections included, which few questions cite).

    ``keep`` < 1: each earlier observation is in the snapshot with that probability (seeded by
    ``seed`` and the conversation), so steps also see small banks with a memory or two, as a
    service's first adds do, where the gold operation is often ADD.

    ``crowd``: each speaker's snapshot also holds the other speaker's memories (a user's memory
    holds facts about several people), so a step is shown memories of another person's slots,
    which are not the ones to UPDATE or DELETE."""
    cache = {} if cache is None else cache
    none = QA(question="", answer="", evidence=(), category=0)
    if crowd:
        both = lambda s: tuple(o for obs in s.observations.values() for o in obs)  # noqa: E731
        mixed = tuple(dataclasses.replace(s, observations={n: both(s) for n in s.observations}) for s in conv.sessions)
        snapshot, cache = dataclasses.replace(conv, sessions=mixed), {}
    elif keep < 1.0:
        rng = np.random.default_rng([seed, *conv.id.encode()])
        sparse = tuple(dataclasses.replace(s, observations={n: tuple(o for o in obs if rng.random() < keep)
                                                             for n, obs in s.observations.items()})
                       for s in conv.sessions)
        snapshot, cache = dataclasses.replace(conv, sessions=sparse), {}   # its own snapshots
    else:
        snapshot = conv
    out = []
    for sess, real in zip(snapshot.sessions, conv.sessions):
        for spk, name in enumerate((conv.speaker_a, conv.speaker_b)):
            facts = [f for f, _ in real.observations.get(name, ())]
            for i in range(0, len(facts), cfg.max_facts_per_step):
                out.append(_step_spec(snapshot, none, real, spk, facts[i:i + cfg.max_facts_per_step], encoder,
                                      retriever, cfg, cache))
    return out


def manager_counterfactual_specs(conv: Conversation, notes: Mapping, encoder: Encoder, retriever: Retriever,
                                 cfg: ManagerConfig) -> list[ManagerEpisodeSpec]:
    """Each step with a fact that changes, corrects, ends or retracts a slot (``notes``: the
    generator's gold notes), once more over the add-all snapshot without the speaker's earlier
    memories of those slots, where the gold operation is ADD (NONE for a retraction). Beside the
    step itself (``manager_step_specs``) the pair differs only in whether the slot's memory is
    shown, so neither the number of memories shown nor the step's place in the conversation tells
    the decision: only what the memories say does."""
    none = QA(question="", answer="", evidence=(), category=0)
    out = []
    for sess in conv.sessions:
        for spk, name in enumerate((conv.speaker_a, conv.speaker_b)):
            facts = [f for f, _ in sess.observations.get(name, ())]
            for i in range(0, len(facts), cfg.max_facts_per_step):
                chunk = facts[i:i + cfg.max_facts_per_step]
                slots = {notes[f].slot for f in chunk
                         if f in notes and notes[f].slot and notes[f].kind in ("change", "correct", "end", "retract")}
                if not slots:
                    continue
                mine = {f for f, n in notes.items() if n.who == name and n.slot in slots}
                earlier = tuple(dataclasses.replace(s, observations={n: tuple(o for o in obs if o[0] not in mine)
                                                                     for n, obs in s.observations.items()})
                                for s in conv.sessions if s.index < sess.index)
                out.append(_step_spec(dataclasses.replace(conv, sessions=earlier), none, sess, spk, chunk, encoder,
                                      retriever, cfg, {}))
    return out


def _step_spec(conv: Conversation, qa: QA, sess, spk: int, facts: list[str], encoder: Encoder, retriever: Retriever,
               cfg: ManagerConfig, cache: dict) -> ManagerEpisodeSpec:
    """The step of ``facts`` (of session ``sess``) over the add-all snapshot of ``conv``'s sessions
    before it (cached in ``cache`` by conversation id and session)."""
    key = (conv.id, sess.index)
    if key not in cache:
        add_all = ManagerConfig(kind="add-all", retrieve_k=cfg.retrieve_k, max_facts_per_step=10 ** 6)
        prefix = dataclasses.replace(conv, sessions=tuple(s for s in conv.sessions if s.index < sess.index))
        banks, _ = build_banks([prefix], encoder, add_all, retriever=retriever)
        cache[key] = banks[conv.id]
    bank = cache[key]
    state = make_step(bank, facts, spk, sess.index, sess.date_time, encoder, retriever, cfg)
    return ManagerEpisodeSpec(conv, qa, bank, state)


def _frozen_answer_reward(answer: str, gold, f1_weight: float) -> tuple[float, float, float]:
    """(EM, F1, EM + f1_weight * F1): the manager's reward from the frozen agent's answer."""
    em, f1 = float(exact_match(answer, gold)), float(token_f1(answer, gold))
    return em, f1, em + f1_weight * f1


def manager_rollouts(llm: ChatLLM, params: Any, answer_llm: ChatLLM | None, answer_params: Any,
                     specs: Sequence[ManagerEpisodeSpec], encoder: Encoder, retriever: Retriever,
                     cfg: ManagerConfig, answer_cfg: AnswerConfig, group: int, sampling: SamplingConfig,
                     rng, gold: Mapping[str, Mapping] | None = None, reward: str = "answer") -> list[Episode]:
    """``group`` manager completions per spec (``llm`` with ``params``), each applied to its own
    copy of the snapshot bank. With cfg.constrained they are sampled under the step's automaton.

    reward="answer" (the paper's): EM + cfg.f1_weight * F1 of the frozen Answer Agent
    (``answer_llm`` with ``answer_params``, greedy) answering the spec's question from the new
    bank, minus cfg.format_penalty without an operation list. reward="gold": the fraction of
    the step's facts decided as the gold operations in ``gold`` (conversation id -> the
    changing-facts generator's notes); the frozen agent then answers only if ``answer_llm`` is
    given (its EM / F1 are logged, NaN otherwise). ``gold`` also adds "gold_agreement" to the
    info of its conversations' episodes whatever the reward."""
    if reward not in MANAGER_REWARDS:
        raise ValueError(f"manager reward {reward!r}: expected one of {MANAGER_REWARDS}")
    gold = gold or {}
    ids = [llm.chat_ids(s.state.prompt) for s in specs]
    kw = {"constraints": [step_constraint(llm, len(s.state.id_map), len(s.state.facts), cfg.output)
                          for s in specs]} if cfg.constrained else {}
    gens = llm.generate_ids(ids, max_new_tokens=cfg.max_new_tokens, sampling=sampling, rng=rng,
                            num_samples=group, params=params, **kw)
    rows = []
    for i, spec in enumerate(specs):
        for g in range(group):
            gen = gens[i * group + g]
            bank, report, problems = apply_step(spec.bank, spec.state, gen.text, encoder, cfg)
            prompt = None
            if answer_llm is not None:
                (prompt,) = answer_prompts(spec.conv, bank, [spec.qa.question], encoder, retriever, answer_cfg)
            rows.append((spec, gen, report, problems, prompt))
    answers = (greedy_answers(answer_llm, answer_params, [r[4] for r in rows], answer_cfg.max_new_tokens)
               if answer_llm is not None else [None] * len(rows))
    out = []
    for (spec, gen, report, problems, _), ans in zip(rows, answers):
        em, f1, score = (_frozen_answer_reward(ans, spec.qa.answer, cfg.f1_weight) if ans is not None
                         else (float("nan"),) * 3)
        no_json = any(p.startswith(("no JSON", "no operation")) for p in problems)
        info = {"agent": "manager", "conversation_id": spec.conv.id, "question": spec.qa.question,
                "gold": spec.qa.answer, "session": spec.state.session, "speaker": spec.state.speaker,
                "facts": list(spec.state.facts), "completion": gen.text, "problems": list(problems),
                "applied": [r.op.event.value for r in report.results if r.applied],
                "prediction": ans, "em": em, "f1": f1, "parsed": not no_json, "stopped": gen.stopped}
        if spec.conv.id in gold:
            info["gold_agreement"] = gold_agreement(line_decisions(gen.text, len(spec.state.facts)),
                                                    spec.state.facts, shown_texts(spec.bank, spec.state),
                                                    gold[spec.conv.id])
        if reward == "gold":
            score = info["gold_agreement"]
        out.append(_episode(gen, score - (cfg.format_penalty if no_json else 0.0), info))
    return out


def manager_gold_episodes(llm: ChatLLM, specs: Sequence[ManagerEpisodeSpec],
                          gold: Mapping[str, Mapping]) -> list[Episode]:
    """One supervised row per spec: the gold manager's line-format completion (and the stop
    token) after the spec's prompt, advantage 1: the policy-gradient loss then has the
    gradient of the completion's cross-entropy (ratio 1 on the update's first pass)."""
    stop = min(llm.tokenizer.stop_ids)
    limit = llm.max_prompt_tokens or llm.cfg.max_seq_len   # the tail, as generate_ids keeps it
    out = []
    for spec in specs:
        text = gold_completion(spec.bank, spec.state, gold[spec.conv.id])
        completion = tuple(llm.tokenizer.encode(text)) + (stop,)
        out.append(Episode(tuple(llm.chat_ids(spec.state.prompt)[-limit:]), completion, (0.0,) * len(completion), 1.0,
                           {"agent": "manager", "conversation_id": spec.conv.id, "question": spec.qa.question,
                            "facts": list(spec.state.facts), "completion": text, "gold_agreement": 1.0,
                            "em": float("nan"), "f1": float("nan"), "parsed": True},
                           advantage=1.0))
    return out


def manager_sensitive_specs(answer_llm: ChatLLM, answer_params: Any, specs: Sequence[ManagerEpisodeSpec],
                            encoder: Encoder, retriever: Retriever, cfg: ManagerConfig,
                            answer_cfg: AnswerConfig) -> tuple[list[ManagerEpisodeSpec], list[dict]]:
    """The specs whose outcome depends on the manager: the frozen Answer Agent's reward differs
    between the snapshot bank with every new fact ADDed and the bank left unchanged.

    On the others every completion earns the same reward (bar the format penalty), so a GRPO
    group carries no signal; filtering costs two greedy answers per spec. Returns the kept
    specs and, per input spec, the two rewards."""
    prompts = []
    for spec in specs:
        added, _, _ = apply_step(spec.bank, spec.state, None, encoder, cfg)   # None: ADD every fact
        for bank in (added, spec.bank):
            prompts.extend(answer_prompts(spec.conv, bank, [spec.qa.question], encoder, retriever, answer_cfg))
    answers = greedy_answers(answer_llm, answer_params, prompts, answer_cfg.max_new_tokens)
    kept, stats = [], []
    for i, spec in enumerate(specs):
        r = [_frozen_answer_reward(a, spec.qa.answer, cfg.f1_weight)[2] for a in answers[2 * i: 2 * i + 2]]
        stats.append({"question": spec.qa.question, "reward_add_all": r[0], "reward_unchanged": r[1]})
        if r[0] != r[1]:
            kept.append(spec)
    return kept, stats
