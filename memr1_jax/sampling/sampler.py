"""Jit-compiled batched sampler: one prefill, then a `lax.while_loop` decode.

Layout (the shape of tunix's vanilla sampler):

* Prompts of different lengths are LEFT-padded to a common bucket length T
  (powers of two and their 1.5x midpoints, so at most a few shapes compile).
  Each row gets RoPE positions 0.. over its valid tokens and a key-validity
  mask [B, S] over the cache slots, so padding never influences a real token.
* `prefill` runs the prompt through the model into a fresh KV cache of S =
  T + N slots (N = bucketed max_new_tokens) and computes the logits of the last
  position only (hidden states -> `head`), never [B, T, V] logits. With
  ``num_samples=G`` it then repeats every row G times (rows i*G .. i*G+G-1 are
  the G continuations of prompt i): one prefill serves a whole GRPO group.
* `decode` samples the first token from the prefill logits, then loops: feed
  the last token at slot T+i-1, sample token i. It stops when every row is
  done (stop token or its own max_new_tokens) or N tokens were drawn. The
  state (cache included) is donated, so the loop updates the cache in place.

Both functions take ``params`` as an ordinary argument, so new RL parameters
never trigger a recompile; model and sampling configs are static.

Returned per row:
* tokens [N]: completion tokens, `pad_id` after the row ended.
* lengths: number of generated tokens, INCLUDING the stop token when the row
  ended on one (`stopped` says which rows did).
* logprobs [N]: log-prob of each sampled token under the UNMODIFIED model
  distribution, float32 ``log_softmax(raw logits)`` (what a trainer recomputes
  at temperature 1); 0 after the row ended.
* scaled_logprobs [N] (only when SamplingConfig.scaled_logprobs): the same under
  the temperature-scaled distribution ``log_softmax(logits / T)``; top-k/top-p
  truncation is NOT applied to it. Equal to `logprobs` for greedy.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from memr1_jax.models.config import ModelConfig
from memr1_jax.models.decoder import Decoder, causal_mask, init_cache, positions_from_valid
from memr1_jax.parallel.mesh import mesh_context
from memr1_jax.sampling.speculative import greedy_tokens, speculative_decode

Array = jax.Array


# ---------------------------------------------------------------------- configs
@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How tokens are drawn. Static under jit: each distinct config compiles once.

    temperature 0 means greedy (argmax); top_k 0 and top_p 1.0 disable those filters.
    """
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    scaled_logprobs: bool = False  # also return log-probs under logits / temperature

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"SamplingConfig.temperature={self.temperature}: must be >= 0")
        if self.top_k < 0:
            raise ValueError(f"SamplingConfig.top_k={self.top_k}: must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingConfig.top_p={self.top_p}: must be in (0, 1]")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclasses.dataclass
class SampleOutput:
    """Host-side result of `generate` (numpy). Rows are prompt-major: row i*G+g is
    sample g of prompt i."""
    tokens: np.ndarray           # int32 [R, N], pad_id after the end
    lengths: np.ndarray          # int32 [R], generated tokens incl. the stop token
    logprobs: np.ndarray         # float32 [R, N], raw-model log-probs, 0 after the end
    prompt_lengths: np.ndarray   # int32 [R]
    stopped: np.ndarray          # bool [R], True where the row ended on a stop token
    scaled_logprobs: np.ndarray | None = None  # float32 [R, N] under logits / temperature
    passes: int = 0              # forward passes that drew tokens, the prefill's included
    # Speculative decoding only: draft tokens proposed to live rows, and accepted.
    drafted: int = 0
    accepted: int = 0

    def completions(self) -> list[list[int]]:
        """Token lists per row, each including its stop token if any."""
        return [self.tokens[r, : self.lengths[r]].tolist() for r in range(len(self.lengths))]


# ------------------------------------------------------------------- bucketing
def bucket_size(n: int, minimum: int = 16) -> int:
    """Smallest value >= n from {minimum * 2^k} and their 1.5x midpoints
    (16, 24, 32, 48, 64, 96, ...): at most 33% padding, few compiled shapes."""
    if n <= minimum:
        return minimum
    b = minimum
    while True:
        if n <= b:
            return b
        if n <= b + b // 2:
            return b + b // 2
        b *= 2


def batch_bucket(n: int) -> int:
    """Batch sizes are padded to a power of two (1, 2, 4, 8, ...)."""
    return 1 << max(0, (n - 1).bit_length())


def pad_prompts(prompts: Sequence[Sequence[int]], length: int, batch: int, pad_id: int):
    """Left-pad token lists into int32 tokens/valid arrays [batch, length] (extra rows:
    one valid pad token, so every row has a defined last position)."""
    tokens = np.full((batch, length), pad_id, np.int32)
    valid = np.zeros((batch, length), bool)
    for r, p in enumerate(prompts):
        if len(p):
            tokens[r, length - len(p):] = p
            valid[r, length - len(p):] = True
    valid[len(prompts):, -1] = True
    return tokens, valid


# ------------------------------------------------------------------ sampling
def _logsumexp(x):
    m = jnp.max(x, axis=-1, keepdims=True)
    return (m + jnp.log(jnp.sum(jnp.exp(x - m), axis=-1, keepdims=True)))[..., 0]


def sample_tokens(logits: Array, key, sc: SamplingConfig):
    """Draw one token per row from float32 logits [B, V].

    Returns (tokens [B] int32, raw log-probs [B], scaled log-probs [B] or None).
    Greedy never sorts; top-k uses `lax.top_k`; top-p alone needs a full
    `lax.top_k(V)` sort (slow for big vocabularies; combine it with top_k).
    """
    if sc.greedy:
        tok, lp = greedy_tokens(logits)
        return tok, lp, (lp if sc.scaled_logprobs else None)
    lse = _logsumexp(logits)
    scaled = logits / jnp.float32(sc.temperature)
    if sc.top_k or sc.top_p < 1.0:
        k = min(sc.top_k, logits.shape[-1]) if sc.top_k else logits.shape[-1]
        vals, idx = jax.lax.top_k(scaled, k)  # descending
        if sc.top_p < 1.0:
            probs = jax.nn.softmax(vals, axis=-1)
            before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly ahead of each token
            vals = jnp.where(before < sc.top_p, vals, -jnp.inf)  # the top token always stays
        choice = jax.random.categorical(key, vals, axis=-1)
        tok = jnp.take_along_axis(idx, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)
    else:
        tok = jax.random.categorical(key, scaled, axis=-1).astype(jnp.int32)
    picked = jnp.take_along_axis(logits, tok[:, None], axis=-1)[:, 0]
    lp = picked - lse
    slp = None
    if sc.scaled_logprobs:
        slp = picked / jnp.float32(sc.temperature) - _logsumexp(scaled)
    return tok, lp, slp


# ------------------------------------------------------------ jitted pieces
@functools.partial(jax.jit, static_argnames=("cfg", "cache_len", "num_samples", "cache_dtype", "share_prompt"))
def prefill(cfg: ModelConfig, params, tokens: Array, valid: Array, *, cache_len: int,
            num_samples: int = 1, cache_dtype: str | None = None, share_prompt: bool = True) -> dict[str, Any]:
    """Run left-padded prompts [B, T] into a fresh cache of `cache_len` slots.

    Returns the decode state: cache, key_valid [B*G, S], next RoPE position
    [B*G], last-position logits [B*G, V] (float32). Rows repeat G=num_samples times.
    With G > 1 and ``share_prompt``, each layer keeps the prompt's keys and values once per
    prompt ("prefix_k" / "prefix_v" [B, K, T, D], read by ``shared_prefix_attention``) and
    the rows own only their S - T generated slots: the G copies are neither written here nor
    read at every decode step. Otherwise the whole cache is repeated G times.
    """
    b, t = tokens.shape
    if cache_len < t + 1:
        raise ValueError(f"prefill: cache_len={cache_len} must exceed the prompt length {t}")
    shared = num_samples > 1 and share_prompt
    cache = init_cache(cfg, b, t if shared else cache_len, cache_dtype)
    key_valid = jnp.zeros((b, cache_len), bool).at[:, :t].set(valid)
    positions = positions_from_valid(valid)
    model = Decoder(cfg)
    # The cache is empty: the prompt attends to its own T keys (causal blocks skipped), not S slots.
    hidden, cache = model.apply({"params": params}, tokens, positions, causal_mask(valid), cache,
                                return_hidden=True, fresh=True, last_only=True)
    logits = model.apply({"params": params}, hidden[:, -1], method=Decoder.head)
    state = {"key_valid": key_valid, "position": jnp.sum(valid, axis=1).astype(jnp.int32), "logits": logits}
    if num_samples == 1:
        return {**state, "cache": cache}
    rep = functools.partial(jnp.repeat, repeats=num_samples, axis=0)
    state = jax.tree.map(rep, state)
    if shared:
        own = init_cache(cfg, b * num_samples, cache_len - t, cache_dtype)
        layers = tuple({**o, "prefix_k": c["k"], "prefix_v": c["v"]}
                       for o, c in zip(own["layers"], cache["layers"]))
        return {**state, "cache": {"index": own["index"], "layers": layers}}
    layers = jax.tree.map(rep, cache["layers"])
    return {**state, "cache": {"index": cache["index"], "layers": layers}}


def prefix_slots(cache: dict[str, Any]) -> int:
    """Cache slots before a row's own (a shared prompt's), 0 without one."""
    first = cache["layers"][0]
    return first["prefix_k"].shape[2] if "prefix_k" in first else 0


@functools.partial(jax.jit, static_argnames=("cfg", "sampling", "max_len"), donate_argnames=("state",))
def decode(cfg: ModelConfig, params, state: dict[str, Any], rng, stop_ids: Array, max_new: Array,
           *, sampling: SamplingConfig, max_len: int, pad_id: int = 0, constraint: dict | None = None):
    """Sample up to `max_len` tokens per row after `prefill`.

    stop_ids [R, K] int32 (-1 = unused slot); max_new [R] int32 (per-row budget,
    <= max_len; 0 marks a padding row that draws nothing). ``constraint``: {"next_state":
    [S, V] int32 automaton table (-1: token not allowed), "state": [R] int32 start states}
    (``constraint.py``); tokens not allowed get -inf logits, so tokens and log-probs are
    those of the masked, renormalised policy. Returns (outputs dict, final state); the input
    state is donated.
    """
    rows = state["logits"].shape[0]
    model = Decoder(cfg)
    pad = jnp.int32(pad_id)
    limit = jnp.minimum(jnp.max(max_new), max_len)
    table = None if constraint is None else constraint["next_state"]

    def draw(logits, step, done, out):
        if table is not None:
            logits = jnp.where(table[out["cstate"]] >= 0, logits, -jnp.inf)
        tok, lp, slp = sample_tokens(logits, jax.random.fold_in(rng, step), sampling)
        live = ~done
        if table is not None:
            out = dict(out, cstate=jnp.where(live, table[out["cstate"], tok], out["cstate"]))
        tok = jnp.where(live, tok, pad)
        out = dict(out)
        out["tokens"] = jax.lax.dynamic_update_slice(out["tokens"], tok[:, None], (0, step))
        out["logprobs"] = jax.lax.dynamic_update_slice(
            out["logprobs"], jnp.where(live, lp, 0.0)[:, None], (0, step))
        if slp is not None:
            out["scaled_logprobs"] = jax.lax.dynamic_update_slice(
                out["scaled_logprobs"], jnp.where(live, slp, 0.0)[:, None], (0, step))
        hit_stop = jnp.any(tok[:, None] == stop_ids, axis=1) & live
        out["lengths"] = out["lengths"] + live.astype(jnp.int32)
        out["stopped"] = out["stopped"] | hit_stop
        done = done | hit_stop | (step + 1 >= max_new)
        return tok, done, out

    out = {"tokens": jnp.full((rows, max_len), pad, jnp.int32),
           "logprobs": jnp.zeros((rows, max_len), jnp.float32),
           "lengths": jnp.zeros((rows,), jnp.int32),
           "stopped": jnp.zeros((rows,), bool)}
    if sampling.scaled_logprobs:
        out["scaled_logprobs"] = jnp.zeros((rows, max_len), jnp.float32)
    if table is not None:
        out["cstate"] = constraint["state"]
    done0 = max_new <= 0
    tok, done, out = draw(state["logits"], 0, done0, out)

    def cond(carry):
        step, _, done, _, _, _, _ = carry
        return (step < limit) & ~jnp.all(done)

    def body(carry):
        step, tok, done, out, cache, key_valid, position = carry
        slot = cache["index"] + prefix_slots(cache)
        key_valid = jax.lax.dynamic_update_slice(key_valid, jnp.ones((rows, 1), bool), (0, slot))
        mask = key_valid[:, None, :]  # causal by construction: later slots are not valid yet
        logits, cache = model.apply({"params": params}, tok[:, None], position[:, None], mask, cache)
        tok, done, out = draw(logits[:, 0], step, done, out)
        return step + 1, tok, done, out, cache, key_valid, position + 1

    carry = (jnp.int32(1), tok, done, out, state["cache"], state["key_valid"], state["position"])
    step, tok, done, out, cache, key_valid, position = jax.lax.while_loop(cond, body, carry)
    final = {"cache": cache, "key_valid": key_valid, "position": position, "logits": state["logits"]}
    out["steps"] = step
    return out, final


# ------------------------------------------------------------------ host API
def fetch(tree):
    """Device arrays -> numpy. Across processes, arrays split over other hosts' devices are
    gathered first (every process then holds the whole value)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        return jax.tree.map(lambda x: np.asarray(x) if x.is_fully_replicated else
                            multihost_utils.process_allgather(x, tiled=True), tree)
    return jax.device_get(tree)
def _per_row(value, n: int, name: str) -> list:
    if isinstance(value, (int, np.integer)):
        return [int(value)] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"{name}: expected one value per prompt ({n}), got {len(value)}")
    return value


def _stop_table(stop_ids, n: int) -> list[list[int]]:
    """stop_ids: one shared collection of ids, or one collection per prompt."""
    if stop_ids is None:
        return [[] for _ in range(n)]
    stop_ids = list(stop_ids)
    if stop_ids and not isinstance(stop_ids[0], (int, np.integer)):
        if len(stop_ids) != n:
            raise ValueError(f"stop_ids: expected one set per prompt ({n}), got {len(stop_ids)}")
        return [sorted({int(t) for t in s}) for s in stop_ids]
    shared = sorted({int(t) for t in stop_ids})
    return [shared for _ in range(n)]


def _constraint_arrays(constraints, n: int, g: int, rows: int, vocab: int) -> dict | None:
    """The automata of the rows stacked into one table (each keeps its own states, offset),
    plus each row's start state; a row without one gets a state that allows every token."""
    if constraints is None:
        return None
    per = list(constraints) if isinstance(constraints, (list, tuple)) else [constraints] * n
    if len(per) != n:
        raise ValueError(f"generate: expected one constraint per prompt ({n}), got {len(per)}")
    if all(c is None for c in per):
        return None
    tables, offset, start = [np.zeros((1, vocab), np.int32)], {}, np.zeros((rows,), np.int32)  # state 0: free
    total = 1
    for i, c in enumerate(per):
        if c is None:
            continue
        if c.next_state.shape[1] != vocab:
            raise ValueError(f"generate: constraint {i} covers {c.next_state.shape[1]} tokens, the model {vocab}")
        if id(c) not in offset:
            offset[id(c)] = total
            tables.append(np.where(c.next_state >= 0, c.next_state + total, -1).astype(np.int32))
            total += c.num_states
        start[i * g:(i + 1) * g] = offset[id(c)] + c.initial
    return {"next_state": np.concatenate(tables), "state": start}


def generate(cfg: ModelConfig, params, prompts: Sequence[Sequence[int]],
             sampling: SamplingConfig = SamplingConfig(), rng=None, stop_ids=None,
             max_new_tokens: int | Sequence[int] = 64, num_samples: int = 1, pad_id: int = 0,
             cache_dtype: str | None = None, min_prompt_bucket: int = 16,
             bucket_batch: bool = True, mesh=None, rules=None, constraints=None,
             timings: dict | None = None, speculative: int = 0, share_prompt: bool = True) -> SampleOutput:
    """Sample `num_samples` continuations of each prompt (token id lists).

    constraints: None, one ``TokenAutomaton`` for all prompts, or one per prompt (None for an
    unconstrained prompt): each row samples only tokens its automaton allows.

    With a ``mesh`` (params already placed by the logical-axis ``rules``), prompts and the
    per-row arrays are split over the batch axes and the KV cache by batch and kv-head.

    stop_ids: ids shared by all prompts, or one collection per prompt.
    max_new_tokens: an int, or one budget per prompt.
    timings: a dict to which "prefill_s" and "decode_s" are added (the device is waited for
    after each phase, so pass one only when measuring).
    speculative: draft length k > 0 decodes greedily with prompt-lookup drafts
    (``speculative.py``): the same tokens as plain greedy decoding in fewer forward passes;
    needs greedy sampling and num_samples 1.
    share_prompt: with num_samples > 1, the G samples of a prompt read one copy of its keys
    and values (``prefill``); False repeats the cache G times (the same tokens and log-probs
    up to float rounding).
    Returns numpy arrays with len(prompts) * num_samples rows, prompt-major
    (row i*G + g is sample g of prompt i) and N = max(max_new_tokens) columns.
    """
    n = len(prompts)
    if n == 0:
        raise ValueError("generate: no prompts")
    if num_samples < 1:
        raise ValueError(f"generate: num_samples={num_samples} must be >= 1")
    lens = [len(p) for p in prompts]
    for i, p in enumerate(prompts):
        if not len(p):
            raise ValueError(f"generate: prompt {i} is empty")
        bad = [t for t in p if not 0 <= int(t) < cfg.vocab_size]
        if bad:
            raise ValueError(f"generate: prompt {i} has token ids outside [0, {cfg.vocab_size}): {bad[:5]}")
    budgets = [int(m) for m in _per_row(max_new_tokens, n, "max_new_tokens")]
    if min(budgets) < 1:
        raise ValueError(f"generate: max_new_tokens must be >= 1, got {min(budgets)}")
    for i, (length, m) in enumerate(zip(lens, budgets)):
        if length + m > cfg.max_seq_len:
            raise ValueError(f"generate: prompt {i} length {length} + max_new_tokens {m} exceeds "
                             f"max_seq_len {cfg.max_seq_len}")
    if speculative < 0:
        raise ValueError(f"generate: speculative={speculative} must be >= 0 (0: off)")
    if speculative and (not sampling.greedy or num_samples != 1):
        raise ValueError(f"generate: speculative decoding verifies greedy tokens only; got temperature "
                         f"{sampling.temperature} and num_samples {num_samples}")
    stops = _stop_table(stop_ids, n)
    rng = jax.random.PRNGKey(0) if rng is None else rng

    t = bucket_size(max(lens), min_prompt_bucket)
    n_new = max(budgets)
    max_len = bucket_size(n_new, 16)
    b = batch_bucket(n) if bucket_batch else n
    tokens, valid = pad_prompts(prompts, t, b, pad_id)

    g = num_samples
    rows = b * g
    width = max(4, batch_bucket(max(len(s) for s in stops)))  # bucketed: no recompiles
    stop_arr = np.full((rows, width), -1, np.int32)
    max_arr = np.zeros((rows,), np.int32)  # padding rows: budget 0, never sample
    for i in range(n):
        stop_arr[i * g:(i + 1) * g, :len(stops[i])] = stops[i]
        max_arr[i * g:(i + 1) * g] = budgets[i]

    put = jnp.asarray
    if mesh is not None:
        from memr1_jax.parallel import rules as rules_lib
        rules = rules_lib.DEFAULT_RULES if rules is None else rules
        put = lambda x: jax.device_put(np.asarray(x), rules_lib.batch_sharding(mesh, x.shape, rules))  # noqa: E731
    clock = time.perf_counter()
    with mesh_context(mesh, rules):
        state = prefill(cfg, params, put(tokens), put(valid), cache_len=t + max_len + speculative,
                        num_samples=g, cache_dtype=cache_dtype, share_prompt=share_prompt)
        if timings is not None:
            jax.block_until_ready(state)
            timings["prefill_s"] = timings.get("prefill_s", 0.0) + time.perf_counter() - clock
            clock = time.perf_counter()
        con = _constraint_arrays(constraints, n, g, rows, cfg.vocab_size)
        if con is not None:
            con = {"next_state": jnp.asarray(con["next_state"]), "state": put(con["state"])}
        if speculative:
            out, _ = speculative_decode(cfg, params, state, put(tokens), put(valid), put(stop_arr),
                                        put(max_arr), max_len=max_len, draft_len=speculative,
                                        pad_id=pad_id, constraint=con)
        else:
            out, _ = decode(cfg, params, state, rng, put(stop_arr), put(max_arr),
                            sampling=sampling, max_len=max_len, pad_id=pad_id, constraint=con)
    out = fetch(out)
    if timings is not None:
        timings["decode_s"] = timings.get("decode_s", 0.0) + time.perf_counter() - clock
    r = n * g
    return SampleOutput(
        tokens=out["tokens"][:r, :n_new], lengths=out["lengths"][:r], logprobs=out["logprobs"][:r, :n_new],
        prompt_lengths=np.repeat(np.asarray(lens, np.int32), g), stopped=out["stopped"][:r],
        # Speculative decoding is greedy: the scaled log-probs are the raw ones.
        scaled_logprobs=(out.get("scaled_logprobs", out["logprobs"])[:r, :n_new] if sampling.scaled_logprobs
                         else None),
        passes=int(out["steps"]), drafted=int(out.get("drafted", 0)), accepted=int(out.get("accepted", 0)))
