"""An independent oracle for the composed RL update (``rl/update.py``): one update with plain SGD
and one epoch must move the parameters by exactly ``-lr * grad`` of the loss written again here.

The reference shares nothing with ``memr1_jax.rl``: the decoder is transformers' Llama in
float64 (PyTorch autograd), each row run on its own valid tokens (no padding to get wrong);
log-probs, group advantages, GAE, whitening, the clipped surrogate, the k3 KL, the clipped value
loss and the four aggregations are written below in float64 from their definitions. The only
bridge is the parameter layout: ``save_hf_checkpoint`` exports a tree whose every entry is its
own index, so each Hugging Face tensor is read as a gather from the flat parameter vector, and the
reference's gradient comes back in the update's own layout (a pure permutation: checked).

Optimiser: ``make_optimizer`` replaced by ``optax.sgd`` (no clipping, no Adam), so the update's
parameter change is its gradient times -lr. Micro-batches of 4 rows (of 8) check the exact
accumulation (sum of numerators / sum of counts).
"""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from safetensors.numpy import load_file

from memr1_jax.models import decoder as dec
from memr1_jax.models.config import tiny_config
from memr1_jax.rl import lora as lora_lib
from memr1_jax.rl import update as update_mod
from memr1_jax.rl.train_state import RLConfig, TrainState
from memr1_jax.rl.update import compute_logprobs, make_batch
from memr1_jax.weights.safetensors_loader import save_hf_checkpoint

torch.set_default_dtype(torch.float64)
AGG_MODES = ("token-mean", "sequence-mean-token-mean", "sequence-mean-token-sum", "seq-mean-token-sum-norm")
B, T, G, TEMP, LR = 8, 12, 4, 0.7, 1.0


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cfg = tiny_config("llama", num_layers=1, vocab_size=64, embed_dim=32, mlp_dim=64, num_heads=2, num_kv_heads=1)
    params = jax.tree.map(np.asarray, dec.init_params(cfg, jax.random.PRNGKey(0)))
    leaves, treedef = jax.tree.flatten(params)
    sizes = [x.size for x in leaves]
    offsets = np.cumsum([0] + sizes)
    # Every entry its own index: the exported tensors say where each HF entry comes from.
    index_tree = jax.tree.unflatten(treedef, [np.arange(o, o + n, dtype=np.float32).reshape(x.shape)
                                              for o, n, x in zip(offsets, sizes, leaves)])
    folder = tmp_path_factory.mktemp("layout")
    save_hf_checkpoint(cfg, index_tree, folder)
    layout = {}
    for name, arr in load_file(str(folder / "model.safetensors")).items():
        idx = arr.astype(np.float64)
        assert np.array_equal(idx, np.round(idx)) and idx.min() >= 0 and idx.max() < offsets[-1], name
        layout[name] = torch.as_tensor(idx.astype(np.int64))
    covered = np.concatenate([v.reshape(-1).numpy() for v in layout.values()])
    assert np.array_equal(np.sort(covered), np.arange(offsets[-1])), "export is not a permutation of the params"
    import transformers
    hf_cfg = transformers.AutoConfig.for_model(**json.loads((folder / "config.json").read_text()))
    model = transformers.AutoModelForCausalLM.from_config(hf_cfg, attn_implementation="eager").double().eval()
    return cfg, params, treedef, offsets, layout, model


def _f32(x) -> np.ndarray:
    """float64 holding float32 values: what the update is given is what the reference uses."""
    return np.asarray(x, np.float32).astype(np.float64)


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.asarray(x, np.float64).reshape(-1) for x in jax.tree.leaves(tree)])


def _batch(cfg, seed=0):
    """Left-padded prompts, right-padded responses of random lengths, random rewards."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, cfg.vocab_size, (B, T))
    valid, resp = np.ones((B, T), bool), np.zeros((B, T), bool)
    for i in range(B):
        pad, n = rng.integers(0, 3), rng.integers(1, T // 2 + 1)
        valid[i, :pad] = False
        resp[i, T // 2:T // 2 + n] = True
        valid[i, T // 2 + n:] = False
    rewards = rng.integers(0, 3, B).astype(np.float64) / 2   # ties inside groups too
    ref = _f32(np.where(resp, -rng.random((B, T)) * 3 - 1, 0.0))
    return np.where(valid, tokens, 0), valid, resp, rewards, ref, rng


# ---------------------------------------------------------------- the reference, in float64
def _hf_state(layout, theta: torch.Tensor, prefix: str = "") -> dict:
    return {name: theta[idx] for name, idx in layout.items() if name.startswith(prefix)}


def _forward_rows(model, layout, theta, tokens, valid, *, head: bool):
    """Per row, on its valid tokens alone: [B, T] log-probs aligned with tokens (entry t =
    log p(tokens[t] | tokens[<t]) at temperature TEMP) or, with head=False, the last hidden
    states [B, T, D] shifted the same way (entry t = the state before token t)."""
    state = _hf_state(layout, theta)
    out = torch.zeros((B, T) if head else (B, T, model.config.hidden_size))
    for b in range(B):
        cols = np.flatnonzero(valid[b])
        s, e = cols[0], cols[-1] + 1
        ids = torch.as_tensor(tokens[b, s:e])[None]
        res = torch.func.functional_call(model, state, (ids,), {"position_ids": torch.arange(e - s)[None],
                                                                 "output_hidden_states": True})
        if head:
            logp = torch.log_softmax(res.logits[0] / TEMP, dim=-1)
            lp = logp[:-1].gather(1, ids[0, 1:, None])[:, 0]
            out = out.index_put((torch.tensor([b] * (e - s - 1)), torch.arange(s + 1, e)), lp)
        else:
            h = res.hidden_states[-1][0]
            out = out.index_put((torch.tensor([b] * (e - s - 1)), torch.arange(s + 1, e)), h[:-1])
    return out


def _aggregate(x, mask, mode):
    m = torch.as_tensor(mask, dtype=torch.float64)
    x = x * m
    per_seq = m.sum(1)
    seqs = float((per_seq > 0).sum())
    if mode == "token-mean":
        return x.sum(), float(per_seq.sum())
    if mode == "sequence-mean-token-mean":
        return (x.sum(1) / per_seq.clamp(min=1)).sum(), seqs
    if mode == "sequence-mean-token-sum":
        return x.sum(), seqs
    return x.sum() / T, seqs


def _surrogate(logp, old, adv, eps=0.2):
    ratio = torch.exp(torch.clamp(logp - old, -20, 20))
    return torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1 - eps, 1 + eps))


def _k3(logp, ref):
    d = logp - ref
    return torch.exp(-d) + d - 1


def _group_advantages(rewards):
    g = rewards.reshape(-1, G)
    centered = g - g.mean(1, keepdims=True)
    std = np.sqrt((centered ** 2).sum(1, keepdims=True) / (G - 1))
    adv = np.where(np.abs(centered).max(1, keepdims=True) == 0, 0.0, centered / (std + 1e-6))
    return adv.reshape(-1)


def _gae(token_rewards, values, mask, gamma, lam):
    adv = np.zeros((B, T))
    for b in range(B):
        cols = np.flatnonzero(mask[b])
        nxt_v, nxt_a = 0.0, 0.0
        for t in cols[::-1]:
            delta = token_rewards[b, t] + gamma * nxt_v - values[b, t]
            nxt_a = delta + gamma * lam * nxt_a
            adv[b, t], nxt_v = nxt_a, values[b, t]
    return adv, np.where(mask, adv + values, 0.0)


def _whiten(x, mask):
    v = x[mask]
    return np.where(mask, (x - v.mean()) / np.sqrt(v.var(ddof=1) + 1e-8), 0.0)


# ------------------------------------------------------------------------- the update
def _run_update(monkeypatch, cfg, rl, state, batch):
    monkeypatch.setattr(update_mod, "make_optimizer",
                        lambda c, critic=False: optax.sgd(c.critic_learning_rate if critic else c.learning_rate))
    new_state, metrics = jax.jit(functools.partial(update_mod._update, cfg, rl))(state, batch)
    return new_state, {k: float(v) for k, v in metrics.items()}


def _rl(**kw) -> RLConfig:
    base = dict(learning_rate=LR, critic_learning_rate=0.5, group_size=G, temperature=TEMP, clip_eps=0.2,
                mini_batch_size=B, micro_batch_size=4, epochs=1, max_grad_norm=None, shared_prompt=False,
                entropy_coef=0.0)
    return RLConfig(**{**base, **kw})


def _close(got, want, what):
    scale = np.abs(want).max()
    assert scale > 1e-6, f"{what}: the reference gradient is zero (the test would prove nothing)"
    err = np.abs(got - want).max() / scale
    assert err < 2e-4, f"{what}: update moved the parameters {err:.2e} (relative) away from -lr * grad"


@pytest.mark.parametrize("beta", [0.0, 0.3])
@pytest.mark.parametrize("agg_mode", AGG_MODES)
def test_grpo_full_finetuning_moves_by_minus_lr_times_the_reference_gradient(setup, monkeypatch, agg_mode, beta):
    cfg, params, treedef, offsets, layout, model = setup
    tokens, valid, resp, rewards, ref, rng = _batch(cfg)
    theta0 = torch.tensor(_flat(params))
    with torch.no_grad():
        logp0 = _forward_rows(model, layout, theta0, tokens, valid, head=True).numpy()
    old = _f32(np.where(resp, logp0 + rng.normal(0, 0.3, (B, T)), 0.0))   # an older policy: ratios off 1, clipping
    theta = theta0.clone().requires_grad_(True)
    logp = _forward_rows(model, layout, theta, tokens, valid, head=True)
    adv = torch.as_tensor(np.where(resp, _group_advantages(rewards)[:, None], 0.0))
    per_tok = _surrogate(logp, torch.as_tensor(old), adv) + beta * _k3(logp, torch.as_tensor(ref))
    s, count = _aggregate(per_tok, resp, agg_mode)
    (s / count).backward()
    want = -LR * theta.grad.numpy()

    rl = _rl(algorithm="grpo", beta=beta, agg_mode=agg_mode)
    batch = make_batch(tokens, valid, resp, rewards, old_logprobs=old, ref_logprobs=ref if beta else None)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optax.sgd(LR).init(params),
                       rng=jax.random.PRNGKey(1))
    new, metrics = _run_update(monkeypatch, cfg, rl, state, batch)
    _close(_flat(new.params) - _flat(params), want, f"GRPO {agg_mode} beta={beta}")


@pytest.mark.parametrize("beta", [0.0, 0.3])
@pytest.mark.parametrize("agg_mode", AGG_MODES)
def test_ppo_actor_and_critic_move_by_minus_lr_times_the_reference_gradients(setup, monkeypatch, agg_mode, beta):
    cfg, params, treedef, offsets, layout, model = setup
    tokens, valid, resp, rewards, ref, rng = _batch(cfg, seed=1)
    gamma, lam, vf_coef, vclip = 0.97, 0.8, 0.7, 0.2
    theta0 = torch.tensor(_flat(params))
    head0 = _f32(rng.normal(0, 0.3, cfg.embed_dim))
    critic = {"backbone": params, "value_head": head0.astype(np.float32), "value_bias": np.float32(0.1)}
    with torch.no_grad():
        logp0 = _forward_rows(model, layout, theta0, tokens, valid, head=True).numpy()
        h0 = _forward_rows(model, layout, theta0, tokens, valid, head=False).numpy()
    old = _f32(np.where(resp, logp0 + rng.normal(0, 0.3, (B, T)), 0.0))
    v_old = h0 @ head0 + 0.1
    token_rewards = np.zeros((B, T))
    last = np.array([np.flatnonzero(r)[-1] for r in resp])
    token_rewards[np.arange(B), last] = rewards
    if beta:   # PPO's KL in the reward: k3 of the behaviour policy against the reference
        token_rewards -= beta * np.where(resp, np.exp(ref - old) - (ref - old) - 1, 0.0)
    adv_raw, returns = _gae(token_rewards, np.where(resp, v_old, 0.0), resp, gamma, lam)
    adv = _whiten(adv_raw, resp)

    theta = theta0.clone().requires_grad_(True)
    logp = _forward_rows(model, layout, theta, tokens, valid, head=True)
    s, count = _aggregate(_surrogate(logp, torch.as_tensor(old), torch.as_tensor(adv)), resp, agg_mode)
    (s / count).backward()
    want_actor = -LR * theta.grad.numpy()

    c_theta = theta0.clone().requires_grad_(True)
    c_head = torch.tensor(head0, requires_grad=True)
    c_bias = torch.tensor(0.1, requires_grad=True)
    values = _forward_rows(model, layout, c_theta, tokens, valid, head=False) @ c_head + c_bias
    vo, ret = torch.as_tensor(v_old), torch.as_tensor(returns)
    v_clip = vo + torch.clamp(values - vo, -vclip, vclip)
    vloss = 0.5 * torch.maximum((values - ret) ** 2, (v_clip - ret) ** 2)
    vs, vcount = _aggregate(vloss, resp, agg_mode)
    (vf_coef * vs / vcount).backward()
    want_critic = -0.5 * np.concatenate([c_theta.grad.numpy(), [c_bias.grad.item()], c_head.grad.numpy()])

    rl = _rl(algorithm="ppo", beta=beta, agg_mode=agg_mode, gamma=gamma, lam=lam, vf_coef=vf_coef, value_clip=vclip,
             whiten_advantages=True)
    batch = make_batch(tokens, valid, resp, rewards, old_logprobs=old, ref_logprobs=ref if beta else None)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optax.sgd(LR).init(params),
                       rng=jax.random.PRNGKey(1), critic_params=critic,
                       critic_opt_state=optax.sgd(0.5).init(critic))
    new, _ = _run_update(monkeypatch, cfg, rl, state, batch)
    _close(_flat(new.params) - _flat(params), want_actor, f"PPO actor {agg_mode} beta={beta}")
    got_critic = np.concatenate([_flat(new.critic_params["backbone"]) - _flat(params),
                                 [float(new.critic_params["value_bias"]) - 0.1],
                                 np.asarray(new.critic_params["value_head"], np.float64) - head0.astype(np.float32)])
    _close(got_critic, want_critic, f"PPO critic {agg_mode} beta={beta}")


def test_ppo_advantages_and_returns_equal_the_numpy_gae(setup):
    cfg, params, *_ = setup
    tokens, valid, resp, rewards, ref, rng = _batch(cfg, seed=2)
    rl = _rl(algorithm="ppo", beta=0.3, gamma=0.9, lam=0.5, whiten_advantages=False)
    critic = {"backbone": params, "value_head": rng.normal(0, 0.3, cfg.embed_dim).astype(np.float32),
              "value_bias": np.float32(0.2)}
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=None, rng=jax.random.PRNGKey(1),
                       critic_params=critic)
    batch = make_batch(tokens, valid, resp, rewards, ref_logprobs=ref)
    prepared, _ = update_mod._prepare(cfg, rl, state, batch)
    old, values = np.asarray(prepared.old_logprobs, np.float64), np.asarray(prepared.values, np.float64)
    token_rewards = np.zeros((B, T))
    token_rewards[np.arange(B), [np.flatnonzero(r)[-1] for r in resp]] = rewards
    token_rewards -= 0.3 * np.where(resp, np.exp(ref - old) - (ref - old) - 1, 0.0)
    adv, ret = _gae(token_rewards, np.where(resp, values, 0.0), resp, 0.9, 0.5)
    np.testing.assert_allclose(np.asarray(prepared.advantages), adv, atol=1e-5)
    np.testing.assert_allclose(np.asarray(prepared.returns), ret, atol=1e-5)


@pytest.mark.parametrize("agg_mode", ["token-mean", "seq-mean-token-sum-norm"])
def test_grpo_lora_moves_the_adapters_by_minus_lr_times_the_reference_gradient(setup, monkeypatch, agg_mode):
    cfg, params, treedef, offsets, layout, model = setup
    tokens, valid, resp, rewards, ref, rng = _batch(cfg, seed=3)
    lcfg = lora_lib.LoraConfig(rank=2, alpha=6.0)
    adapters = lora_lib.init_adapters(params, lcfg, jax.random.PRNGKey(3))
    # B != 0, so A gets a gradient too (at init B = 0 and only B would move).
    adapters = jax.tree.map(lambda x: np.asarray(x) + rng.normal(0, 0.2, np.shape(x)).astype(np.float32), adapters)
    targets = lora_lib.target_kernels(params, lcfg)
    paths = [tuple(getattr(k, "key", k) for k in p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    base = [torch.tensor(np.asarray(x, np.float64)) for x in jax.tree.leaves(params)]
    leaves = {}
    for path in targets:
        node = adapters
        for k in path:
            node = node[k]
        leaves[path] = (torch.tensor(np.asarray(node["a"], np.float64), requires_grad=True),
                        torch.tensor(np.asarray(node["b"], np.float64), requires_grad=True))
    eff = [w + lcfg.scale * (leaves[p][0] @ leaves[p][1]).reshape(w.shape) if p in leaves else w
           for p, w in zip(paths, base)]
    theta = torch.cat([w.reshape(-1) for w in eff])
    logp = _forward_rows(model, layout, theta, tokens, valid, head=True)
    old = _f32(np.where(resp, logp.detach().numpy() + rng.normal(0, 0.3, (B, T)), 0.0))
    adv = torch.as_tensor(np.where(resp, _group_advantages(rewards)[:, None], 0.0))
    per_tok = _surrogate(logp, torch.as_tensor(old), adv) + 0.3 * _k3(logp, torch.as_tensor(ref))
    s, count = _aggregate(per_tok, resp, agg_mode)
    (s / count).backward()

    rl = _rl(algorithm="grpo", beta=0.3, agg_mode=agg_mode, lora=lcfg)
    batch = make_batch(tokens, valid, resp, rewards, old_logprobs=old, ref_logprobs=ref)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=adapters, opt_state=optax.sgd(LR).init(adapters),
                       rng=jax.random.PRNGKey(1), base_params=params)
    new, _ = _run_update(monkeypatch, cfg, rl, state, batch)
    for path, (a, b) in leaves.items():
        node, old_node = new.params, adapters
        for k in path:
            node, old_node = node[k], old_node[k]
        for name, leaf in (("a", a), ("b", b)):
            got = np.asarray(node[name], np.float64) - np.asarray(old_node[name], np.float64)
            _close(got, -LR * leaf.grad.numpy(), f"LoRA {'/'.join(path)}/{name} {agg_mode}")


def test_lora_reference_is_the_base_model_and_the_first_kl_is_exactly_zero(setup, monkeypatch):
    cfg, params, treedef, offsets, layout, model = setup
    tokens, valid, resp, rewards, ref, rng = _batch(cfg, seed=4)
    lcfg = lora_lib.LoraConfig(rank=2, alpha=6.0)
    adapters = lora_lib.init_adapters(params, lcfg, jax.random.PRNGKey(3))   # B = 0: the policy is the base
    rl = _rl(algorithm="grpo", beta=0.3, lora=lcfg)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=adapters, opt_state=optax.sgd(LR).init(adapters),
                       rng=jax.random.PRNGKey(1), base_params=params)
    batch = make_batch(tokens, valid, resp, rewards)
    prepared, metrics = update_mod._prepare(cfg, rl, state, batch)
    base_lp = compute_logprobs(params, batch, 4, model_cfg=cfg, chunk_size=rl.logprob_chunk, temperature=TEMP)
    np.testing.assert_array_equal(np.asarray(prepared.ref_logprobs), np.asarray(base_lp))
    assert float(metrics["kl_old_ref"]) == 0.0
    with torch.no_grad():
        want = _forward_rows(model, layout, torch.tensor(_flat(params)), tokens, valid, head=True).numpy()
    np.testing.assert_allclose(np.asarray(prepared.ref_logprobs)[resp], want[resp], atol=2e-5)
    _, upd = _run_update(monkeypatch, cfg, rl, state, batch)
    assert upd["kl"] == 0.0
