"""The Memory Manager: state -> prompt, completion -> operations -> new bank.

One manager *step* sees a set of new facts (one speaker's facts of one session,
as Mem0 adds a batch of messages at a time) together with the memories most
related to them, and emits ADD / UPDATE / DELETE / NONE operations: as Mem0's
JSON list (``output="json"``), or one ``<n>: OP [id]`` line per fact
(``output="lines"``, ``memr1_jax.memory.line_ops``).
``build_banks`` runs steps over whole conversations to construct the memory
that the Answer Agent reads; the RL trainer uses the same two step functions.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from memr1_jax.agents.prompts import render_manager_lines_prompt, render_manager_prompt
from memr1_jax.data.locomo import Conversation
from memr1_jax.memory import (ApplyReport, Event, MemoryBank, MemoryOp, ParseResult, Retriever, apply,
                              empty_bank, parse_line_ops, parse_memory_ops, render_memories)

OUTPUTS = ("json", "lines")
KINDS = ("llm", "add-all", "gold")

Encoder = Callable[[Sequence[str]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class ManagerConfig:
    # "llm": the policy decides; "add-all": every fact is ADDed (no LLM); "gold": the changing-facts
    # generator's gold operations (its conversations only: the oracle bank)
    kind: str = "llm"
    retrieve_k: int = 5           # related memories per new fact (Mem0 uses 5)
    max_facts_per_step: int = 8   # longer fact lists are split over several steps
    max_new_tokens: int = 256
    template: str | None = None
    # Reward of manager training: EM + f1_weight * F1 of the frozen Answer Agent's answer,
    # minus format_penalty when the completion holds no JSON operation list.
    f1_weight: float = 0.0
    format_penalty: float = 0.0
    # Decode the manager's output under its schema / regex (memr1_jax.sampling.constraint): every
    # output parses, ids are the shown ones (or new ones, in JSON). Training with it samples the
    # constrained policy and trains the unmasked log-probs of those samples (the config then
    # requires rollout.old_logprobs_from_sampler=false).
    constrained: bool = False
    # "json": Mem0's {"memory": [...]} list; "lines": one "<n>: ADD | UPDATE <id> | DELETE <id> |
    # NONE" line per fact, the fact's own text stored (about 4 tokens a fact instead of ~20).
    output: str = "json"
    # The relatedness floor: a memory is shown only when its cosine to one of the step's facts is
    # at least this (None: Mem0's plain top-k). A step that shows nothing ADDs its facts without a
    # call, as the service does; the manager then decides only where a memory may be the fact's.
    min_score: float | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"ManagerConfig.kind={self.kind!r}: expected one of {KINDS}")
        if self.output not in OUTPUTS:
            raise ValueError(f"ManagerConfig.output={self.output!r}: expected one of {OUTPUTS}")
        if self.retrieve_k < 1 or self.max_facts_per_step < 1 or self.max_new_tokens < 1:
            raise ValueError(f"ManagerConfig: retrieve_k={self.retrieve_k}, max_facts_per_step="
                             f"{self.max_facts_per_step} and max_new_tokens={self.max_new_tokens} must be >= 1")
        if self.min_score is not None and not -1.0 <= self.min_score <= 1.0:
            raise ValueError(f"ManagerConfig.min_score={self.min_score}: a cosine, in [-1, 1]")


@dataclasses.dataclass(frozen=True)
class ManagerState:
    """What the policy sees at one step, plus what is needed to apply its answer."""
    facts: tuple[str, ...]
    speaker: int
    session: int
    timestamp: str
    prompt: str
    id_map: dict


def make_step(bank: MemoryBank, facts: Sequence[str], speaker: int, session: int, timestamp: str,
              encoder: Encoder, retriever: Retriever, cfg: ManagerConfig) -> ManagerState:
    """Retrieve the memories related to ``facts`` and render the manager prompt."""
    related: list[dict] = []
    if bank.size and facts:
        res = retriever.search(bank, encoder(list(facts)), cfg.retrieve_k, speaker=speaker)
        related = [{"id": mid, "text": bank.text(mid)} for mid in shown_ids(res.ids, res.scores, cfg.min_score)]
    prompt, id_map = render_step(related, facts, cfg.output, cfg.template)
    return ManagerState(tuple(facts), speaker, session, timestamp, prompt, id_map)


def shown_ids(ids: np.ndarray, scores: np.ndarray, floor: float | None) -> list[int]:
    """The memories a step shows, from each fact's top-k ``ids`` and ``scores`` ([facts, k], best
    first, -1 where missing): fact-major, de-duplicated like Mem0, those under ``floor`` left out."""
    out: list[int] = []
    for mid, score in zip(np.asarray(ids).reshape(-1), np.asarray(scores).reshape(-1)):
        if mid >= 0 and int(mid) not in out and (floor is None or score >= floor):
            out.append(int(mid))
    return out


def render_step(related: Sequence[dict], facts: Sequence[str], output: str = "json",
                template: str | None = None) -> tuple[str, dict]:
    """The manager prompt in ``output``'s format for ``facts`` beside the ``related`` memories
    ({"id", "text"}), and the map from the ids it shows to theirs (``parse_step`` reads it)."""
    old_json, id_map = render_memories(related)
    if output == "lines":
        return render_manager_lines_prompt([m["text"] for m in related], facts, template), id_map
    return render_manager_prompt(old_json if related else "", facts, template), id_map


def decided_by_rule(state: ManagerState, cfg: ManagerConfig) -> bool:
    """Whether the step's facts are ADDed without the policy: nothing passed the relatedness floor."""
    return cfg.min_score is not None and not state.id_map


def shown_texts(bank: MemoryBank, state: ManagerState) -> list[str]:
    """The texts of the memories the step's prompt shows, in shown-id order."""
    return [bank.text(state.id_map[str(i)]) for i in range(len(state.id_map))]


def gold_completion(bank: MemoryBank, state: ManagerState, notes) -> str:
    """The line-format completion of the generator's gold manager for this step."""
    from memr1_jax.data.changing import gold_line_ops
    return gold_line_ops(state.facts, shown_texts(bank, state), notes)


def parse_step(completion, facts: Sequence[str], id_map: dict, output: str = "json") -> ParseResult:
    """The operations of a completion in ``output``'s format (never raises)."""
    if output == "lines":
        return parse_line_ops(completion, facts, id_map)
    return parse_memory_ops(completion, id_map)


def apply_step(bank: MemoryBank, state: ManagerState, completion: str | None, encoder: Encoder,
               cfg: ManagerConfig) -> tuple[MemoryBank, ApplyReport, tuple[str, ...]]:
    """Parse the completion (or ADD every fact for kind="add-all") and apply it.

    Returns (new bank, apply report, parse problems). Never raises on model output.
    """
    if cfg.kind == "add-all" or completion is None:
        ops: tuple[MemoryOp, ...] = tuple(MemoryOp(Event.ADD, text=f) for f in state.facts)
        problems: tuple[str, ...] = ()
    else:
        parsed = parse_step(completion, state.facts, state.id_map, cfg.output)
        ops, problems = parsed.ops, parsed.problems
        if not parsed.found_json:
            problems = problems + ("no operation found" if cfg.output == "lines" else "no JSON memory list found",)
        # A rewritten memory states the newest fact, so it carries the date of the
        # session it came from (the Answer Agent reasons over these timestamps).
        ops = tuple(dataclasses.replace(op, timestamp=state.timestamp, session=state.session)
                    if op.event == Event.UPDATE else op for op in ops)
    new_bank, report = apply(bank, ops, embed_fn=encoder, speaker=state.speaker,
                             session=state.session, timestamp=state.timestamp)
    return new_bank, report, problems


def step_constraint(llm, num_shown: int, num_facts: int, output: str = "json"):
    """The automaton of valid outputs for one step: ids of the shown memories (or new ones, in
    JSON); in the line format exactly one operation per fact."""
    from memr1_jax.sampling.constraint import manager_automaton
    return manager_automaton(llm.tokenizer, llm.cfg.vocab_size, num_shown, num_facts, output)


def conversation_fact_batches(conv: Conversation, max_facts: int) -> list[tuple[int, int, str, list[str]]]:
    """(session index, speaker index, session date, facts) in conversation order, from
    LoCoMo's per-session observations; speaker 0 is speaker_a, 1 is speaker_b."""
    out = []
    for sess in conv.sessions:
        for spk, name in enumerate((conv.speaker_a, conv.speaker_b)):
            facts = [f for f, _ in sess.observations.get(name, ())]
            for i in range(0, len(facts), max_facts):
                out.append((sess.index, spk, sess.date_time, facts[i:i + max_facts]))
    return out


@dataclasses.dataclass
class BuildStats:
    steps: int = 0
    ops: dict = dataclasses.field(default_factory=lambda: {e.value: 0 for e in Event})
    parse_failures: int = 0
    skipped_ops: int = 0


def count_steps(convs: Sequence[Conversation], cfg: ManagerConfig) -> int:
    return sum(len(conversation_fact_batches(c, cfg.max_facts_per_step)) for c in convs)


def build_banks(convs: Sequence[Conversation], encoder: Encoder, cfg: ManagerConfig,
                llm=None, retriever: Retriever | None = None, dim: int | None = None,
                progress: Callable[[int], None] | None = None,
                on_step: Callable[[str, ManagerState, str | None, ApplyReport, tuple], None] | None = None) -> tuple[dict[str, MemoryBank], BuildStats]:
    """Construct one bank per conversation (both speakers; search filters by speaker).

    Each (conversation, speaker) pair is a stream of steps that must run in order,
    since a step sees the bank the previous one produced. Steps of different
    streams are independent (a speaker's step only retrieves and edits that
    speaker's memories), so streams advance in lockstep and the LLM gets one
    batch of prompts per round.
    """
    if cfg.kind == "llm" and llm is None:
        raise ValueError("build_banks: ManagerConfig.kind='llm' needs an llm")
    if cfg.kind == "gold":   # decides in the line format, from each conversation's gold notes
        from memr1_jax.data.changing import gold_notes
        cfg = dataclasses.replace(cfg, output="lines")
        notes = {c.id: gold_notes(c) for c in convs}
    retriever = retriever or Retriever()
    dim = dim or int(encoder(["probe"]).shape[-1])
    banks = {c.id: empty_bank(dim) for c in convs}
    queues: dict[tuple[str, int], list] = {}
    for c in convs:
        for step in conversation_fact_batches(c, cfg.max_facts_per_step):
            queues.setdefault((c.id, step[1]), []).append(step)
    stats = BuildStats()
    rnd = 0
    while True:
        active = [key for key, q in queues.items() if rnd < len(q)]
        if not active:
            break
        states = {}
        for key in active:
            sess, spk, date, facts = queues[key][rnd]
            states[key] = make_step(banks[key[0]], facts, spk, sess, date, encoder, retriever, cfg)
        if cfg.kind == "llm":
            asked = [key for key in active if not decided_by_rule(states[key], cfg)]
            kw = {"constraints": [step_constraint(llm, len(states[key].id_map), len(states[key].facts), cfg.output)
                                  for key in asked]} if cfg.constrained else {}
            gens = llm.generate([states[key].prompt for key in asked], max_new_tokens=cfg.max_new_tokens,
                                **kw) if asked else []
            completions = {key: None for key in active}   # None: every fact ADDed (apply_step)
            completions.update({key: g.text for key, g in zip(asked, gens)})
        elif cfg.kind == "gold":
            completions = {key: gold_completion(banks[key[0]], states[key], notes[key[0]]) for key in active}
        else:
            completions = {key: None for key in active}
        for key in active:
            banks[key[0]], report, problems = apply_step(banks[key[0]], states[key], completions[key],
                                                         encoder, cfg)
            if on_step:
                on_step(key[0], states[key], completions[key], report, problems)
            stats.steps += 1
            stats.parse_failures += int(bool(problems))
            for r in report.results:
                if r.applied:
                    stats.ops[r.op.event.value] += 1
                else:
                    stats.skipped_ops += 1
        if progress:
            progress(len(active))
        rnd += 1
    return banks, stats
