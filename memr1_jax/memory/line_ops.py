"""The compact Memory Manager format: one line per new fact, ``<n>: ADD | UPDATE <id> | DELETE <id> | NONE``.

Mem0's JSON list makes the manager copy every fact's text back out (~20 tokens per item) and
lets it invent items, ids and texts; a small model mostly copies the prompt's example. Here the
manager only decides: the n-th line is the operation on the n-th new fact, and the fact's own
text is what ADD stores and UPDATE writes over memory <id>. DELETE <id> removes memory <id>
(the fact shows it no longer holds) and stores nothing; NONE keeps nothing. About 4 tokens a
fact, and the language of valid outputs (``line_ops_regex``) is small enough to constrain
decoding with a small automaton (80-240 states for 8 facts on SmolLM2's vocabulary).

``parse_line_ops`` never raises, like ``parse_memory_ops``: it reads ``n: OP [id]`` lines
leniently (``F2 -`` / ``2.`` / ``2)``, any case, ``#`` or ``id`` before the id), keeps the first
line of each fact and lists what it dropped in ``problems``.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from memr1_jax.memory.bank import Event, MemoryOp
from memr1_jax.memory.ops_parser import ParseResult

_LINE = re.compile(r"^\s*(?:f(?:act)?\s*)?(\d+)\s*[:.)\]-]?\s*\**\s*(ADD|UPDATE|DELETE|NONE|NOOP|NO_OP)\b"
                   r"[\s:#*]*(?:id\s*)?(\d+)?", re.IGNORECASE)
_MAX_PROBLEMS = 64


def line_ops_regex(num_shown: int, num_facts: int) -> str:
    """The outputs that decide every fact once, in order: line n is ``n: ADD``, ``n: NONE``, or
    ``n: UPDATE <id>`` / ``n: DELETE <id>`` with <id> one of the shown memories (0..num_shown-1)."""
    if num_facts < 1:
        raise ValueError(f"line_ops_regex: num_facts={num_facts} must be >= 1")
    ops = "ADD|NONE"
    if num_shown > 0:
        ids = "|".join(str(i) for i in range(num_shown))
        ops += f"|UPDATE ({ids})|DELETE ({ids})"
    return "\n".join(f"{n}: ({ops})" for n in range(1, num_facts + 1))


def parse_line_ops(text: Any, facts: Sequence[str], id_map: Mapping[str, int] | None = None) -> ParseResult:
    """Operations from a line-format completion; ``facts`` are the step's new facts in prompt
    order, ``id_map`` maps the shown ids to bank ids. ``found_json`` is True when at least one
    line named an operation. Never raises."""
    try:
        return _parse(text, list(facts), {str(k).strip(): int(v) for k, v in (id_map or {}).items()})
    except Exception as e:   # last-resort guard, as in parse_memory_ops
        return ParseResult((), (f"internal parser error: {type(e).__name__}: {e}",), False)


def _lines(text: str, num_facts: int, problems: list[str]) -> dict[int, tuple[str, str | None]]:
    """Fact number -> (event, shown id or None) of the first line deciding it; what is
    dropped goes to ``problems``."""
    decided: dict[int, tuple[str, str | None]] = {}
    for k, raw in enumerate(text.splitlines()):
        if not raw.strip():
            continue
        m = _LINE.match(raw)
        if m is None:
            problems.append(f"line {k + 1}: not an operation, ignored")
            continue
        n, event, target = int(m.group(1)), m.group(2).upper(), m.group(3)
        if not 1 <= n <= num_facts:
            problems.append(f"line {k + 1}: fact {n} does not exist ({num_facts} facts), ignored")
        elif n in decided:
            problems.append(f"line {k + 1}: fact {n} decided again, ignored")
        else:
            decided[n] = ("NONE" if event in ("NOOP", "NO_OP") else event, target)
    return decided


def line_decisions(text: Any, num_facts: int) -> list[tuple[str, int | None]]:
    """Per fact, in order, the (event, shown id) its first line decided, as ``parse_line_ops``
    reads it; ("NONE", None) for a fact no line decides. Never raises."""
    decided = _lines(text, num_facts, []) if isinstance(text, str) else {}
    out = []
    for n in range(1, num_facts + 1):
        event, target = decided.get(n, ("NONE", None))
        out.append((event, int(target) if target is not None else None))
    return out


def _parse(text: Any, facts: list[str], id_map: dict[str, int]) -> ParseResult:
    if not isinstance(text, str):
        return ParseResult((), (f"output is not a string but {type(text).__name__}",), False)
    problems: list[str] = []
    decided: dict[int, MemoryOp | None] = {}
    for n, (event, target) in _lines(text, len(facts), problems).items():
        fact = facts[n - 1]
        if event == "ADD":
            decided[n] = MemoryOp(Event.ADD, None, fact)
        elif event == "NONE":
            decided[n] = None
        elif target is None or target not in id_map:
            problems.append(f"fact {n}: {event} of unknown id {target!r}, ignored")
        else:
            decided[n] = MemoryOp(Event.UPDATE if event == "UPDATE" else Event.DELETE, id_map[target],
                                  fact if event == "UPDATE" else "")
    missing = [n for n in range(1, len(facts) + 1) if n not in decided]
    if missing and decided:
        problems.append(f"facts without an operation: {missing}")
    if len(problems) > _MAX_PROBLEMS:
        problems[_MAX_PROBLEMS:] = [f"... and {len(problems) - _MAX_PROBLEMS} more problems"]
    ops = tuple(op for _, op in sorted(decided.items()) if op is not None)
    return ParseResult(ops, tuple(problems), bool(decided))
