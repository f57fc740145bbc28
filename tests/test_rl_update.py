"""The jitted RL update: exact micro-batching, LoRA-only training, batch checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _rl_toy import fresh_params, synthetic_batch, tiny
from memr1_jax.rl.lora import LoraConfig
from memr1_jax.rl.train_state import RLConfig, init_train_state
from memr1_jax.rl.update import compute_logprobs, make_batch, make_update_fn, policy_logprobs


def _run(model_cfg, rl, batch, steps=1, seed=0):
    state = init_train_state(model_cfg, rl, fresh_params(model_cfg, seed), jax.random.PRNGKey(7))
    up = make_update_fn(model_cfg, rl)
    for _ in range(steps):
        state, metrics = up(state, batch)
    return state, metrics


def _max_diff(a, b):
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# PPO's critic-gradient accumulation runs in the default suite on a small batch (one epoch); the
# larger two-epoch case stays in the slow set.
@pytest.mark.parametrize("algorithm, b, t, epochs", [
    ("grpo", 8, 12, 2), ("ppo", 4, 8, 1), pytest.param("ppo", 8, 12, 2, marks=pytest.mark.slow)])
def test_micro_batched_update_equals_full_batch(algorithm, b, t, epochs):
    cfg = tiny(num_layers=1)
    batch = synthetic_batch(cfg, b=b, t=t, seed=1)
    base = RLConfig(algorithm=algorithm, learning_rate=1e-2, critic_learning_rate=1e-2, group_size=4,
                    beta=0.05 if algorithm == "grpo" else 0.02, epochs=epochs, logprob_chunk=4,
                    agg_mode="sequence-mean-token-mean",
                    # Adam divides by sqrt(v): with a tiny eps, float noise on near-zero gradients
                    # becomes an lr-sized step. A larger eps keeps the comparison about the gradient.
                    adam_eps=1e-3)
    full, m_full = _run(cfg, base.replace(micro_batch_size=None), batch)
    micro, m_micro = _run(cfg, base.replace(micro_batch_size=2), batch)
    assert _max_diff(full.params, micro.params) < 1e-5
    if algorithm == "ppo":
        assert _max_diff(full.critic_params, micro.critic_params) < 1e-5
        assert abs(float(m_full["vf_loss"]) - float(m_micro["vf_loss"])) < 1e-5
    for k in ("pg_loss", "kl", "entropy", "grad_norm"):
        if k in m_full:
            assert abs(float(m_full[k]) - float(m_micro[k])) < 1e-5, k
    # The update really moved the parameters (the comparison is not vacuous).
    assert _max_diff(full.params, fresh_params(cfg)) > 1e-3
    assert int(full.step) == 1


def test_chunked_logprobs_match_full_logits_and_alignment():
    cfg = tiny(num_layers=1)
    params = fresh_params(cfg)
    batch = synthetic_batch(cfg, b=4, t=10, seed=3)
    lp = compute_logprobs(params, batch, 2, model_cfg=cfg, chunk_size=3)
    from memr1_jax.models import decoder as dec
    logits, _ = dec.forward(cfg, params, batch.tokens, batch.positions, dec.causal_mask(batch.valid))
    ref = jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]), batch.tokens[:, 1:, None], -1)[..., 0]
    np.testing.assert_allclose(np.asarray(lp[:, 1:]), np.asarray(ref), atol=1e-5)
    assert float(jnp.abs(lp[:, 0]).max()) == 0.0


def test_lora_update_trains_adapters_only_and_uses_base_as_reference():
    cfg = tiny(num_layers=1)
    batch = synthetic_batch(cfg, b=4, t=10, seed=2, with_ref=False)
    rl = RLConfig(learning_rate=1e-2, group_size=2, beta=0.1, lora=LoraConfig(rank=2), logprob_chunk=4)
    params = fresh_params(cfg)
    base_copy = jax.tree.map(np.asarray, params)
    state = init_train_state(cfg, rl, params, jax.random.PRNGKey(0))
    a0 = jax.tree.map(np.asarray, state.params)
    up = make_update_fn(cfg, rl)
    state, m = up(state, batch)
    state, m = up(state, batch)
    assert _max_diff(state.base_params, base_copy) == 0.0
    assert _max_diff(state.params, a0) > 1e-4
    # Reference = frozen base: at the start KL(old || ref) is exactly 0, later it is not.
    assert float(m["kl"]) > 0.0
    assert jax.tree.structure(state.opt_state[1][0].mu) == jax.tree.structure(state.params)


def test_batch_validation_errors():
    cfg = tiny(num_layers=1)
    with pytest.raises(ValueError, match="rewards"):
        make_batch(np.zeros((2, 4)), np.ones((2, 4)), np.ones((2, 4)), np.zeros(3))
    with pytest.raises(ValueError, match="algorithm"):
        RLConfig(algorithm="dpo")
    batch = synthetic_batch(cfg, b=6, t=8, with_ref=True)
    rl = RLConfig(mini_batch_size=4)
    state = init_train_state(cfg, rl, fresh_params(cfg), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="mini_batch_size=4"):
        make_update_fn(cfg, rl)(state, batch)
    with pytest.raises(ValueError, match="ref_logprobs"):
        state = init_train_state(cfg, RLConfig(), fresh_params(cfg), jax.random.PRNGKey(0))
        make_update_fn(cfg, RLConfig())(state, synthetic_batch(cfg, b=4, t=8, with_ref=False))


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_base_params_survive_donated_updates(lora):
    """The update donates its state (honoured on CPU in this JAX version: the old state's
    trainable arrays are deleted), yet the caller's pretrained params, which are also the LoRA
    base, the reference policy and the frozen Answer Agent, stay valid and unchanged."""
    cfg = tiny(num_layers=2)
    batch = synthetic_batch(cfg, b=4, t=10, seed=2)
    params = fresh_params(cfg)
    before = jax.tree.map(np.array, params)
    rl = RLConfig(learning_rate=1e-2, group_size=4, beta=0.05 if lora else 0.0,
                  lora=LoraConfig(rank=2, alpha=4.0) if lora else None)
    state = init_train_state(cfg, rl, params, jax.random.PRNGKey(0))
    up = make_update_fn(cfg, rl)
    for _ in range(3):
        old = state
        state, _ = up(state, batch)
        assert all(x.is_deleted() for x in jax.tree.leaves(old.params))       # donation happened
    assert not any(x.is_deleted() for x in jax.tree.leaves(params))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(before)):
        np.testing.assert_array_equal(np.asarray(a), b)
    if lora:
        assert state.base_params is params
    # the pretrained params still run (as the frozen agent / reference does)
    lp = compute_logprobs(params, batch, 4, model_cfg=cfg, chunk_size=4)
    assert np.all(np.isfinite(np.asarray(lp)))
