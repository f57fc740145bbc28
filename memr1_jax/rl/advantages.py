"""Advantage estimators: GAE for PPO, group-relative advantages for GRPO-family.

Conventions (shared with `losses.py`):
  * per-token arrays are `[B, T]` over the response tokens; `mask` is the response-token mask
    (1/True = a token the policy generated and is trained on, 0 = padding or env-injected text);
  * masked positions are *transparent* to GAE (neither reward nor value is read there, the
    recursion skips over them) and get exactly 0 in every output;
  * nothing here branches on array values, so all functions are jittable; string/int
    arguments that change the computation (`estimator`, `group_size`) must be static.

Math follows tunix `tunix/rl/algo_core.py` (GAE scan, masked whitening, grpo/drgrpo/rloo)
and verl (reward at the last response token, "KL in the reward").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

GROUP_ESTIMATORS = ("grpo", "drgrpo", "rloo")


def _as_bool_mask(mask: jax.Array, like: jax.Array, name: str = "mask") -> jax.Array:
  mask = jnp.asarray(mask)
  if mask.shape != like.shape:
    raise ValueError(f"{name} has shape {mask.shape}, expected {like.shape}")
  return mask.astype(bool)


def _float(x: jax.Array) -> jax.Array:
  x = jnp.asarray(x)
  return x if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype.itemsize >= 4 else x.astype(jnp.float32)


# ----------------------------------------------------------------------------------------------
# Masked statistics
# ----------------------------------------------------------------------------------------------


def masked_sum(x: jax.Array, mask: jax.Array, axis=None, keepdims: bool = False) -> jax.Array:
  """Sum of `x` over `mask`; masked entries are dropped with `where` (NaN padding is harmless)."""
  return jnp.sum(jnp.where(mask, x, 0), axis=axis, keepdims=keepdims)


def masked_mean(x: jax.Array, mask: jax.Array, axis=None, keepdims: bool = False) -> jax.Array:
  """Mean of `x` over `mask`; 0 where nothing is selected (count clamped at 1)."""
  mask = jnp.asarray(mask).astype(bool)
  n = jnp.sum(mask, axis=axis, keepdims=keepdims).astype(_float(x).dtype)
  return masked_sum(_float(x), mask, axis, keepdims) / jnp.maximum(n, 1.0)


def masked_var(x: jax.Array, mask: jax.Array, *, unbiased: bool = True) -> jax.Array:
  """Variance of `x` over all masked entries (Bessel-corrected by default, as tunix/verl)."""
  x = _float(x)
  mask = _as_bool_mask(mask, x)
  n = jnp.sum(mask).astype(x.dtype)
  mean = masked_mean(x, mask)
  sq = masked_sum(jnp.square(x - mean), mask)
  denom = jnp.maximum(n - 1.0, 1.0) if unbiased else jnp.maximum(n, 1.0)
  return sq / denom


def masked_whiten(
    x: jax.Array, mask: jax.Array, *, shift_mean: bool = True, eps: float = 1e-8
) -> jax.Array:
  """Normalise `x` to zero mean / unit variance over the masked entries (whole batch).

  Masked-out entries are set to 0. With `shift_mean=False` the mean is added back (verl's
  option for whitening rewards rather than advantages).
  """
  x = _float(x)
  mask = _as_bool_mask(mask, x)
  mean = masked_mean(x, mask)
  var = masked_var(x, mask)
  out = (x - mean) * lax.rsqrt(var + eps)
  if not shift_mean:
    out = out + mean
  return jnp.where(mask, out, 0.0)


# ----------------------------------------------------------------------------------------------
# PPO: reward placement and GAE
# ----------------------------------------------------------------------------------------------


def last_valid_index(mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Index of the last True position in each row of a `[B, T]` mask, and whether one exists.

  Works for non-contiguous masks (multi-turn transcripts with env tokens in between).
  Rows with no valid token return index 0 and `has_any=False`.
  """
  mask = jnp.asarray(mask).astype(bool)
  if mask.ndim != 2:
    raise ValueError(f"mask must be [B, T], got shape {mask.shape}")
  t = mask.shape[-1]
  last = (t - 1) - jnp.argmax(mask[:, ::-1], axis=-1)
  has_any = jnp.any(mask, axis=-1)
  return jnp.where(has_any, last, 0), has_any


def place_outcome_reward(
    scores: jax.Array,
    mask: jax.Array,
    *,
    kl: jax.Array | None = None,
    beta: float | jax.Array = 0.0,
) -> jax.Array:
  """Per-token rewards `[B, T]` from one scalar outcome reward per sequence.

  `scores[b]` goes to the last response token of row b (a row with no response token gets
  nothing). With `kl` (`[B, T]`, e.g. `kl_penalty(old_logp, ref_logp)`), `beta * kl` is
  subtracted on every response token: PPO's "KL in the reward". Padding stays exactly 0.
  """
  scores = _float(scores)
  mask = jnp.asarray(mask).astype(bool)
  if scores.shape != mask.shape[:1]:
    raise ValueError(f"scores has shape {scores.shape}, expected ({mask.shape[0]},) to match mask {mask.shape}")
  last, has_any = last_valid_index(mask)
  at_last = (jnp.arange(mask.shape[-1])[None, :] == last[:, None]) & has_any[:, None]
  rewards = jnp.where(at_last, scores[:, None], 0.0)
  if kl is not None:
    kl = _float(kl)
    if kl.shape != mask.shape:
      raise ValueError(f"kl has shape {kl.shape}, expected {mask.shape}")
    rewards = rewards - beta * jnp.where(mask, kl, 0.0)
  return rewards


def gae_advantages(
    rewards: jax.Array,
    values: jax.Array,
    mask: jax.Array,
    *,
    gamma: float | jax.Array = 1.0,
    lam: float | jax.Array = 0.95,
) -> tuple[jax.Array, jax.Array]:
  """Generalised Advantage Estimation by a reverse `lax.scan` over time.

  For the valid tokens t_1 < ... < t_n of a row (padding in between is skipped, so the token
  after an env segment bootstraps from the next *valid* value):
    delta_k = r[t_k] + gamma * V[t_{k+1}] - V[t_k]      (V[t_{n+1}] = 0: the episode ends)
    A_k     = delta_k + gamma * lam * A_{k+1}
  Returns `(advantages, returns)`, both `[B, T]`, `returns = A + V`, 0 at masked positions.
  No whitening here: call `masked_whiten(advantages, mask)` if wanted.
  """
  rewards = _float(rewards)
  values = _float(values)
  if rewards.ndim != 2 or values.shape != rewards.shape:
    raise ValueError(f"rewards {rewards.shape} and values {values.shape} must both be [B, T]")
  mask = _as_bool_mask(mask, rewards)
  dtype = jnp.result_type(rewards, values)
  # Sanitise padding so garbage there can never leak into the carry or a gradient.
  r = jnp.where(mask, rewards, 0.0).astype(dtype)
  v = jnp.where(mask, values, 0.0).astype(dtype)

  def step(carry, xs):
    gae_next, v_next = carry
    r_t, v_t, m_t = xs
    delta = r_t + gamma * v_next - v_t
    gae_t = delta + gamma * lam * gae_next
    carry = (jnp.where(m_t, gae_t, gae_next), jnp.where(m_t, v_t, v_next))
    return carry, jnp.where(m_t, gae_t, 0.0)

  b = rewards.shape[0]
  init = (jnp.zeros((b,), dtype), jnp.zeros((b,), dtype))
  _, adv_tb = lax.scan(step, init, (r.T, v.T, mask.T), reverse=True)
  adv = adv_tb.T
  returns = jnp.where(mask, adv + v, 0.0)
  return adv, returns


# ----------------------------------------------------------------------------------------------
# GRPO family: group-relative advantages
# ----------------------------------------------------------------------------------------------


def group_advantages(
    rewards: jax.Array,
    *,
    estimator: str = "grpo",
    group_size: int | None = None,
    eps: float = 1e-6,
) -> jax.Array:
  """Outcome advantages relative to the other samples of the same prompt.

  rewards: `[N, G]`, or flat `[N * G]` ordered group-major (all G samples of prompt 0 first);
    the flat form needs `group_size` (static). The output has the shape of `rewards`.
  estimator (static):
    "grpo":   (r - mean_g) / (std_g + eps), sample std (ddof=1) as tunix and verl;
    "drgrpo": r - mean_g (Dr.GRPO: no std scaling);
    "rloo":   r_i - mean_{j != i} r_j (leave-one-out baseline).
  A group whose rewards are all equal (including G = 1) gets exactly 0, never NaN: float
  rounding of the mean would otherwise leave tiny non-zero advantages that the std division
  blows up.
  """
  if estimator not in GROUP_ESTIMATORS:
    raise ValueError(f"estimator={estimator!r}; expected one of {GROUP_ESTIMATORS}")
  r = _float(rewards)
  if r.ndim == 1:
    if group_size is None:
      raise ValueError("flat rewards [N*G] need group_size")
    if group_size < 1 or r.shape[0] % group_size:
      raise ValueError(f"rewards of length {r.shape[0]} cannot be split into groups of group_size={group_size}")
    g = r.reshape(-1, group_size)
  elif r.ndim == 2:
    if group_size is not None and group_size != r.shape[1]:
      raise ValueError(f"group_size={group_size} but rewards have shape {r.shape} ([N, G])")
    g = r
  else:
    raise ValueError(f"rewards must be [N*G] or [N, G], got shape {r.shape}")

  n_per = g.shape[1]
  mean = jnp.mean(g, axis=1, keepdims=True)
  centered = g - mean
  if estimator == "grpo":
    std = jnp.sqrt(jnp.sum(jnp.square(centered), axis=1, keepdims=True) / max(n_per - 1, 1))
    adv = centered / (std + eps)
  elif estimator == "drgrpo":
    adv = centered
  else:  # rloo
    if n_per < 2:
      adv = jnp.zeros_like(g)
    else:
      loo_mean = (jnp.sum(g, axis=1, keepdims=True) - g) / (n_per - 1)
      adv = g - loo_mean
  degenerate = jnp.max(g, axis=1, keepdims=True) == jnp.min(g, axis=1, keepdims=True)
  adv = jnp.where(degenerate, 0.0, adv)
  return adv.reshape(r.shape)


def broadcast_sequence_advantages(advantages: jax.Array, mask: jax.Array) -> jax.Array:
  """`[B]` sequence advantages -> `[B, T]` per-token advantages, 0 on padding."""
  advantages = _float(advantages)
  mask = jnp.asarray(mask).astype(bool)
  if advantages.shape != mask.shape[:1]:
    raise ValueError(f"advantages {advantages.shape} do not match mask {mask.shape}")
  return jnp.where(mask, advantages[:, None], 0.0)
