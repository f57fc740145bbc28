"""Token-level automata for constrained decoding: a regex or JSON schema -> on-device tables.

outlines-core (a Rust library, the engine of outlines) compiles a regular expression over the
model's vocabulary into an index: from each automaton state, which tokens are allowed and the
state each leads to. ``compile_regex`` turns that index into one dense table ``next_state``
[S, V] int32 (-1: not allowed), which the sampler reads inside its jit'd decode loop (a gather
per step, no host round trip): logits of tokens not allowed are set to -inf before sampling, so
the sampled token and its log-probability are those of the constrained policy (the masked,
renormalised softmax). At accepting states the model's stop tokens are allowed.

Why outlines-core: its compiled index is exactly the (state, token) -> state map that a dense
table needs, it builds in well under a second for the manager's schema on a 49k vocabulary
(128 states), and its JSON-schema-to-regex step is the one outlines users know. Unbounded
strings keep the automaton small: a maxLength of 120 on a string makes it ~2,400 states.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import threading
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class TokenAutomaton:
    """next_state[s, t]: the state after token t in state s, or -1 where t is not allowed."""
    next_state: np.ndarray      # int32 [S, V]
    initial: int
    final: np.ndarray           # bool [S]: accepting states (the stop tokens are allowed there)
    pattern: str = ""

    @property
    def num_states(self) -> int:
        return int(self.next_state.shape[0])

    def accepts(self, token_ids: Sequence[int], stop_ids: Sequence[int] = ()) -> bool:
        """Whether the ids (with or without a final stop token) are a complete match."""
        s, stops = self.initial, set(int(t) for t in stop_ids)
        for t in token_ids:
            if int(t) in stops:
                return bool(self.final[s])
            s = int(self.next_state[s, int(t)])
            if s < 0:
                return False
        return bool(self.final[s])


@functools.lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet, inverted (printable stand-ins -> bytes)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def token_bytes(tokenizer) -> list[bytes | None]:
    """The bytes each token id stands for (None: a special token, never emitted as text)."""
    specials = set(getattr(tokenizer.info, "special_ids", ()) or ()) | set(tokenizer.special_tokens.values())
    specials |= set(tokenizer.stop_ids)
    n = tokenizer.vocab_size
    if getattr(tokenizer, "backend_name", "") == "bytes":
        return [bytes([i]) if i < 256 and i not in specials else None for i in range(n)]
    pieces = [tokenizer.id_to_token(i) for i in range(n)]
    u2b = _unicode_to_byte()
    byte_level = sum("Ġ" in p for p in pieces if p) > n // 50    # GPT-2 style vocabulary
    out: list[bytes | None] = []
    for i, p in enumerate(pieces):
        if i in specials or p is None:
            out.append(None)
        elif byte_level and all(ch in u2b for ch in p):
            out.append(bytes(u2b[ch] for ch in p))
        elif len(p) == 6 and p.startswith("<0x") and p.endswith(">"):       # sentencepiece byte fallback
            out.append(bytes([int(p[3:5], 16)]))
        else:
            out.append(p.replace("▁", " ").encode("utf-8"))
    return out


def compile_regex(pattern: str, tokenizer, vocab_size: int, stop_ids: Sequence[int] | None = None) -> TokenAutomaton:
    """The automaton of ``pattern`` over the tokenizer's vocabulary, as a [S, vocab_size] table
    (``vocab_size``: the model's logits width, which may exceed the tokenizer's)."""
    from outlines_core import Index, Vocabulary
    stops = sorted(set(stop_ids if stop_ids is not None else tokenizer.stop_ids))
    if not stops:
        raise ValueError("compile_regex: the tokenizer has no stop token to end a match with")
    by_bytes: dict[bytes, list[int]] = {}
    for i, b in enumerate(token_bytes(tokenizer)):
        if b:
            by_bytes.setdefault(b, []).append(i)
    index = Index(pattern, Vocabulary(stops[0], by_bytes))
    transitions = index.get_transitions()
    finals = set(index.get_final_states())
    states = sorted(set(transitions) | finals | {index.get_initial_state()})
    number = {s: k for k, s in enumerate(states)}
    table = np.full((len(states), vocab_size), -1, np.int32)
    for s, moves in transitions.items():
        row = table[number[s]]
        for tok, nxt in moves.items():
            if tok < vocab_size:
                row[tok] = number[nxt]
    final = np.zeros(len(states), bool)
    for s in finals:
        final[number[s]] = True
        table[number[s], stops] = number[s]      # a complete match may end with any stop token
    return TokenAutomaton(table, number[index.get_initial_state()], final, pattern)


def compile_json_schema(schema: dict, tokenizer, vocab_size: int, stop_ids=None,
                        whitespace: str = r"[ ]?") -> TokenAutomaton:
    """The automaton of JSON documents valid under ``schema`` (outlines-core's schema -> regex);
    ``whitespace``: what may stand between tokens (one optional space keeps the automaton small)."""
    from outlines_core.json_schema import build_regex_from_schema
    return compile_regex(build_regex_from_schema(json.dumps(schema), whitespace), tokenizer, vocab_size, stop_ids)


def manager_schema(num_shown: int, max_new: int = 16) -> dict:
    """The Memory Manager's output: {"memory": [{"id", "text", "event", "old_memory"?}]}, with
    ``id`` one of the shown memories' prompt ids ("0".."n-1") or a new one (n..n+max_new-1),
    ``event`` ADD / UPDATE / DELETE / NONE."""
    ids = [str(i) for i in range(num_shown + max_new)]
    item = {"type": "object",
            "properties": {"id": {"enum": ids}, "text": {"type": "string"},
                           "event": {"enum": ["ADD", "UPDATE", "DELETE", "NONE"]},
                           "old_memory": {"type": "string"}},
            "required": ["id", "text", "event"]}
    return {"type": "object", "properties": {"memory": {"type": "array", "items": item}}, "required": ["memory"]}


_CACHE: collections.OrderedDict = collections.OrderedDict()
_CACHE_LOCK = threading.Lock()


def _cached(key: tuple, tokenizer, build, keep: int) -> TokenAutomaton:
    """``build()``'s automaton for ``key`` (which starts with ``id(tokenizer)``), the ``keep`` most
    recently used kept: a SmolLM2 table is up to ~50 MB and takes up to ~2 s to build."""
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key][1]
    auto = build()
    with _CACHE_LOCK:
        _CACHE[key] = (tokenizer, auto)   # the tokenizer is kept alive: its id stays unique
        while len(_CACHE) > keep:
            _CACHE.popitem(last=False)
    return auto


def regex_automaton(pattern: str, tokenizer, vocab_size: int, keep: int = 16) -> TokenAutomaton:
    """``compile_regex``, cached (see ``_cached``)."""
    return _cached((id(tokenizer), vocab_size, "regex", pattern), tokenizer,
                   lambda: compile_regex(pattern, tokenizer, vocab_size), keep)


def manager_automaton(tokenizer, vocab_size: int, num_shown: int, max_new: int, output: str = "json",
                      keep: int = 16) -> TokenAutomaton:
    """The Memory Manager's outputs compiled for this tokenizer: ``manager_schema(num_shown,
    max_new)`` for ``output="json"``; for ``"lines"``, ``line_ops_regex(num_shown, max_new)``
    (``max_new`` is then the number of facts). Cached (see ``_cached``)."""
    if output == "lines":
        from memr1_jax.memory.line_ops import line_ops_regex
        return regex_automaton(line_ops_regex(num_shown, max_new), tokenizer, vocab_size, keep)
    return _cached((id(tokenizer), vocab_size, "manager-json", num_shown, max_new), tokenizer,
                   lambda: compile_json_schema(manager_schema(num_shown, max_new), tokenizer, vocab_size), keep)
