"""Prompt-lookup speculative decoding: greedy tokens, fewer forward passes.

Bank building and evaluation decode greedily, and what they write is mostly copied from the
prompt (a manager's "ADD <fact>" repeats a fact it was shown; an answer repeats a memory).
Prompt lookup (Saxena 2023; transformers' ``prompt_lookup_num_tokens``) drafts the next ``k``
tokens from the row's own history: the last ``ngram`` tokens are searched for in the prompt
and the tokens generated so far, and the ``k`` that followed their latest earlier occurrence
are proposed. One forward pass over [last token, k drafts] yields the greedy token after each;
the drafts agreeing with them are accepted, plus the model's own token after the last agreeing
one. Every emitted token is the argmax of the model given the tokens before it, so the output
equals plain greedy decoding; a pass costs about one decode step where reading the weights
dominates (small batches on CPU, any batch on accelerators).

Rows accept different numbers of tokens, so each row writes the cache at its own slot
(``decoder.write_slots`` with a per-row index) and slots past a row's accepted tokens are
masked until a later pass overwrites them. Constrained rows (``constraint``, as in
``sampler.decode``) walk the automaton along the drafts, so each verified token is the argmax
of the masked logits, as in constrained greedy decoding.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from memr1_jax.models.config import ModelConfig
from memr1_jax.models.decoder import Decoder

Array = jax.Array


def lookup_drafts(history: Array, start: Array, end: Array, k: int, ngram: int) -> Array:
    """Drafts [B, k] from each row's history ``history[b, start_b:end_b]`` (int32 [B, L]).

    The longest n-gram (``ngram`` down to 1) ending the history that occurred earlier is
    matched at its latest earlier occurrence, and the k tokens after it are the draft (tokens
    past the history's end are whatever the buffer holds: verification rejects them if wrong).
    Rows without any match draft their last token repeated.
    """
    b, length = history.shape
    cols = jnp.arange(length)
    last = jnp.take_along_axis(history, (end - 1)[:, None], axis=1)
    draft_at = jnp.full((b,), -1, jnp.int32)         # first draft column, -1: none found yet
    for n in range(ngram, 0, -1):
        width = length - n + 1
        tail = jnp.take_along_axis(history, jnp.clip(end[:, None] - n + jnp.arange(n), 0, length - 1), axis=1)
        hit = jnp.ones((b, width), bool)
        for i in range(n):
            hit &= history[:, i:i + width] == tail[:, i:i + 1]
        p = cols[:width]
        # Inside the history, strictly before the tail itself, and the tail must exist.
        hit &= (p >= start[:, None]) & (p + n < end[:, None]) & (end - start >= n)[:, None]
        latest = jnp.max(jnp.where(hit, p, -1), axis=1)
        draft_at = jnp.where((draft_at < 0) & (latest >= 0), latest + n, draft_at)
    idx = jnp.clip(draft_at[:, None] + jnp.arange(k), 0, length - 1)
    drafts = jnp.take_along_axis(history, idx, axis=1)
    return jnp.where(draft_at[:, None] >= 0, drafts, last)


def greedy_tokens(logits: Array):
    """Argmax tokens and their log-probs under the given (possibly masked) logits [..., V], any
    rank (the sampler's greedy draw and the verification of drafts)."""
    tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    m = jnp.max(logits, axis=-1, keepdims=True)
    lse = (m + jnp.log(jnp.sum(jnp.exp(logits - m), axis=-1, keepdims=True)))[..., 0]
    return tok, jnp.take_along_axis(logits, tok[..., None], axis=-1)[..., 0] - lse


@functools.partial(jax.jit, static_argnames=("cfg", "max_len", "draft_len", "ngram"),
                   donate_argnames=("state",))
def speculative_decode(cfg: ModelConfig, params, state: dict[str, Any], prompt_tokens: Array,
                       prompt_valid: Array, stop_ids: Array, max_new: Array, *, max_len: int,
                       draft_len: int = 8, ngram: int = 3, pad_id: int = 0,
                       constraint: dict | None = None):
    """Greedy decoding after ``sampler.prefill`` (num_samples=1) with prompt-lookup drafts.

    Arguments as ``sampler.decode`` (the prefill's cache needs ``draft_len`` spare slots:
    cache_len >= T + max_len + draft_len), plus the left-padded prompt tokens/valid [B, T]
    that drafts are looked up in. Returns (outputs, final state) with the outputs of
    ``decode`` (``steps``: forward passes that drew tokens, the prefill's included) plus
    ``drafted`` and ``accepted`` (draft tokens proposed to and accepted by live rows).
    """
    rows, t = prompt_tokens.shape
    k = draft_len
    model = Decoder(cfg)
    pad = jnp.int32(pad_id)
    s_len = state["key_valid"].shape[1]
    if s_len < t + max_len + k:
        raise ValueError(f"speculative_decode: cache of {s_len} slots; needs T + max_len + draft_len = "
                         f"{t + max_len + k}")
    table = None if constraint is None else constraint["next_state"]
    plen = jnp.sum(prompt_valid, axis=1).astype(jnp.int32)
    row_ids = jnp.arange(rows)

    def allowed(cstate):
        return table[jnp.maximum(cstate, 0)] >= 0

    # The first token comes from the prefill's logits, as in `decode`.
    logits0 = state["logits"]
    cstate = None
    if table is not None:
        cstate = constraint["state"]
        logits0 = jnp.where(allowed(cstate), logits0, -jnp.inf)
    tok0, lp0 = greedy_tokens(logits0)
    live0 = max_new > 0
    tok0 = jnp.where(live0, tok0, pad)
    stop0 = jnp.any(tok0[:, None] == stop_ids, axis=1) & live0
    out = {"tokens": jnp.full((rows, max_len), pad, jnp.int32).at[:, 0].set(tok0),
           "logprobs": jnp.zeros((rows, max_len), jnp.float32).at[:, 0].set(jnp.where(live0, lp0, 0.0)),
           "lengths": live0.astype(jnp.int32), "stopped": stop0,
           "drafted": jnp.int32(0), "accepted": jnp.int32(0)}
    if table is not None:
        cstate = jnp.where(live0, table[cstate, tok0], cstate)
    done = ~live0 | stop0 | (max_new <= 1)
    history0 = jnp.concatenate([jnp.where(prompt_valid, prompt_tokens, pad), out["tokens"]], axis=1)
    offsets = jnp.arange(k + 1)
    slots = jnp.arange(s_len)

    def cond(carry):
        step, done = carry[0], carry[1]
        return (step < max_len) & ~jnp.all(done)

    def body(carry):
        step, done, out, cache, history, cstate = carry
        glen = out["lengths"]                                  # generated so far, incl. the last token
        last = jnp.take_along_axis(out["tokens"], jnp.maximum(glen - 1, 0)[:, None], axis=1)[:, 0]
        drafts = lookup_drafts(history, t - plen, t + glen, k, ngram)
        feed = jnp.concatenate([last[:, None], drafts], axis=1)          # [B, k + 1]
        write = t + glen - 1                                            # the last token's slot
        positions = plen[:, None] + glen[:, None] - 1 + offsets
        generated = (slots >= t)[None, None, :] & (slots[None, None, :] <= (write[:, None] + offsets)[:, :, None])
        mask = state["key_valid"][:, None, :] | generated
        logits, new_cache = model.apply({"params": params}, feed, positions, mask,
                                        {"index": write, "layers": cache})
        if table is not None:
            # States before each fed position's successor: after `last`, then after each draft.
            states = [cstate]
            for j in range(k):
                prev = states[-1]
                states.append(jnp.where(prev >= 0, table[jnp.maximum(prev, 0), drafts[:, j]], -1))
            states = jnp.stack(states, axis=1)                           # [B, k + 1]
            logits = jnp.where(table[jnp.maximum(states, 0)] >= 0, logits, -jnp.inf)
        greedy, lps = greedy_tokens(logits)                                   # [B, k + 1]
        agree = jnp.cumprod((drafts == greedy[:, :k]).astype(jnp.int32), axis=1)
        n_ok = jnp.sum(agree, axis=1)                                   # accepted drafts
        live = ~done
        count = jnp.minimum(n_ok + 1, max_new - glen)                   # the budget left
        is_stop = jnp.any(greedy[:, :, None] == stop_ids[:, None, :], axis=2) & (offsets < count[:, None])
        first_stop = jnp.argmax(is_stop, axis=1)
        hit_stop = jnp.any(is_stop, axis=1) & live
        count = jnp.where(hit_stop, first_stop + 1, count)
        count = jnp.where(live, count, 0)
        keep = offsets[None, :] < count[:, None]
        cols = jnp.where(keep, glen[:, None] + offsets, max_len)        # out of range: dropped
        out = dict(out)
        out["tokens"] = out["tokens"].at[row_ids[:, None], cols].set(greedy, mode="drop")
        out["logprobs"] = out["logprobs"].at[row_ids[:, None], cols].set(lps, mode="drop")
        history = history.at[row_ids[:, None], t + cols].set(greedy, mode="drop")
        out["lengths"] = glen + count
        out["stopped"] = out["stopped"] | hit_stop
        out["drafted"] = out["drafted"] + k * jnp.sum(live)
        out["accepted"] = out["accepted"] + jnp.sum(jnp.maximum(count - 1, 0))
        if table is not None:
            before = jnp.take_along_axis(states, jnp.maximum(count - 1, 0)[:, None], axis=1)[:, 0]
            emitted = jnp.take_along_axis(greedy, jnp.maximum(count - 1, 0)[:, None], axis=1)[:, 0]
            cstate = jnp.where(count > 0, table[jnp.maximum(before, 0), emitted], cstate)
        done = done | hit_stop | (out["lengths"] >= max_new)
        return step + 1, done, out, new_cache["layers"], history, cstate

    carry = (jnp.int32(0), done, out, state["cache"]["layers"], history0,
             cstate if table is not None else jnp.zeros((rows,), jnp.int32))
    step, done, out, layers, _, _ = jax.lax.while_loop(cond, body, carry)
    out["steps"] = step + 1          # passes that drew tokens, the prefill's included (as `decode`)
    final = {"cache": {"index": state["cache"]["index"], "layers": layers},
             "key_valid": state["key_valid"], "position": plen + out["lengths"], "logits": state["logits"]}
    return out, final
