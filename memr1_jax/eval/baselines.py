"""Memory-free baselines on the same backbone: RAG over raw dialogue chunks, full context.

Both render the dialogue as Mem0's evaluation does, one line per turn:
``<session date> | <speaker>: <text>``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from memr1_jax.agents.prompts import FULL_CONTEXT_PROMPT, RAG_ANSWER_PROMPT
from memr1_jax.data.locomo import Conversation

Encoder = Callable[[Sequence[str]], np.ndarray]
CountTokens = Callable[[str], int]


@dataclasses.dataclass(frozen=True)
class RagConfig:
    chunk_tokens: int = 256     # Mem0 uses 500 with one chunk; smaller suits small context budgets
    num_chunks: int = 2


def dialogue_lines(conv: Conversation) -> list[str]:
    return [f"{s.date_time} | {t.speaker}: {t.text}" for s in conv.sessions for t in s.turns]


def chunk_lines(lines: Sequence[str], chunk_tokens: int, count: CountTokens) -> list[str]:
    """Greedy packing of whole lines into chunks of at most ``chunk_tokens`` (a line
    longer than that is a chunk of its own)."""
    chunks, cur, used = [], [], 0
    for line in lines:
        n = count(line) + 1
        if cur and used + n > chunk_tokens:
            chunks.append("\n".join(cur))
            cur, used = [], 0
        cur.append(line)
        used += n
    if cur:
        chunks.append("\n".join(cur))
    return chunks


def rag_prompts(conv: Conversation, questions: Sequence[str], encoder: Encoder, count: CountTokens,
                cfg: RagConfig = RagConfig()) -> list[str]:
    chunks = chunk_lines(dialogue_lines(conv), cfg.chunk_tokens, count)
    if not questions:
        return []
    c_emb = encoder(chunks)
    q_emb = encoder(list(questions))
    scores = q_emb @ c_emb.T                       # both L2-normalised: cosine
    k = min(cfg.num_chunks, len(chunks))
    out = []
    for q, row in zip(questions, scores):
        top = np.argsort(-row, kind="stable")[:k]
        context = "\n---\n".join(chunks[i] for i in sorted(top))  # keep dialogue order
        out.append(RAG_ANSWER_PROMPT.format(context=context, question=q))
    return out


def fullctx_prompts(conv: Conversation, questions: Sequence[str], count: CountTokens,
                    budget_tokens: int) -> list[str]:
    """The whole dialogue, truncated from the start to fit ``budget_tokens``
    (the most recent turns are kept: later sessions hold the latest state)."""
    lines = dialogue_lines(conv)
    overhead = count(FULL_CONTEXT_PROMPT.format(context="", question=""))
    kept, used = [], overhead
    for line in reversed(lines):
        n = count(line) + 1
        if used + n > budget_tokens:
            break
        kept.append(line)
        used += n
    context = "\n".join(reversed(kept))
    return [FULL_CONTEXT_PROMPT.format(context=context, question=q) for q in questions]
