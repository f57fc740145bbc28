"""What a Memory Manager left in its banks: operations applied, memories kept, and the share
of the conversation's observations still in the bank.

An observation counts as covered when its text (lower-cased, whitespace collapsed) is part of
some memory's text: the line-format manager and add-all store a fact's own text, so this is
exact for them; a manager that rewrites facts (Mem0's JSON) is credited only for what it kept
verbatim, which makes the share a lower bound there.
"""

from __future__ import annotations

import collections
import re


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def observation_texts(conv) -> list[str]:
    return [fact for s in conv.sessions for facts in s.observations.values() for fact, _ in facts]


def bank_stats(conv, bank) -> dict:
    """{"adds", "updates", "deletes": operations applied (the bank's history), "memories": kept,
    "observations": the conversation's, "covered": observations found in a memory}."""
    events = collections.Counter(h.event for h in bank.host.history)
    memories = [_norm(t) for t in bank.host.texts.values()]
    facts = [_norm(f) for f in observation_texts(conv)]
    covered = sum(1 for f in facts if f and any(f in m for m in memories))
    return {"adds": events["ADD"], "updates": events["UPDATE"], "deletes": events["DELETE"],
            "memories": bank.size, "observations": len(facts), "covered": covered}


def total(stats: list[dict]) -> dict:
    """The sum over conversations, with "coverage" = covered / observations."""
    out = collections.Counter()
    for s in stats:
        out.update(s)
    out = dict(out)
    out["coverage"] = out["covered"] / out["observations"] if out.get("observations") else None
    return out
