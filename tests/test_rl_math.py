"""RL math (memr1_jax.rl) against independent float64 numpy references written with plain loops.

Nothing in this file calls the JAX code to build an expected value: every reference below is
re-derived from the textbook definitions (GAE recursion, PPO/dual clip, k1/k2/k3, the four
aggregation modes, grpo/drgrpo/rloo).
"""

import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memr1_jax import rl

TOL = dict(rtol=1e-5, atol=1e-5)
SEEDS = (0, 1, 2)
B, T = 6, 11
MODES = ("token-mean", "sequence-mean-token-mean", "sequence-mean-token-sum", "seq-mean-token-sum-norm")


# Test-only: these graphs are tiny, so skip XLA:CPU's expensive LLVM passes (compile ~35% faster).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@functools.lru_cache(maxsize=None)
def J(_fn, **static):
  """`_fn` with Python scalars/strings bound as constants (as an update step's config would).

  Run eagerly: across this many small configurations XLA:CPU's per-op cache makes eager
  cheaper than one compile per configuration. Jitting is covered by the jit tests below.
  """
  return functools.partial(_fn, **static)


def all_modes(*args, loss_fn, **kwargs):
  """`{mode: loss_fn(*args, agg_mode=mode, **kwargs)}` for every mode (traced inside one jit)."""
  return {mode: loss_fn(*args, agg_mode=mode, **kwargs) for mode in MODES}


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def rand_mask(rng, b=B, t=T):
  """Row 0 full, row 1 empty, the rest a random-length prefix, some with a hole (env tokens)."""
  m = np.zeros((b, t), dtype=bool)
  m[0] = True
  for i in range(2, b):
    n = rng.integers(1, t + 1)
    m[i, :n] = True
    if n >= 4 and rng.random() < 0.7:
      lo = rng.integers(1, n - 2)
      m[i, lo:lo + rng.integers(1, 3)] = False
  return m


def with_garbage(x, mask, value):
  x = np.array(x, dtype=np.float32)
  x[~mask] = value
  return x


# ----------------------------------------------------------------------------------------------
# Numpy references (plain loops, float64)
# ----------------------------------------------------------------------------------------------


def np_gae(r, v, m, gamma, lam):
  b, t = r.shape
  adv = np.zeros((b, t))
  ret = np.zeros((b, t))
  for i in range(b):
    idx = [j for j in range(t) if m[i, j]]
    gae = 0.0
    for k in reversed(range(len(idx))):
      j = idx[k]
      v_next = float(v[i, idx[k + 1]]) if k + 1 < len(idx) else 0.0
      delta = float(r[i, j]) + gamma * v_next - float(v[i, j])
      gae = delta + gamma * lam * gae
      adv[i, j] = gae
      ret[i, j] = gae + float(v[i, j])
  return adv, ret


def np_whiten(x, m):
  vals = [float(x[i, j]) for i in range(x.shape[0]) for j in range(x.shape[1]) if m[i, j]]
  n = len(vals)
  mean = sum(vals) / n
  var = sum((a - mean) ** 2 for a in vals) / (n - 1)
  out = np.zeros(x.shape)
  for i in range(x.shape[0]):
    for j in range(x.shape[1]):
      if m[i, j]:
        out[i, j] = (x[i, j] - mean) / math.sqrt(var + 1e-8)
  return out


def np_place(scores, m, kl=None, beta=0.0):
  out = np.zeros(m.shape)
  for i in range(m.shape[0]):
    valid = [j for j in range(m.shape[1]) if m[i, j]]
    if valid:
      out[i, valid[-1]] += scores[i]
    if kl is not None:
      for j in valid:
        out[i, j] -= beta * kl[i, j]
  return out


def np_group_adv(groups, estimator, eps=1e-6):
  out = np.zeros(groups.shape)
  for n, g in enumerate(groups):
    g = [float(a) for a in g]
    size = len(g)
    if max(g) == min(g):
      continue
    mean = sum(g) / size
    for i, r in enumerate(g):
      if estimator == "grpo":
        std = math.sqrt(sum((a - mean) ** 2 for a in g) / (size - 1))
        out[n, i] = (r - mean) / (std + eps)
      elif estimator == "drgrpo":
        out[n, i] = r - mean
      else:
        others = [a for k, a in enumerate(g) if k != i]
        out[n, i] = r - sum(others) / len(others)
  return out


def np_ppo_token(lp, olp, a, el, eh, c, clamp=20.0):
  d = min(max(lp - olp, -clamp), clamp)
  r = math.exp(d)
  l1 = -a * r
  l2 = -a * min(max(r, 1 - el), 1 + eh)
  loss = max(l1, l2)
  dual = False
  if c is not None and a < 0:
    l3 = -a * c
    dual = loss > l3
    loss = min(loss, l3)
  return loss, float(l2 > l1), float(dual), d, r


def np_kl_token(lp, ref, kind, log_ratio_clamp=None, kl_clamp=None):
  d = lp - ref
  if log_ratio_clamp is not None:
    d = min(max(d, -log_ratio_clamp), log_ratio_clamp)
  if kind == "k1":
    k = d
  elif kind == "k2":
    k = 0.5 * d * d
  else:
    k = math.exp(ref - lp if log_ratio_clamp is None else -d) - (-d) - 1
  if kl_clamp is not None:
    k = min(max(k, -kl_clamp), kl_clamp)
  return k


def np_aggregate(x, m, mode, norm_len=None):
  b, t = x.shape
  s, c = 0.0, 0.0
  for i in range(b):
    vals = [float(x[i, j]) for j in range(t) if m[i, j]]
    if mode == "token-mean":
      s += sum(vals)
      c += len(vals)
      continue
    if not vals:
      continue
    c += 1
    if mode == "sequence-mean-token-mean":
      s += sum(vals) / len(vals)
    elif mode == "sequence-mean-token-sum":
      s += sum(vals)
    else:
      s += sum(vals) / (t if norm_len is None else norm_len)
  return s, c


def np_token_mean(x, m):
  return np_aggregate(x, m, "token-mean")


def np_logsoftmax_row(row):
  mx = max(row)
  lse = mx + math.log(sum(math.exp(a - mx) for a in row))
  return [a - lse for a in row]


def np_logp_entropy(logits, targets, temperature=1.0):
  b, t, _ = logits.shape
  logp = np.zeros((b, t))
  ent = np.zeros((b, t))
  for i in range(b):
    for j in range(t):
      ls = np_logsoftmax_row([float(a) / temperature for a in logits[i, j]])
      logp[i, j] = ls[int(targets[i, j])]
      ent[i, j] = -sum(math.exp(a) * a for a in ls)
  return logp, ent


def check_weighted(w, ref):
  np.testing.assert_allclose(float(w.sum), ref[0], **TOL)
  np.testing.assert_allclose(float(w.count), ref[1], **TOL)


# ----------------------------------------------------------------------------------------------
# Advantages
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_gae_matches_numpy_with_masks_and_garbage_padding(seed):
  rng = np.random.default_rng(seed)
  m = rand_mask(rng)
  r = with_garbage(rng.normal(size=(B, T)), m, 1e30)
  v = with_garbage(rng.normal(size=(B, T)), m, np.nan)
  gamma, lam = float(rng.uniform(0.8, 1.0)), float(rng.uniform(0.5, 1.0))
  adv, ret = J(rl.gae_advantages)(jnp.asarray(r), jnp.asarray(v), jnp.asarray(m), gamma=jnp.float32(gamma),
                                  lam=jnp.float32(lam))
  ref_adv, ref_ret = np_gae(r, v, m, gamma, lam)
  np.testing.assert_allclose(np.asarray(adv), ref_adv, **TOL)
  np.testing.assert_allclose(np.asarray(ret), ref_ret, **TOL)
  assert np.all(np.asarray(adv)[~m] == 0) and np.all(np.asarray(ret)[~m] == 0)


def test_gae_gamma_lam_one_is_reward_to_go_minus_value():
  # With gamma = lam = 1 the advantage telescopes to (sum of future rewards) - V(t).
  rng = np.random.default_rng(7)
  m = rand_mask(rng)
  r, v = rng.normal(size=(B, T)), rng.normal(size=(B, T))
  adv, _ = J(rl.gae_advantages, gamma=1.0, lam=1.0)(jnp.asarray(r, jnp.float32), jnp.asarray(v, jnp.float32), jnp.asarray(m))
  for i in range(B):
    for j in range(T):
      if m[i, j]:
        togo = sum(r[i, k] for k in range(j, T) if m[i, k])
        assert abs(float(adv[i, j]) - (togo - v[i, j])) < 1e-4


@pytest.mark.parametrize("seed", SEEDS)
def test_masked_whiten_matches_numpy(seed):
  rng = np.random.default_rng(seed)
  m = rand_mask(rng)
  x = with_garbage(rng.normal(2.0, 3.0, size=(B, T)), m, np.inf)
  out = J(rl.masked_whiten)(jnp.asarray(x), jnp.asarray(m))
  np.testing.assert_allclose(np.asarray(out), np_whiten(x, m), **TOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_place_outcome_reward_matches_numpy(seed):
  rng = np.random.default_rng(seed)
  m = rand_mask(rng)
  scores = rng.normal(size=(B,)).astype(np.float32)
  kl = with_garbage(rng.normal(size=(B, T)), m, np.nan)
  np.testing.assert_allclose(np.asarray(J(rl.place_outcome_reward)(scores, jnp.asarray(m))), np_place(scores, m), **TOL)
  got = J(rl.place_outcome_reward, beta=0.05)(scores, jnp.asarray(m), kl=jnp.asarray(kl))
  np.testing.assert_allclose(np.asarray(got), np_place(scores, m, kl, 0.05), **TOL)


@pytest.mark.parametrize("estimator", ["grpo", "drgrpo", "rloo"])
@pytest.mark.parametrize("seed", SEEDS)
def test_group_advantages_match_numpy(estimator, seed):
  rng = np.random.default_rng(seed)
  for g in (2, 5):
    groups = rng.normal(size=(4, g)).astype(np.float32)
    groups[1] = (rng.random(g) < 0.5).astype(np.float32)  # EM-style 0/1 rewards
    groups[1, 0], groups[1, 1] = 0.0, 1.0
    ref = np_group_adv(groups, estimator)
    got_2d = J(rl.group_advantages, estimator=estimator)(jnp.asarray(groups))
    got_flat = J(rl.group_advantages, estimator=estimator, group_size=g)(jnp.asarray(groups.reshape(-1)))
    np.testing.assert_allclose(np.asarray(got_2d), ref, **TOL)
    np.testing.assert_allclose(np.asarray(got_flat), ref.reshape(-1), **TOL)
    assert got_flat.shape == (4 * g,)


@pytest.mark.parametrize("estimator", ["grpo", "drgrpo", "rloo"])
@pytest.mark.parametrize("g", [1, 2, 3, 7])
def test_equal_rewards_give_exact_zero(estimator, g):
  # 0.1 and 1/3 are not exactly representable, so a naive r - mean is a few ulp off zero.
  groups = np.array([[0.1] * g, [1 / 3] * g, [0.0] * g, [7.3] * g], dtype=np.float32)
  mixed = np.concatenate([groups, np.linspace(-1, 1, g, dtype=np.float32)[None]], axis=0)
  out = np.asarray(J(rl.group_advantages, estimator=estimator, group_size=g)(jnp.asarray(mixed.reshape(-1))))
  out = out.reshape(mixed.shape)
  assert np.all(np.isfinite(out))
  assert np.all(out[:4] == 0.0)
  if g > 1:
    assert np.any(out[4] != 0.0)


def test_broadcast_sequence_advantages():
  m = np.array([[1, 1, 0], [0, 1, 1]], dtype=bool)
  out = rl.broadcast_sequence_advantages(jnp.array([2.0, -1.0]), jnp.asarray(m))
  np.testing.assert_array_equal(np.asarray(out), [[2, 2, 0], [0, -1, -1]])


# ----------------------------------------------------------------------------------------------
# Aggregation and KL
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", SEEDS)
def test_aggregation_matches_numpy(mode, seed):
  rng = np.random.default_rng(seed)
  m = rand_mask(rng)
  x = with_garbage(rng.normal(size=(B, T)), m, np.nan)
  w = J(rl.aggregate, mode=mode)(jnp.asarray(x), jnp.asarray(m))
  ref = np_aggregate(x, m, mode)
  check_weighted(w, ref)
  np.testing.assert_allclose(float(w.value()), ref[0] / ref[1], **TOL)
  if mode == "seq-mean-token-sum-norm":
    check_weighted(J(rl.aggregate, mode=mode, norm_len=64)(jnp.asarray(x), jnp.asarray(m)), np_aggregate(x, m, mode, 64))


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
@pytest.mark.parametrize("clamps", [(None, None), (1.0, None), (None, 0.5), (2.0, 1.0)])
@pytest.mark.parametrize("seed", SEEDS)
def test_kl_estimators_match_numpy(kind, clamps, seed):
  rng = np.random.default_rng(seed)
  lp = rng.normal(-2.0, 1.5, size=(B, T)).astype(np.float32)
  ref = rng.normal(-2.0, 1.5, size=(B, T)).astype(np.float32)
  got = np.asarray(J(rl.kl_penalty, kind=kind, log_ratio_clamp=clamps[0], kl_clamp=clamps[1])(jnp.asarray(lp), jnp.asarray(ref)))
  want = np.array([[np_kl_token(float(lp[i, j]), float(ref[i, j]), kind, *clamps) for j in range(T)] for i in range(B)])
  np.testing.assert_allclose(got, want, **TOL)


def test_kl_aliases_and_k3_nonnegative():
  lp, ref = jnp.array([[-1.0, -3.0, 0.0]]), jnp.array([[-2.0, -0.5, 0.0]])
  for alias, kind in (("kl", "k1"), ("mse_kl", "k2"), ("low_var_kl", "k3")):
    np.testing.assert_array_equal(np.asarray(rl.kl_penalty(lp, ref, alias)), np.asarray(rl.kl_penalty(lp, ref, kind)))
  assert np.all(np.asarray(rl.kl_penalty(lp, ref, "k3")) >= 0)


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------

PPO_CONFIGS = [(0.2, None, None), (0.2, 0.28, None), (0.1, 0.3, 3.0), (0.2, 0.2, 1.5)]


def policy_inputs(rng):
  m = rand_mask(rng)
  lp = rng.normal(-2.0, 1.0, size=(B, T))
  # Mostly small policy drift, plus some tokens whose ratio exceeds e^1.5 so the dual clip fires.
  ii, jj = np.meshgrid(np.arange(B), np.arange(T), indexing="ij")
  old = lp + rng.normal(0.0, 0.4, size=(B, T)) - 1.5 * ((ii + jj) % 3 == 0)
  adv = rng.normal(size=(B, T))
  adv[(ii + jj) % 6 == 0] = -np.abs(adv[(ii + jj) % 6 == 0])
  ref = lp + rng.normal(0.0, 0.5, size=(B, T))
  ent = rng.uniform(0.0, 3.0, size=(B, T))
  f = lambda a, fill: with_garbage(a, m, fill)
  return m, f(lp, np.nan), f(old, np.inf), f(adv, 1e30), f(ref, -np.inf), f(ent, np.nan)


@pytest.mark.parametrize("cfg", PPO_CONFIGS)
@pytest.mark.parametrize("seed", SEEDS)
def test_ppo_clip_loss_matches_numpy(cfg, seed):
  el, eh, c = cfg
  rng = np.random.default_rng(seed)
  m, lp, old, adv, _, _ = policy_inputs(rng)
  eh_eff = el if eh is None else eh
  per_tok = np.zeros((B, T))
  clip = np.zeros((B, T))
  dual = np.zeros((B, T))
  kl1 = np.zeros((B, T))
  k3 = np.zeros((B, T))
  for i in range(B):
    for j in range(T):
      if m[i, j]:
        l, cl, du, d, r = np_ppo_token(float(lp[i, j]), float(old[i, j]), float(adv[i, j]), el, eh_eff, c)
        per_tok[i, j], clip[i, j], dual[i, j], kl1[i, j], k3[i, j] = l, cl, du, -d, r - 1 - d
  assert clip[m].mean() > 0.05 and (c is None or dual[m].sum() >= 1)  # the clips really fire

  # Per-token function on clean inputs.
  cfg = dict(epsilon_low=el, epsilon_high=eh, clip_ratio_c=c)
  got_tok, stats = J(rl.ppo_clip_per_token, **cfg)(
      jnp.asarray(np.where(m, lp, 0)), jnp.asarray(np.where(m, old, 0)), jnp.asarray(np.where(m, adv, 0)))
  np.testing.assert_allclose(np.where(m, np.asarray(got_tok), 0), per_tok, **TOL)
  by_mode = J(all_modes, loss_fn=rl.ppo_policy_loss, **cfg)(jnp.asarray(lp), jnp.asarray(old), jnp.asarray(adv), jnp.asarray(m))
  for mode in MODES:
    loss, met = by_mode[mode]
    check_weighted(loss, np_aggregate(per_tok, m, mode))
    check_weighted(met["pg_loss"], np_aggregate(per_tok, m, mode))
    check_weighted(met["pg_clipfrac"], np_token_mean(clip, m))
    check_weighted(met["pg_clipfrac_lower"], np_token_mean(dual, m))
    check_weighted(met["ppo_kl"], np_token_mean(kl1, m))
    check_weighted(met["approx_kl_k3"], np_token_mean(k3, m))


def test_ppo_dual_clip_bounds_negative_advantage_loss():
  # A huge ratio with A < 0: the standard clip leaves -A * r (unbounded); dual clip caps it at -A * c.
  lp, old, adv = jnp.array([[3.0, 3.0]]), jnp.array([[0.0, 0.0]]), jnp.array([[-1.0, 1.0]])
  plain, _ = J(rl.ppo_clip_per_token, epsilon_low=0.2)(lp, old, adv)
  dual, st = J(rl.ppo_clip_per_token, epsilon_low=0.2, clip_ratio_c=3.0)(lp, old, adv)
  np.testing.assert_allclose(np.asarray(plain), [[math.exp(3.0), -1.2]], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(dual), [[3.0, -1.2]], rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(st["dual_clipped"]), [[1.0, 0.0]])


def test_log_ratio_clamp_keeps_loss_finite():
  loss, _ = J(rl.ppo_clip_per_token)(jnp.array([[0.0]]), jnp.array([[-500.0]]), jnp.array([[-1.0]]))
  assert np.isfinite(float(loss[0, 0])) and float(loss[0, 0]) == pytest.approx(math.exp(20.0), rel=1e-5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", SEEDS)
def test_grpo_loss_matches_numpy(mode, seed):
  rng = np.random.default_rng(seed)
  m, lp, old, _, ref, ent = policy_inputs(rng)
  seq_adv = rng.normal(size=(B,)).astype(np.float32)  # GRPO: one advantage per sequence
  beta, ent_coef, el, eh, c = 0.04, 0.01, 0.2, 0.28, 3.0
  per_tok = np.zeros((B, T))
  kl = np.zeros((B, T))
  for i in range(B):
    for j in range(T):
      if m[i, j]:
        pg = np_ppo_token(float(lp[i, j]), float(old[i, j]), float(seq_adv[i]), el, eh, c)[0]
        kl[i, j] = np_kl_token(float(lp[i, j]), float(ref[i, j]), "k3", None, 10.0)
        per_tok[i, j] = pg + beta * kl[i, j] - ent_coef * ent[i, j]
  loss, met = J(rl.grpo_loss, beta=beta, kl_clamp=10.0, epsilon_low=el, epsilon_high=eh, clip_ratio_c=c,
                entropy_coef=ent_coef, agg_mode=mode)(
                    jnp.asarray(lp), jnp.asarray(old), jnp.asarray(ref), jnp.asarray(seq_adv), jnp.asarray(m),
                    entropy=jnp.asarray(ent))
  check_weighted(loss, np_aggregate(per_tok, m, mode))
  check_weighted(met["kl"], np_token_mean(kl, m))
  check_weighted(met["kl_loss"], np_aggregate(kl, m, mode))
  check_weighted(met["entropy"], np_token_mean(ent, m))


def test_grpo_on_policy_without_old_logp_has_unit_ratio_and_policy_gradient():
  rng = np.random.default_rng(3)
  m = rand_mask(rng)
  lp = jnp.asarray(rng.normal(-1, 0.5, size=(B, T)), jnp.float32)
  adv = jnp.asarray(rng.normal(size=(B,)), jnp.float32)
  f = lambda x: rl.grpo_loss(x, None, None, adv, jnp.asarray(m), beta=0.0)[0].sum
  loss, met = J(rl.grpo_loss, beta=0.0)(lp, None, None, adv, jnp.asarray(m))
  assert float(met["ratio_mean"].value()) == 1.0
  # d/dlogp of -A * exp(logp - sg(logp)) is -A on every valid token.
  g = np.asarray(jax.jit(jax.grad(f))(lp))
  np.testing.assert_allclose(g, np.where(m, -np.asarray(adv)[:, None], 0.0), rtol=1e-6)


@pytest.mark.parametrize("clip_range", [0.2, None])
@pytest.mark.parametrize("seed", SEEDS)
def test_value_loss_matches_numpy(clip_range, seed):
  rng = np.random.default_rng(seed)
  m = rand_mask(rng)
  old = rng.normal(size=(B, T))
  vals = with_garbage(old + rng.normal(0, 0.4, size=(B, T)), m, np.nan)
  rets = with_garbage(rng.normal(size=(B, T)), m, np.inf)
  old = with_garbage(old, m, -1e30)
  per_tok = np.zeros((B, T))
  clipped = np.zeros((B, T))
  for i in range(B):
    for j in range(T):
      if m[i, j]:
        v, vo, R = float(vals[i, j]), float(old[i, j]), float(rets[i, j])
        sq = (v - R) ** 2
        if clip_range is None:
          per_tok[i, j] = 0.5 * sq
        else:
          vc = vo + min(max(v - vo, -clip_range), clip_range)
          per_tok[i, j] = 0.5 * max(sq, (vc - R) ** 2)
          clipped[i, j] = float((vc - R) ** 2 > sq)
  if clip_range is not None:
    assert clipped[m].sum() > 0
  by_mode = J(all_modes, loss_fn=rl.value_loss, clip_range=clip_range)(
      jnp.asarray(vals), jnp.asarray(old), jnp.asarray(rets), jnp.asarray(m))
  for mode in MODES:
    loss, met = by_mode[mode]
    check_weighted(loss, np_aggregate(per_tok, m, mode))
  check_weighted(met["vf_clipfrac"], np_token_mean(clipped, m))
  check_weighted(met["vpred_mean"], np_token_mean(np.where(m, vals, 0), m))


@pytest.mark.parametrize("seed", SEEDS)
def test_logprobs_and_entropy_match_numpy(seed):
  rng = np.random.default_rng(seed)
  logits = rng.normal(0, 3.0, size=(3, 5, 17)).astype(np.float32)
  targets = rng.integers(0, 17, size=(3, 5))
  for temp in (1.0, 0.7):
    ref_lp, ref_ent = np_logp_entropy(logits, targets, temp)
    lp, ent = J(rl.token_logprobs, temperature=temp, return_entropy=True)(jnp.asarray(logits), jnp.asarray(targets))
    np.testing.assert_allclose(np.asarray(lp), ref_lp, **TOL)
    np.testing.assert_allclose(np.asarray(ent), ref_ent, **TOL)
    np.testing.assert_allclose(np.asarray(J(rl.entropy_from_logits, temperature=temp)(jnp.asarray(logits))), ref_ent, **TOL)
  m = rand_mask(rng, 3, 5)
  ref_lp, ref_ent = np_logp_entropy(logits, targets)
  from_logits = J(all_modes, loss_fn=rl.mean_entropy)(jnp.asarray(m), logits=jnp.asarray(logits))
  given = J(all_modes, loss_fn=rl.mean_entropy)(jnp.asarray(m), entropy=jnp.asarray(ref_ent, jnp.float32))
  for mode in MODES:
    check_weighted(from_logits[mode], np_aggregate(ref_ent, m, mode))
    check_weighted(given[mode], np_aggregate(ref_ent, m, mode))


def test_logprobs_are_float32_for_bf16_logits():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(0, 3, size=(2, 4, 50)), jnp.bfloat16)
  targets = jnp.asarray(rng.integers(0, 50, size=(2, 4)))
  lp, ent = J(rl.token_logprobs, return_entropy=True)(logits, targets)
  assert lp.dtype == jnp.float32 and ent.dtype == jnp.float32
  # Same as computing from the (exactly representable) bf16 values upcast to f32 first.
  lp32 = J(rl.token_logprobs)(logits.astype(jnp.float32), targets)
  np.testing.assert_array_equal(np.asarray(lp), np.asarray(lp32))


# ----------------------------------------------------------------------------------------------
# Gradients: padding, micro-batches, chunked log-probs
# ----------------------------------------------------------------------------------------------


def test_padded_tokens_get_exactly_zero_gradient():
  rng = np.random.default_rng(11)
  m, lp, old, adv, ref, ent = policy_inputs(rng)  # padding holds NaN / inf / 1e30
  vals = with_garbage(rng.normal(size=(B, T)), m, np.nan)
  logits = with_garbage(rng.normal(size=(B, T, 7)), np.broadcast_to(m[..., None], (B, T, 7)), np.nan)
  old_vals = with_garbage(rng.normal(size=(B, T)), m, -np.inf)
  consts = [jnp.asarray(a) for a in (old, ref, adv, old_vals, m)]

  @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
  def grads(lp_, ent_, vals_, logits_):
    old_, ref_, adv_, old_vals_, m_ = consts
    out = {}
    for mode in MODES:
      pol = lambda a, e: rl.grpo_loss(a, old_, ref_, adv_, m_, beta=0.1, clip_ratio_c=3.0, entropy=e,
                                      entropy_coef=0.01, agg_mode=mode)[0].value()
      val = lambda v: rl.value_loss(v, old_vals_, ref_, m_, agg_mode=mode)[0].value()
      ent_loss = lambda z: rl.mean_entropy(m_, logits=z, agg_mode=mode).value()
      out[mode] = (pol(lp_, ent_), *jax.grad(pol, argnums=(0, 1))(lp_, ent_), jax.grad(val)(vals_),
                   jax.grad(ent_loss)(logits_))
    return out

  for mode, (loss, *gs) in grads(*(jnp.asarray(a) for a in (lp, ent, vals, logits))).items():
    assert np.isfinite(float(loss)), mode
    for g in map(np.asarray, gs):
      assert np.all(np.isfinite(g)), mode
      assert np.all(g[~m] == 0.0), mode
      assert np.count_nonzero(g[m]) > 0, mode


def _micro_problem(seed):
  rng = np.random.default_rng(seed)
  d, v = 4, 9
  m = rand_mask(rng)
  x = jnp.asarray(rng.normal(size=(B, T, d)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, v, size=(B, T)))
  w = jnp.asarray(rng.normal(0, 0.5, size=(d, v)), jnp.float32)
  old = np.asarray(J(rl.token_logprobs)(x @ w, targets)) + rng.normal(0, 0.3, size=(B, T))
  ref = old + rng.normal(0, 0.3, size=(B, T))
  adv = rng.normal(size=(B,))
  batch = dict(x=x, targets=targets, mask=jnp.asarray(m), old=jnp.asarray(old, jnp.float32),
               ref=jnp.asarray(ref, jnp.float32), adv=jnp.asarray(adv, jnp.float32))
  return w, batch


def _grpo_weighted(w, batch, mode):
  logp, ent = rl.token_logprobs(batch["x"] @ w, batch["targets"], return_entropy=True)
  return rl.grpo_loss(logp, batch["old"], batch["ref"], batch["adv"], batch["mask"], beta=0.05,
                      epsilon_high=0.28, clip_ratio_c=3.0, entropy=ent, entropy_coef=0.01, agg_mode=mode)


@functools.partial(jax.jit, static_argnames=("full",), compiler_options=FAST_COMPILE)
def _all_modes_loss_and_grad(w, batch, full):
  """Per mode: (Weighted loss, metrics, gradient). The full batch differentiates its loss value
  sum/count; a micro-batch differentiates only its sum (what an accumulating update step does)."""
  out = {}
  for mode in MODES:
    def objective(p, mode=mode):
      loss, metrics = _grpo_weighted(p, batch, mode)
      return (loss.value() if full else loss.sum), (loss, metrics)
    (_, (loss, metrics)), g = jax.value_and_grad(objective, has_aux=True)(w)
    out[mode] = (loss, metrics, g)
  return out


def test_microbatch_accumulation_is_exact_for_every_mode():
  w, batch = _micro_problem(5)
  full = _all_modes_loss_and_grad(w, batch, full=True)
  # Micro-batches with different token counts; the first holds the empty row.
  parts = [_all_modes_loss_and_grad(w, {k: v[lo:hi] for k, v in batch.items()}, full=False)
           for lo, hi in ((0, 3), (3, 6))]
  for mode in MODES:
    full_loss, full_metrics, full_grad = full[mode]
    acc_loss, acc_metrics, acc_grad = parts[0][mode]
    for p in parts[1:]:
      acc_loss = rl.accumulate(acc_loss, p[mode][0])
      acc_metrics = rl.accumulate(acc_metrics, p[mode][1])
      acc_grad = acc_grad + p[mode][2]
    np.testing.assert_allclose(float(acc_loss.value()), float(full_loss.value()), err_msg=mode, **TOL)
    np.testing.assert_allclose(float(acc_loss.count), float(full_loss.count), err_msg=mode, **TOL)
    np.testing.assert_allclose(np.asarray(acc_grad / acc_loss.count), np.asarray(full_grad), err_msg=mode, **TOL)
    fin_acc, fin_full = rl.finalize(acc_metrics), rl.finalize(full_metrics)
    assert fin_acc.keys() == fin_full.keys()
    for k in fin_full:
      np.testing.assert_allclose(float(fin_acc[k]), float(fin_full[k]), err_msg=f"{mode}/{k}", **TOL)
  # Averaging per-micro-batch means instead would be wrong here (guards against a vacuous test).
  naive = np.mean([float(p["token-mean"][0].value()) for p in parts])
  assert abs(naive - float(full["token-mean"][0].value())) > 1e-4


CHUNKS = (3, 13, 64)  # with T = 13: an uneven tail, exactly one chunk, chunk > T


def test_chunked_logprobs_equal_unchunked_values_and_grads():
  rng = np.random.default_rng(0)
  b, t, d, v = 2, 13, 6, 31
  h = jnp.asarray(rng.normal(size=(b, t, d)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, v, size=(b, t)))
  params = {"w": jnp.asarray(rng.normal(0, 0.5, size=(d, v)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=(v,)), jnp.float32)}
  cot_lp = jnp.asarray(rng.normal(size=(b, t)), jnp.float32)
  cot_ent = jnp.asarray(rng.normal(size=(b, t)), jnp.float32)

  def full(p, hid):
    return rl.token_logprobs(hid @ p["w"] + p["b"], targets, temperature=0.9, return_entropy=True)

  def chunked(chunk):
    return lambda p, hid: rl.chunked_token_logprobs(hid, targets, lambda hc: hc @ p["w"] + p["b"], chunk_size=chunk,
                                                    temperature=0.9, return_entropy=True)

  def objective(fn):
    def f(p, hid):
      lp, ent = fn(p, hid)
      return jnp.sum(lp * cot_lp) + jnp.sum(ent * cot_ent)
    return f

  @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
  def run(p, hid):
    out = {"full": (full(p, hid), jax.grad(objective(full), argnums=(0, 1))(p, hid))}
    for c in CHUNKS:
      lp_only = rl.chunked_token_logprobs(hid, targets, lambda hc: hc @ p["w"] + p["b"], chunk_size=c, temperature=0.9)
      out[f"chunk{c}"] = (chunked(c)(p, hid), jax.grad(objective(chunked(c)), argnums=(0, 1))(p, hid), lp_only)
    return out

  out = run(params, h)
  (lp_f, ent_f), g_full = out["full"]
  for c in CHUNKS:
    (lp_c, ent_c), g_chunk, lp_only = out[f"chunk{c}"]
    np.testing.assert_allclose(np.asarray(lp_c), np.asarray(lp_f), err_msg=str(c), **TOL)
    np.testing.assert_allclose(np.asarray(ent_c), np.asarray(ent_f), err_msg=str(c), **TOL)
    np.testing.assert_allclose(np.asarray(lp_only), np.asarray(lp_f), err_msg=str(c), **TOL)
    for a, e in zip(jax.tree.leaves(g_chunk), jax.tree.leaves(g_full)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(e), err_msg=str(c), **TOL)
  # And the unchunked path itself against the float64 loop reference.
  ref_lp, _ = np_logp_entropy(np.asarray(h @ params["w"] + params["b"]), np.asarray(targets), 0.9)
  np.testing.assert_allclose(np.asarray(lp_f), ref_lp, **TOL)


# ----------------------------------------------------------------------------------------------
# jit and input validation
# ----------------------------------------------------------------------------------------------


def test_jit_with_static_argnames_and_traced_hyperparameters():
  # Every other test already runs through jit with constants bound (J); here the documented
  # static_argnames form and traced (non-constant) float hyper-parameters.
  rng = np.random.default_rng(0)
  mn = rand_mask(rng)
  m = jnp.asarray(mn)
  x = jnp.asarray(rng.normal(size=(B, T)), jnp.float32)
  agg = jax.jit(rl.aggregate, static_argnames=("mode", "norm_len"))
  check_weighted(agg(x, m, mode="sequence-mean-token-mean"), np_aggregate(np.asarray(x), mn, "sequence-mean-token-mean"))
  r = jnp.asarray(rng.normal(size=(12,)), jnp.float32)
  ga = jax.jit(rl.group_advantages, static_argnames=("estimator", "group_size"))
  np.testing.assert_allclose(np.asarray(ga(r, estimator="rloo", group_size=4)),
                             np_group_adv(np.asarray(r).reshape(3, 4), "rloo").reshape(-1), **TOL)
  f = jax.jit(lambda lp, beta, eps, c: rl.grpo_loss(lp, x, x - 0.1, x, m, beta=beta, epsilon_low=eps, clip_ratio_c=c,
                                                     kl_kind="k2", agg_mode="sequence-mean-token-mean")[0].value())
  want = J(rl.grpo_loss, beta=0.1, epsilon_low=0.2, clip_ratio_c=3.0, kl_kind="k2", agg_mode="sequence-mean-token-mean")(
      x + 0.1, x, x - 0.1, x, m)[0].value()
  np.testing.assert_allclose(float(f(x + 0.1, 0.1, 0.2, 3.0)), float(want), **TOL)
  # The advantage helpers, with traced gamma / lam / beta.
  xn, mn64 = np.asarray(x, np.float64), mn
  adv, ret = jax.jit(rl.gae_advantages)(x, x, m, gamma=jnp.float32(0.9), lam=jnp.float32(0.8))
  ref_adv, ref_ret = np_gae(xn, xn, mn64, 0.9, 0.8)
  np.testing.assert_allclose(np.asarray(adv), ref_adv, **TOL)
  np.testing.assert_allclose(np.asarray(jax.jit(rl.masked_whiten)(x, m)), np_whiten(xn, mn64), **TOL)
  placed = jax.jit(rl.place_outcome_reward)(x[:, 0], m, kl=x, beta=jnp.float32(0.1))
  np.testing.assert_allclose(np.asarray(placed), np_place(xn[:, 0], mn64, xn, 0.1), **TOL)


# ----------------------------------------------------------------------------------------------
# Edges mutation testing found untested (bash scripts/mutation.sh memr1_jax/rl/advantages.py
# tests/test_rl_math.py): axes, the biased variance, defaults, dtypes, exact error messages
# ----------------------------------------------------------------------------------------------


def test_masked_statistics_along_axes_and_both_variances():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(3, 5))
  m = np.array([[1, 1, 0, 1, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]], bool)
  xj, mj = jnp.asarray(x, jnp.float32), jnp.asarray(m)
  for axis, keep in ((None, False), (1, False), (1, True), (0, True)):
    want_sum = np.where(m, x, 0.0).sum(axis=axis, keepdims=keep)
    want_mean = want_sum / np.maximum(m.sum(axis=axis, keepdims=keep), 1)
    got_sum = rl.masked_sum(xj, mj, axis=axis, keepdims=keep)
    got_mean = rl.masked_mean(xj, mj, axis=axis, keepdims=keep)
    assert got_sum.shape == np.shape(want_sum) and got_mean.shape == np.shape(want_mean), (axis, keep)
    np.testing.assert_allclose(np.asarray(got_sum), want_sum, **TOL)
    np.testing.assert_allclose(np.asarray(got_mean), want_mean, **TOL)
  assert rl.masked_sum(xj, mj).shape == rl.masked_mean(xj, mj).shape == ()   # a scalar by default
  for ddof, unbiased in ((1, True), (0, False)):
    np.testing.assert_allclose(float(rl.masked_var(xj, mj, unbiased=unbiased)), np.var(x[m], ddof=ddof), **TOL)
    two = np.zeros_like(m)
    two[0, :2] = True                                     # n = 2: the Bessel denominator is exactly 1
    np.testing.assert_allclose(float(rl.masked_var(xj, jnp.asarray(two), unbiased=unbiased)),
                               np.var(x[two], ddof=ddof), **TOL)
    assert float(rl.masked_var(xj, jnp.zeros_like(mj), unbiased=unbiased)) == 0.0


def test_whiten_of_a_constant_is_zero_and_shift_mean_false_adds_the_mean_back():
  rng = np.random.default_rng(4)
  m = rand_mask(rng)
  const = rl.masked_whiten(jnp.full((B, T), 0.5, jnp.float32), jnp.asarray(m))
  assert np.all(np.asarray(const) == 0.0)                 # var 0: eps keeps it finite
  x = rng.normal(2.0, 3.0, size=(B, T))
  mean = x[m].mean()
  got = rl.masked_whiten(jnp.asarray(x, jnp.float32), jnp.asarray(m), shift_mean=False)
  np.testing.assert_allclose(np.asarray(got), np.where(m, np_whiten(x, m) + mean, 0.0), **TOL)


def test_last_valid_index_of_an_empty_row_is_zero():
  idx, has = rl.last_valid_index(jnp.asarray([[0, 0, 0], [1, 0, 1], [0, 1, 0]], bool))
  assert np.asarray(idx).tolist() == [0, 2, 1] and np.asarray(has).tolist() == [False, True, True]


def test_defaults_beta_zero_gamma_one_lambda_095():
  rng = np.random.default_rng(5)
  m = rand_mask(rng)
  r, v = rng.normal(size=(B, T)), rng.normal(size=(B, T))
  scores, kl = rng.normal(size=(B,)), rng.normal(size=(B, T))
  placed = rl.place_outcome_reward(jnp.asarray(scores, jnp.float32), jnp.asarray(m), kl=jnp.asarray(kl, jnp.float32))
  np.testing.assert_allclose(np.asarray(placed), np_place(scores, m), **TOL)      # no beta: KL not charged
  adv, ret = rl.gae_advantages(jnp.asarray(r, jnp.float32), jnp.asarray(v, jnp.float32), jnp.asarray(m))
  ref_adv, ref_ret = np_gae(r, v, m, 1.0, 0.95)
  np.testing.assert_allclose(np.asarray(adv), ref_adv, **TOL)
  np.testing.assert_allclose(np.asarray(ret), ref_ret, **TOL)


def test_float64_stays_float64_and_low_precision_is_computed_in_float32():
  rng = np.random.default_rng(6)
  m = rand_mask(rng)
  r, v = rng.normal(size=(B, T)), rng.normal(size=(B, T)).astype(np.float32)
  with jax.enable_x64(True):
    adv, ret = rl.gae_advantages(jnp.asarray(r, jnp.float64), jnp.asarray(v), jnp.asarray(m), gamma=0.9, lam=0.8)
    assert adv.dtype == ret.dtype == jnp.float64
    ref_adv, ref_ret = np_gae(r, v.astype(np.float64), m, 0.9, 0.8)
    np.testing.assert_allclose(np.asarray(adv), ref_adv, rtol=1e-12, atol=1e-12)
    adv32, _ = rl.gae_advantages(jnp.asarray(r, jnp.float32), jnp.asarray(v), jnp.asarray(m))
    assert adv32.dtype == jnp.float32                     # float32 inputs are not silently widened
    x64 = jnp.asarray(r, jnp.float64)
    assert rl.masked_mean(x64, jnp.asarray(m)).dtype == jnp.float64
    assert rl.masked_whiten(x64, jnp.asarray(m)).dtype == jnp.float64
  xb = jnp.asarray(r, jnp.bfloat16)
  assert rl.masked_mean(xb, jnp.asarray(m)).dtype == jnp.float32
  assert rl.group_advantages(xb[:2]).dtype == jnp.float32


def test_group_size_may_restate_the_group_axis_and_eps_is_added_to_the_std():
  g = jnp.asarray([[0.0, 1.0, 3.0], [2.0, 2.0, 5.0]], jnp.float32)
  np.testing.assert_array_equal(np.asarray(rl.group_advantages(g, group_size=3)), np.asarray(rl.group_advantages(g)))
  np.testing.assert_allclose(np.asarray(rl.group_advantages(g, eps=0.5)),
                             np_group_adv(np.asarray(g, np.float64), "grpo", eps=0.5), **TOL)


def test_error_messages_name_the_shapes():
  z23, m24 = jnp.zeros((2, 3)), jnp.ones((2, 4), bool)
  cases = [
      (lambda: rl.masked_var(z23, m24), "mask has shape (2, 4), expected (2, 3)"),
      (lambda: rl.last_valid_index(jnp.ones(3, bool)), "mask must be [B, T], got shape (3,)"),
      (lambda: rl.place_outcome_reward(jnp.zeros(3), m24), "scores has shape (3,), expected (2,) to match mask (2, 4)"),
      (lambda: rl.place_outcome_reward(jnp.zeros(2), m24, kl=z23), "kl has shape (2, 3), expected (2, 4)"),
      (lambda: rl.gae_advantages(z23, jnp.zeros((2, 4)), m24), "rewards (2, 3) and values (2, 4) must both be [B, T]"),
      (lambda: rl.gae_advantages(jnp.zeros(3), jnp.zeros(3), jnp.ones(3)),
       "rewards (3,) and values (3,) must both be [B, T]"),
      (lambda: rl.group_advantages(jnp.zeros(6)), "flat rewards [N*G] need group_size"),
      (lambda: rl.group_advantages(jnp.zeros((2, 4)), group_size=3), "group_size=3 but rewards have shape (2, 4) ([N, G])"),
      (lambda: rl.group_advantages(jnp.zeros((1, 2, 3))), "rewards must be [N*G] or [N, G], got shape (1, 2, 3)"),
      (lambda: rl.broadcast_sequence_advantages(jnp.zeros(3), m24), "advantages (3,) do not match mask (2, 4)"),
  ]
  for call, message in cases:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
      call()


def test_bad_inputs_raise_clear_errors():
  x = jnp.zeros((2, 3))
  m = jnp.ones((2, 3), bool)
  with pytest.raises(ValueError, match="agg_mode"):
    rl.aggregate(x, m, "mean")
  with pytest.raises(ValueError, match="mask"):
    rl.aggregate(x, jnp.ones((2, 4)), "token-mean")
  with pytest.raises(ValueError, match="kl kind"):
    rl.kl_penalty(x, x, "k4")
  with pytest.raises(ValueError, match="clip_ratio_c"):
    rl.ppo_policy_loss(x, x, x, m, clip_ratio_c=0.9)
  with pytest.raises(ValueError, match="ref_logp"):
    rl.grpo_loss(x, x, None, x, m, beta=0.04)
  with pytest.raises(ValueError, match="group_size"):
    rl.group_advantages(jnp.zeros(7), group_size=3)
  with pytest.raises(ValueError, match="estimator"):
    rl.group_advantages(jnp.zeros((2, 3)), estimator="ppo")
  with pytest.raises(ValueError, match="advantages"):
    rl.policy_loss(x, x, jnp.zeros((3,)), m)
  with pytest.raises(ValueError, match="chunk_size"):
    rl.chunked_token_logprobs(jnp.zeros((1, 2, 3)), jnp.zeros((1, 2), jnp.int32), lambda h: h, chunk_size=0)
