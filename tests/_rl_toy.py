"""Shared helpers for the RL update tests: tiny models, synthetic batches and a toy
rollout (reward 1 when the completion contains a target token)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from memr1_jax.models import decoder as dec
from memr1_jax.models.config import tiny_config
from memr1_jax.rl.update import make_batch

TARGET = 5
EOS = 2


def tiny(vocab=256, **kw):
    return tiny_config("llama", vocab_size=vocab, **kw)


def fresh_params(cfg, seed=0):
    return dec.init_params(cfg, jax.random.PRNGKey(seed))


def synthetic_batch(cfg, b=8, t=12, seed=0, with_ref=True, ppo=False):
    """Left-padded prompts + right-padded responses with random tokens and rewards."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, cfg.vocab_size, (b, t))
    valid = np.ones((b, t), bool)
    resp = np.zeros((b, t), bool)
    p = t // 2
    for i in range(b):
        pad_l = rng.integers(0, 3)
        n_resp = rng.integers(1, t - p + 1)
        valid[i, :pad_l] = False
        resp[i, p:p + n_resp] = True
        valid[i, p + n_resp:] = False
    tokens = np.where(valid, tokens, 0)
    extra = {}
    if with_ref:
        extra["ref_logprobs"] = np.where(resp, -rng.random((b, t)) * 4, 0.0)
    return make_batch(tokens, valid, resp, rng.random(b).astype(np.float32), **extra)


def rollout(cfg, params, rng, n_prompts, group, max_new=8, prompt_len=4):
    """Samples `group` completions per random prompt at temperature 1 and scores them.

    Uses memr1_jax.sampling.sampler.generate. Returns (RLBatch, rewards numpy)."""
    from memr1_jax.sampling.sampler import SamplingConfig, generate
    k_prompt, k_sample = jax.random.split(rng)
    prompts = np.asarray(jax.random.randint(k_prompt, (n_prompts, prompt_len), 3, cfg.vocab_size))
    prompts = np.where(prompts == TARGET, TARGET + 1, prompts)
    out = generate(cfg, params, [list(p) for p in prompts], SamplingConfig(temperature=1.0), rng=k_sample,
                   stop_ids=[EOS], max_new_tokens=max_new, num_samples=group, pad_id=0)
    rows = n_prompts * group
    comp = out.tokens[:rows, :max_new]
    lengths = out.lengths[:rows]
    resp = np.arange(max_new)[None, :] < lengths[:, None]
    rewards = np.any((comp == TARGET) & resp, axis=1).astype(np.float32)
    tokens = np.concatenate([np.repeat(prompts, group, axis=0), np.where(resp, comp, 0)], axis=1)
    valid = np.concatenate([np.ones((rows, prompt_len), bool), resp], axis=1)
    resp_mask = np.concatenate([np.zeros((rows, prompt_len), bool), resp], axis=1)
    sampler_lp = np.concatenate([np.zeros((rows, prompt_len), np.float32),
                                 np.where(resp, out.logprobs[:rows, :max_new], 0.0)], axis=1)
    batch = make_batch(tokens, valid, resp_mask, rewards, prompt_len=prompt_len, sampler_logprobs=sampler_lp)
    return batch, rewards
