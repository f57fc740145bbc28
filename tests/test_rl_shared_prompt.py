"""The update's response path (each group's prompt once, the head on response positions only)
against the plain full pass on every row: log-probs, entropies and gradients in float32."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _rl_toy import fresh_params, tiny
from memr1_jax.agents.rollout import Episode, pack_episodes
from memr1_jax.models.config import tiny_config
from memr1_jax.rl import lora as lora_lib
from memr1_jax.rl.train_state import RLConfig, init_train_state
from memr1_jax.rl.update import compute_logprobs, make_update_fn, policy_logprobs, response_logprobs


def grouped_batch(cfg, n=3, group=4, max_prompt=11, max_resp=7, seed=0, advantages=False):
    """pack_episodes over n random prompts of different lengths x G random completions of
    different lengths (some of the full length): the batch the trainer builds."""
    rng = np.random.default_rng(seed)
    eps = []
    for i in range(n):
        prompt = tuple(int(x) for x in rng.integers(3, cfg.vocab_size, rng.integers(2, max_prompt + 1)))
        for g in range(group):
            k = max_resp if g == 0 else int(rng.integers(1, max_resp + 1))
            comp = tuple(int(x) for x in rng.integers(3, cfg.vocab_size, k))
            lp = tuple(float(x) for x in -rng.random(k) * 3)
            eps.append(Episode(prompt, comp, lp, float(rng.random()), {}))
    return pack_episodes(eps, pad_id=0, min_bucket=4, response_len=max_resp)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_response_logprobs_equal_full_pass_on_response_positions(arch):
    cfg = tiny_config(arch, vocab_size=256)
    params = fresh_params(cfg, seed=1)
    batch = grouped_batch(cfg, seed=2)
    assert batch.prompt_len == 12 and batch.tokens.shape == (12, 19)
    args = (batch.tokens, batch.positions, batch.valid)
    full_lp, full_ent = policy_logprobs(cfg, params, *args, chunk_size=5, temperature=0.7, return_entropy=True)
    lp, ent = response_logprobs(cfg, params, *args, prompt_len=batch.prompt_len, group=4, chunk_size=3,
                                temperature=0.7, return_entropy=True)
    m = np.asarray(batch.response_mask)
    assert m.sum() > 30
    np.testing.assert_allclose(np.asarray(lp)[m], np.asarray(full_lp)[m], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ent)[m], np.asarray(full_ent)[m], atol=1e-5, rtol=1e-5)
    assert float(jnp.abs(lp[:, :batch.prompt_len]).max()) == 0.0   # prompt entries are 0
    # Every response column is computed (padding included), not just the masked ones.
    np.testing.assert_allclose(np.asarray(lp)[:, batch.prompt_len:], np.asarray(full_lp)[:, batch.prompt_len:],
                               atol=1e-5, rtol=1e-5)
    # The jitted scoring pass takes the same path with whole groups per micro-batch.
    scored = compute_logprobs(params, batch, 4, model_cfg=cfg, chunk_size=4, group=4)
    full_t1 = policy_logprobs(cfg, params, *args, chunk_size=5)
    np.testing.assert_allclose(np.asarray(scored)[m], np.asarray(full_t1)[m], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("lora", [False, True])
def test_response_path_gradients_equal_full_pass(lora):
    cfg = tiny(num_layers=3)
    base = fresh_params(cfg, seed=3)
    batch = grouped_batch(cfg, seed=4)
    rng = np.random.default_rng(5)
    adv = jnp.asarray(rng.normal(size=batch.tokens.shape), jnp.float32)
    m = batch.response_mask.astype(jnp.float32)
    args = (batch.tokens, batch.positions, batch.valid)
    lcfg = lora_lib.LoraConfig(rank=4, alpha=8.0, targets=((r"layers_2/.*_proj$", 1),
                                                           (r"layers_2/attn/o_proj$", 2)))
    if lora:
        trainable = lora_lib.init_adapters(base, lcfg, jax.random.PRNGKey(1))
        trainable = jax.tree.map(lambda x: x + 0.05, trainable)   # B != 0: a non-trivial point
        eff = lambda tr: lora_lib.merge(base, tr, lcfg.alpha, lcfg.rank)  # noqa: E731
    else:
        trainable, eff = base, (lambda tr: tr)

    def surrogate(tr, fn, **kw):   # sum of A * logp + 0.1 * entropy over response tokens
        lp, ent = fn(cfg, eff(tr), *args, temperature=0.9, return_entropy=True, **kw)
        return jnp.sum((adv * lp + 0.1 * ent) * m)

    def value_and_grad(fn, **kw):   # jitted: op-by-op, the two gradients took 39-72 s on this CPU
        return jax.jit(jax.value_and_grad(partial(surrogate, fn=fn, **kw)))(trainable)

    v_full, g_full = value_and_grad(policy_logprobs, chunk_size=6)
    v_resp, g_resp = value_and_grad(response_logprobs, prompt_len=batch.prompt_len, group=4, chunk_size=6)
    assert abs(float(v_full) - float(v_resp)) <= 1e-5 * abs(float(v_full))
    leaves_full, leaves_resp = jax.tree.leaves(g_full), jax.tree.leaves(g_resp)
    assert len(leaves_full) == len(leaves_resp) >= 6
    for a, b in zip(leaves_resp, leaves_full):
        assert float(jnp.max(jnp.abs(b))) > 0          # every leaf has a gradient to compare
        assert _rel(a, b) < 1e-5


def test_update_with_shared_prompt_equals_plain_path():
    """One GRPO update (KL to the base, micro-batches of one group, shuffled groups in
    mini-batches of the whole batch): same losses, gradient norm and new parameters."""
    cfg = tiny(num_layers=2)
    batch = grouped_batch(cfg, n=4, group=4, seed=6)
    lcfg = lora_lib.LoraConfig(rank=4, alpha=8.0)
    rl = RLConfig(learning_rate=1e-2, group_size=4, beta=0.05, micro_batch_size=4, mini_batch_size=16,
                  temperature=0.8, lora=lcfg, adam_eps=1e-3)
    out = {}
    for shared in (False, True):
        r = rl.replace(shared_prompt=shared)
        state = init_train_state(cfg, r, fresh_params(cfg, 7), jax.random.PRNGKey(8))
        state, metrics = make_update_fn(cfg, r)(state, batch.replace(old_logprobs=None))
        out[shared] = (state, metrics)
    (s0, m0), (s1, m1) = out[False], out[True]
    for k in ("pg_loss", "kl", "entropy", "grad_norm", "kl_old_ref"):
        assert abs(float(m1[k]) - float(m0[k])) <= 1e-5 * max(1.0, abs(float(m0[k]))), k
    assert float(m0["grad_norm"]) > 1e-3
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s0.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_shared_prompt_needs_whole_groups_per_micro_batch():
    cfg = tiny(num_layers=1)
    batch = grouped_batch(cfg, n=2, group=4)
    # adam_eps large: Adam would turn float noise on near-zero gradients into lr-sized steps
    rl = RLConfig(group_size=4, micro_batch_size=2, beta=0.0, learning_rate=1e-2, adam_eps=1e-3)
    state = init_train_state(cfg, rl, fresh_params(cfg), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="micro_batch_size=2.*group_size=4"):
        make_update_fn(cfg, rl)(state, batch)
    # The plain path takes the same batch and configuration, and updates as the shared path does
    # with whole groups per micro-batch.
    plain = rl.replace(shared_prompt=False)
    state = init_train_state(cfg, plain, fresh_params(cfg), jax.random.PRNGKey(0))
    new_plain, m = make_update_fn(cfg, plain)(state, batch)
    whole = rl.replace(micro_batch_size=4)
    state = init_train_state(cfg, whole, fresh_params(cfg), jax.random.PRNGKey(0))
    new_shared, m_shared = make_update_fn(cfg, whole)(state, batch)
    for a, b in zip(jax.tree.leaves(new_plain.params), jax.tree.leaves(new_shared.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    np.testing.assert_allclose(float(m["pg_loss"]), float(m_shared["pg_loss"]), atol=1e-5)
    assert max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in
               zip(jax.tree.leaves(new_plain.params), jax.tree.leaves(fresh_params(cfg)))) > 1e-4   # it moved
