"""The Answer Agent: retrieve per speaker, render the (distillation) prompt, extract, score.

Memory-R1 retrieves 30 memories per speaker (60 in all), asks the model to list
the relevant ones and then answer after ``**Answer:**``. The reward is exact
match against the gold answer, normalised as in Mem0's evaluation; F1 shaping
and a format penalty are optional.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from memr1_jax.agents.prompts import answer_template, extract_answer, format_memory_line, render_answer_prompt
from memr1_jax.data.locomo import Conversation
from memr1_jax.eval.metrics import exact_match, token_f1
from memr1_jax.memory import MemoryBank, Retriever

Encoder = Callable[[Sequence[str]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class AnswerConfig:
    k_per_speaker: int = 30
    distill: bool = True           # False: Mem0's prompt, the no-distillation ablation
    max_new_tokens: int = 96
    f1_weight: float = 0.0         # reward = EM + f1_weight * F1 (0: the paper's pure EM)
    format_penalty: float = 0.0    # subtracted when **Answer:** is missing
    prompt: str = "full"           # distillation prompt: "full" (the paper's) or "compact"

    def __post_init__(self):
        answer_template(self.prompt)   # an unknown name fails here, not at the first render
        if self.k_per_speaker < 1 or self.max_new_tokens < 1:
            raise ValueError(f"AnswerConfig: k_per_speaker={self.k_per_speaker} and "
                             f"max_new_tokens={self.max_new_tokens} must be >= 1")

    @property
    def template(self) -> str | None:
        """The prompt text; None without distillation (Mem0's answer prompt)."""
        return answer_template(self.prompt) if self.distill else None


def retrieve_memory_lines(bank: MemoryBank, query_embs: np.ndarray, k: int,
                          retriever: Retriever) -> list[tuple[list[str], list[str]]]:
    """For each query row: (speaker-0 lines, speaker-1 lines), best first."""
    per_speaker = []
    for spk in (0, 1):
        res = retriever.search(bank, query_embs, k, speaker=spk)
        rows = []
        for ids in res.ids:
            rows.append([format_memory_line(bank.host.timestamps.get(int(m)) or "", bank.text(int(m)))
                         for m in ids if m >= 0])
        per_speaker.append(rows)
    return list(zip(per_speaker[0], per_speaker[1]))


def answer_prompts(conv: Conversation, bank: MemoryBank, questions: Sequence[str], encoder: Encoder,
                   retriever: Retriever, cfg: AnswerConfig) -> list[str]:
    """Answer Agent prompts for questions about one conversation."""
    if not questions:
        return []
    lines = retrieve_memory_lines(bank, encoder(list(questions)), cfg.k_per_speaker, retriever)
    return [render_answer_prompt(q, conv.speaker_a, l0, conv.speaker_b, l1, cfg.distill, cfg.template)
            for q, (l0, l1) in zip(questions, lines)]


def answer_reward(completion: str, gold: str, cfg: AnswerConfig) -> tuple[float, str, bool]:
    """(reward, extracted answer, whether the **Answer:** marker was present)."""
    answer, marked = extract_answer(completion)
    r = float(exact_match(answer, gold))
    if cfg.f1_weight:
        r += cfg.f1_weight * token_f1(answer, gold)
    if cfg.distill and not marked:
        r -= cfg.format_penalty
    return r, answer, marked
