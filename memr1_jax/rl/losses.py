"""PPO / GRPO losses, KL estimators and loss aggregation with exact micro-batch accumulation.

Every loss and metric is returned as a `Weighted(sum, count)` pair whose value is
`sum / count`. Sums and counts add across micro-batches, so
    loss(full batch) == sum_i S_i / sum_i C_i
and the full-batch gradient is `sum_i grad(S_i) / sum_i C_i`: an update step accumulates
`grad(S_i)` and `C_i` per micro-batch and divides once at the end (tunix `WeightedMetric`).

Per-token arrays are `[B, T]`; `mask` is the response-token mask. Inputs at masked positions
are replaced with `where` before any arithmetic, so padding holding garbage (even NaN/inf)
changes nothing and receives exactly zero gradient. Mode/kind strings and `norm_len` are
static under `jit`; the float hyper-parameters may be traced (validation then only runs when
they are concrete Python numbers).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from memr1_jax.rl import logprobs as _logprobs

AGG_MODES = (
    "token-mean",  # sum over all tokens / number of tokens
    "sequence-mean-token-mean",  # mean over sequences of each sequence's token mean
    "sequence-mean-token-sum",  # mean over sequences of each sequence's token sum
    "seq-mean-token-sum-norm",  # Dr.GRPO: mean over sequences of (token sum / norm_len)
)
# verl spellings of the same modes.
_AGG_ALIASES = {
    "seq-mean-token-mean": "sequence-mean-token-mean",
    "seq-mean-token-sum": "sequence-mean-token-sum",
}
KL_KINDS = ("k1", "k2", "k3")
# tunix / verl spellings of the same estimators.
_KL_ALIASES = {"kl": "k1", "mse_kl": "k2", "mse": "k2", "low_var_kl": "k3"}


class Weighted(NamedTuple):
  """A quantity whose value is `sum / count`, accumulable across micro-batches."""

  sum: jax.Array
  count: jax.Array

  def value(self, min_count: float = 1.0) -> jax.Array:
    """`sum / max(count, min_count)`; every count here is a whole number of tokens/sequences."""
    return self.sum / jnp.maximum(self.count, min_count)


def accumulate(a: Any, b: Any) -> Any:
  """Adds two `Weighted` values or two pytrees (e.g. metric dicts) of them leaf by leaf."""
  return jax.tree.map(jnp.add, a, b)


def finalize(tree: Any, min_count: float = 1.0) -> Any:
  """Replaces every `Weighted` in a pytree by its value `sum / count`."""
  return jax.tree.map(
      lambda w: w.value(min_count) if isinstance(w, Weighted) else w,
      tree,
      is_leaf=lambda x: isinstance(x, Weighted),
  )


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def _canonical(name: str, choices: tuple[str, ...], aliases: dict[str, str], what: str) -> str:
  name = aliases.get(name, name)
  if name not in choices:
    raise ValueError(f"{what}={name!r}; expected one of {choices} (or aliases {sorted(aliases)})")
  return name


def _mask2d(mask: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  mask = jnp.asarray(mask)
  if mask.ndim != 2 or mask.shape != tuple(shape):
    raise ValueError(f"mask has shape {mask.shape}, expected [B, T] = {tuple(shape)}")
  return mask.astype(bool)


def _f32(x: jax.Array) -> jax.Array:
  return jnp.asarray(x).astype(jnp.float32)


def _clean(x: jax.Array, mask: jax.Array, fill: float = 0.0) -> jax.Array:
  """Float32 copy of `x` with masked-out entries replaced (the 'double where' trick)."""
  return jnp.where(mask, _f32(x), fill)


def _per_token(x: jax.Array, mask: jax.Array, name: str) -> jax.Array:
  """Broadcasts `[B]` (per-sequence) or `[B, T]` arrays to the mask shape, cleaned."""
  x = _f32(x)
  if x.ndim == 1 and x.shape[0] == mask.shape[0]:
    x = x[:, None]
  elif x.shape != mask.shape:
    raise ValueError(f"{name} has shape {x.shape}, expected {mask.shape} or ({mask.shape[0]},)")
  return jnp.where(mask, jnp.broadcast_to(x, mask.shape), 0.0)


def _check(name: str, value: Any, ok: bool, need: str) -> None:
  if isinstance(value, (int, float)) and not ok:
    raise ValueError(f"{name}={value!r}: {need}")


def token_mean(per_token: jax.Array, mask: jax.Array) -> Weighted:
  """Masked token mean as a `Weighted` (the aggregation used for every diagnostic)."""
  mask = _mask2d(mask, jnp.shape(per_token))
  return Weighted(jnp.sum(_clean(per_token, mask)), jnp.sum(mask).astype(jnp.float32))


# ----------------------------------------------------------------------------------------------
# Aggregation
# ----------------------------------------------------------------------------------------------


def aggregate(
    per_token: jax.Array,
    mask: jax.Array,
    mode: str = "token-mean",
    *,
    norm_len: int | None = None,
) -> Weighted:
  """Reduces a `[B, T]` per-token loss to `Weighted(sum, count)`.

  token-mean:               sum = sum_{b,t} l,            count = number of response tokens
  sequence-mean-token-mean: sum = sum_b mean_t l[b],      count = sequences with >= 1 token
  sequence-mean-token-sum:  sum = sum_b sum_t l[b],       count = sequences with >= 1 token
  seq-mean-token-sum-norm:  sum = sum_{b,t} l / norm_len, count = sequences with >= 1 token
    (Dr.GRPO; `norm_len` defaults to T, the padded max response length: keep it fixed across
    micro-batches for exact accumulation).
  Rows without any response token add nothing to either sum or count.
  """
  mode = _canonical(mode, AGG_MODES, _AGG_ALIASES, "agg_mode")
  mask = _mask2d(mask, jnp.shape(per_token))
  x = _clean(per_token, mask)
  tokens_per_seq = jnp.sum(mask, axis=-1).astype(jnp.float32)
  n_seqs = jnp.sum(tokens_per_seq > 0).astype(jnp.float32)
  if mode == "token-mean":
    return Weighted(jnp.sum(x), jnp.sum(tokens_per_seq))
  if mode == "sequence-mean-token-mean":
    per_seq = jnp.sum(x, axis=-1) / jnp.maximum(tokens_per_seq, 1.0)
    return Weighted(jnp.sum(per_seq), n_seqs)
  if mode == "sequence-mean-token-sum":
    return Weighted(jnp.sum(x), n_seqs)
  # seq-mean-token-sum-norm
  norm = mask.shape[-1] if norm_len is None else norm_len
  _check("norm_len", norm, isinstance(norm, (int, float)) and norm > 0, "must be positive")
  return Weighted(jnp.sum(x) / norm, n_seqs)


# ----------------------------------------------------------------------------------------------
# KL estimators and entropy
# ----------------------------------------------------------------------------------------------


def kl_penalty(
    logp: jax.Array,
    ref_logp: jax.Array,
    kind: str = "k3",
    *,
    log_ratio_clamp: float | None = None,
    kl_clamp: float | None = None,
) -> jax.Array:
  """Per-token estimate of KL(pi || pi_ref) from log-probs of tokens sampled from pi.

  With d = logp - ref_logp (clipped to +-log_ratio_clamp when given):
    k1 = d;  k2 = 0.5 * d^2;  k3 = exp(-d) + d - 1  (= exp(ref-logp) - (ref-logp) - 1, >= 0).
  `kl_clamp` clips the result to [-kl_clamp, kl_clamp] (verl clamps k3 to +-10). Aliases:
  "kl" (k1), "mse_kl" (k2), "low_var_kl" (k3).
  """
  kind = _canonical(kind, KL_KINDS, _KL_ALIASES, "kl kind")
  d = _f32(logp) - _f32(ref_logp)
  if log_ratio_clamp is not None:
    d = jnp.clip(d, -log_ratio_clamp, log_ratio_clamp)
  if kind == "k1":
    kl = d
  elif kind == "k2":
    kl = 0.5 * jnp.square(d)
  else:
    kl = jnp.exp(-d) + d - 1.0
  if kl_clamp is not None:
    kl = jnp.clip(kl, -kl_clamp, kl_clamp)
  return kl


def mean_entropy(
    mask: jax.Array,
    *,
    logits: jax.Array | None = None,
    entropy: jax.Array | None = None,
    temperature: float = 1.0,
    agg_mode: str = "token-mean",
    norm_len: int | None = None,
) -> Weighted:
  """Aggregated policy entropy from `[B, T, V]` logits or a given `[B, T]` per-token entropy."""
  if (logits is None) == (entropy is None):
    raise ValueError("pass exactly one of logits= or entropy=")
  mask = jnp.asarray(mask).astype(bool)
  if logits is not None:
    logits = jnp.where(mask[..., None], _f32(logits), 0.0)
    entropy = _logprobs.entropy_from_logits(logits, temperature=temperature)
  return aggregate(entropy, mask, agg_mode, norm_len=norm_len)


# ----------------------------------------------------------------------------------------------
# Policy losses
# ----------------------------------------------------------------------------------------------


def ppo_clip_per_token(
    logp: jax.Array,
    old_logp: jax.Array,
    advantages: jax.Array,
    *,
    epsilon_low: float | jax.Array = 0.2,
    epsilon_high: float | jax.Array | None = None,
    clip_ratio_c: float | jax.Array | None = None,
    log_ratio_clamp: float | None = 20.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Clipped PPO surrogate per token (no masking; `advantages` broadcastable to logp).

    r   = exp(clip(logp - old_logp, +-log_ratio_clamp))
    l   = max(-A r, -A clip(r, 1 - epsilon_low, 1 + epsilon_high))     (clip-higher, DAPO)
    if clip_ratio_c: l = min(l, -A clip_ratio_c) where A < 0           (dual clip, verl)
  Returns `(loss, stats)` with float per-token stats `clipped`, `dual_clipped`, `log_ratio`,
  `ratio`.
  """
  eps_hi = epsilon_low if epsilon_high is None else epsilon_high
  _check("epsilon_low", epsilon_low, isinstance(epsilon_low, (int, float)) and 0 <= epsilon_low < 1, "need 0 <= epsilon_low < 1")
  _check("epsilon_high", eps_hi, isinstance(eps_hi, (int, float)) and eps_hi >= 0, "need epsilon_high >= 0")
  if clip_ratio_c is not None:
    _check("clip_ratio_c", clip_ratio_c, isinstance(clip_ratio_c, (int, float)) and clip_ratio_c > 1, "dual clip needs clip_ratio_c > 1")
  log_ratio = _f32(logp) - _f32(old_logp)
  if log_ratio_clamp is not None:
    log_ratio = jnp.clip(log_ratio, -log_ratio_clamp, log_ratio_clamp)
  ratio = jnp.exp(log_ratio)
  adv = jnp.broadcast_to(_f32(advantages), ratio.shape)
  unclipped = -adv * ratio
  clipped = -adv * jnp.clip(ratio, 1.0 - epsilon_low, 1.0 + eps_hi)
  loss = jnp.maximum(unclipped, clipped)
  stats = {"clipped": (clipped > unclipped).astype(jnp.float32), "log_ratio": log_ratio, "ratio": ratio}
  if clip_ratio_c is not None:
    lower = -adv * clip_ratio_c
    is_dual = (adv < 0) & (loss > lower)
    loss = jnp.where(adv < 0, jnp.minimum(loss, lower), loss)
    stats["dual_clipped"] = is_dual.astype(jnp.float32)
  else:
    stats["dual_clipped"] = jnp.zeros_like(ratio)
  return loss, stats


def policy_loss(
    logp: jax.Array,
    old_logp: jax.Array | None,
    advantages: jax.Array,
    mask: jax.Array,
    *,
    epsilon_low: float | jax.Array = 0.2,
    epsilon_high: float | jax.Array | None = None,
    clip_ratio_c: float | jax.Array | None = None,
    log_ratio_clamp: float | None = 20.0,
    ref_logp: jax.Array | None = None,
    kl_coef: float | jax.Array = 0.0,
    kl_kind: str = "k3",
    kl_log_ratio_clamp: float | None = None,
    kl_clamp: float | None = None,
    entropy: jax.Array | None = None,
    entropy_coef: float | jax.Array = 0.0,
    agg_mode: str = "token-mean",
    norm_len: int | None = None,
) -> tuple[Weighted, dict[str, Weighted]]:
  """Clipped policy-gradient loss + kl_coef * KL(pi || ref) - entropy_coef * entropy.

  logp: `[B, T]` log-probs of the sampled tokens under the current policy (differentiated);
  old_logp: the behaviour policy's, or None for the on-policy single-step case (then the
    ratio is exp(logp - stop_gradient(logp)) = 1 with the policy gradient as its gradient);
  advantages: `[B, T]` per token or `[B]` per sequence;
  ref_logp: reference-policy log-probs; needed for the KL term and the "kl" metric;
  entropy: optional `[B, T]` per-token entropy (e.g. from `token_logprobs(...,
    return_entropy=True)`) for the bonus and the "entropy" metric.
  All terms are combined per token, then aggregated once with `agg_mode`, so the total is
  linear in the per-token terms and accumulates exactly over micro-batches.

  Returns `(loss, metrics)`; metrics (each `Weighted`): pg_loss, kl_loss, entropy_loss (in
  agg_mode), and token means pg_clipfrac, pg_clipfrac_lower, ppo_kl (k1 of KL(old || new)),
  approx_kl_k3, ratio_mean, kl, entropy.
  """
  logp = _f32(logp)
  mask = _mask2d(mask, logp.shape)
  lp = _clean(logp, mask)
  olp = jax.lax.stop_gradient(lp) if old_logp is None else _clean(old_logp, mask)
  adv = _per_token(advantages, mask, "advantages")
  pg, st = ppo_clip_per_token(
      lp, olp, adv,
      epsilon_low=epsilon_low, epsilon_high=epsilon_high, clip_ratio_c=clip_ratio_c,
      log_ratio_clamp=log_ratio_clamp,
  )
  agg = lambda x: aggregate(x, mask, agg_mode, norm_len=norm_len)
  total = pg
  metrics = {
      "pg_loss": agg(pg),
      "pg_clipfrac": token_mean(st["clipped"], mask),
      "pg_clipfrac_lower": token_mean(st["dual_clipped"], mask),
      "ppo_kl": token_mean(-st["log_ratio"], mask),
      "approx_kl_k3": token_mean(st["ratio"] - 1.0 - st["log_ratio"], mask),
      "ratio_mean": token_mean(st["ratio"], mask),
  }
  if ref_logp is not None:
    kl = kl_penalty(lp, _clean(ref_logp, mask), kl_kind, log_ratio_clamp=kl_log_ratio_clamp, kl_clamp=kl_clamp)
    total = total + kl_coef * kl
    metrics["kl"] = token_mean(kl, mask)
    metrics["kl_loss"] = agg(kl)
  elif not (isinstance(kl_coef, (int, float)) and kl_coef == 0):
    raise ValueError(f"kl_coef={kl_coef!r} needs ref_logp")
  if entropy is not None:
    ent = _clean(entropy, mask)
    total = total - entropy_coef * ent
    metrics["entropy"] = token_mean(ent, mask)
    metrics["entropy_loss"] = agg(ent)
  elif not (isinstance(entropy_coef, (int, float)) and entropy_coef == 0):
    raise ValueError(f"entropy_coef={entropy_coef!r} needs entropy")
  return agg(total), metrics


def ppo_policy_loss(
    logp: jax.Array,
    old_logp: jax.Array,
    advantages: jax.Array,
    mask: jax.Array,
    **kwargs: Any,
) -> tuple[Weighted, dict[str, Weighted]]:
  """PPO actor loss: `policy_loss` with KL off by default (PPO puts KL in the reward,
  see `advantages.place_outcome_reward`). Keyword arguments as `policy_loss`."""
  return policy_loss(logp, old_logp, advantages, mask, **kwargs)


def grpo_loss(
    logp: jax.Array,
    old_logp: jax.Array | None,
    ref_logp: jax.Array | None,
    advantages: jax.Array,
    mask: jax.Array,
    *,
    beta: float | jax.Array = 0.04,
    kl_kind: str = "k3",
    **kwargs: Any,
) -> tuple[Weighted, dict[str, Weighted]]:
  """GRPO loss: clipped surrogate + beta * KL(pi || ref) in the loss (k3 by default, as
  tunix/verl). `ref_logp` may be None only when beta == 0. Other keyword arguments as
  `policy_loss` (clip-higher, dual clip, agg_mode, entropy, ...)."""
  if ref_logp is None and not (isinstance(beta, (int, float)) and beta == 0):
    raise ValueError(f"grpo_loss with beta={beta!r} needs ref_logp")
  return policy_loss(logp, old_logp, advantages, mask, ref_logp=ref_logp, kl_coef=beta, kl_kind=kl_kind, **kwargs)


# ----------------------------------------------------------------------------------------------
# Value loss
# ----------------------------------------------------------------------------------------------


def value_loss_per_token(
    values: jax.Array,
    old_values: jax.Array,
    returns: jax.Array,
    *,
    clip_range: float | jax.Array | None = 0.2,
) -> tuple[jax.Array, jax.Array]:
  """Clipped value loss per token: 0.5 * max((V - R)^2, (V_old + clip(V - V_old, +-c) - R)^2).

  Returns `(loss, clipped)` where `clipped` is 1.0 where the clipped branch is the larger.
  With `clip_range=None` it is plain 0.5 * (V - R)^2.
  """
  v, v_old, ret = _f32(values), _f32(old_values), _f32(returns)
  sq = jnp.square(v - ret)
  if clip_range is None:
    return 0.5 * sq, jnp.zeros_like(sq)
  _check("clip_range", clip_range, isinstance(clip_range, (int, float)) and clip_range >= 0, "must be >= 0")
  v_clip = v_old + jnp.clip(v - v_old, -clip_range, clip_range)
  sq_clip = jnp.square(v_clip - ret)
  return 0.5 * jnp.maximum(sq, sq_clip), (sq_clip > sq).astype(jnp.float32)


def value_loss(
    values: jax.Array,
    old_values: jax.Array,
    returns: jax.Array,
    mask: jax.Array,
    *,
    clip_range: float | jax.Array | None = 0.2,
    agg_mode: str = "token-mean",
    norm_len: int | None = None,
) -> tuple[Weighted, dict[str, Weighted]]:
  """Aggregated clipped value loss. Metrics: vf_loss, vf_clipfrac, vpred_mean, return_mean."""
  values = _f32(values)
  mask = _mask2d(mask, values.shape)
  v, v_old, ret = _clean(values, mask), _clean(old_values, mask), _clean(returns, mask)
  per_tok, clipped = value_loss_per_token(v, v_old, ret, clip_range=clip_range)
  loss = aggregate(per_tok, mask, agg_mode, norm_len=norm_len)
  metrics = {
      "vf_loss": loss,
      "vf_clipfrac": token_mean(clipped, mask),
      "vpred_mean": token_mean(v, mask),
      "return_mean": token_mean(ret, mask),
  }
  return loss, metrics
