"""The jit-compiled RL update: ``update(train_state, batch) -> (train_state, metrics)``.

One call runs ``epochs`` passes over the batch, each split (after an RNG shuffle) into
mini-batches (one optimiser step each) and micro-batches (gradient accumulation), all as
``lax.scan``s inside one jit with the train state donated.

Token alignment: every per-token array is ``[B, T]`` aligned with ``tokens``; entry t of
a log-prob array is log p(tokens[t] | tokens[<t]) and entry t of a value array is the
critic's value of the state before token t (the critic output at t-1, as tunix). Entry 0
is always 0, and ``response_mask[:, 0]`` must be False (a prompt has >= 1 token).

Exact micro-batching: losses come back from ``rl.losses`` as ``Weighted(sum, count)``;
each micro-batch contributes grad(sum) and count, and the optimiser sees
sum(grads) / sum(counts), i.e. exactly the full-mini-batch gradient.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from memr1_jax.models import decoder as dec
from memr1_jax.models.config import ModelConfig
from memr1_jax.parallel import mesh as mesh_lib
from memr1_jax.parallel import rules as rules_lib
from memr1_jax.rl import advantages as adv_lib
from memr1_jax.rl import lora as lora_lib
from memr1_jax.rl import losses as loss_lib
from memr1_jax.rl.logprobs import chunked_token_logprobs
from memr1_jax.rl.train_state import RLConfig, TrainState, make_optimizer, make_schedule


@flax.struct.dataclass
class RLBatch:
    """A frozen batch of B sequences of T tokens (prompt left-padded, response right-padded).
    Optional fields are None when absent; the update fills in what it can."""
    tokens: jax.Array                      # int32 [B, T]
    valid: jax.Array                       # bool [B, T]: not padding
    positions: jax.Array                   # int32 [B, T]: RoPE positions
    response_mask: jax.Array               # bool [B, T]: generated tokens that are trained on
    rewards: jax.Array                     # float32 [B]: sequence-level score
    old_logprobs: jax.Array | None = None  # [B, T] behaviour policy (None: computed at update start)
    ref_logprobs: jax.Array | None = None  # [B, T] reference policy (None with LoRA: from the base)
    sampler_logprobs: jax.Array | None = None  # [B, T] as reported by the sampler (diagnostic)
    advantages: jax.Array | None = None    # [B] or [B, T] (None: computed from rewards)
    values: jax.Array | None = None        # PPO [B, T] old values (None: computed at update start)
    returns: jax.Array | None = None       # PPO [B, T] (with advantages)
    # Static: every row's prompt is tokens[:, :prompt_len] and its response tokens[:, prompt_len:]
    # (as ``pack_episodes`` lays them out); 0 when unknown. With RLConfig.shared_prompt the
    # update then runs each group's prompt once and the head on response positions only.
    prompt_len: int = flax.struct.field(pytree_node=False, default=0)


def make_batch(tokens, valid, response_mask, rewards, prompt_len: int = 0, **optional) -> RLBatch:
    """Builds an RLBatch, deriving positions from ``valid``; checks shapes. ``prompt_len`` > 0
    declares that no response token lies before it (checked)."""
    tokens = jnp.asarray(tokens, jnp.int32)
    valid = jnp.asarray(valid, bool)
    response_mask = jnp.asarray(response_mask, bool) & valid
    rewards = jnp.asarray(rewards, jnp.float32)
    if tokens.ndim != 2 or valid.shape != tokens.shape or response_mask.shape != tokens.shape:
        raise ValueError(f"RLBatch: tokens {tokens.shape}, valid {valid.shape}, response_mask "
                         f"{response_mask.shape} must all be [B, T]")
    if rewards.shape != tokens.shape[:1]:
        raise ValueError(f"RLBatch.rewards has shape {rewards.shape}, expected ({tokens.shape[0]},)")
    for k, v in optional.items():
        if v is not None and k != "advantages" and jnp.shape(v) != tokens.shape:
            raise ValueError(f"RLBatch.{k} has shape {jnp.shape(v)}, expected {tokens.shape}")
    if prompt_len:
        if not 0 < prompt_len < tokens.shape[1]:
            raise ValueError(f"RLBatch.prompt_len={prompt_len}: must lie in (0, {tokens.shape[1]})")
        if bool(jnp.any(response_mask[:, :prompt_len])):
            raise ValueError(f"RLBatch.prompt_len={prompt_len}: response_mask has tokens before it")
    optional = {k: (None if v is None else jnp.asarray(v, jnp.float32)) for k, v in optional.items()}
    return RLBatch(tokens=tokens, valid=valid, positions=dec.positions_from_valid(valid),
                   response_mask=response_mask, rewards=rewards, prompt_len=int(prompt_len), **optional)


# ------------------------------------------------------------------ forward passes
def _shift(x: jax.Array) -> jax.Array:
    """[B, T-1] predictions for tokens 1..T-1 -> [B, T] aligned with tokens (entry 0 = 0)."""
    return jnp.pad(x, ((0, 0), (1, 0)))


def policy_logprobs(model_cfg: ModelConfig, params: Any, tokens, positions, valid, *, chunk_size: int,
                    temperature: float = 1.0, return_entropy: bool = False):
    """Per-token log-probs [B, T] (and entropies) of ``tokens`` under ``params``; the LM head
    runs in sequence chunks so [B, T, V] logits never exist at once."""
    model = dec.Decoder(model_cfg)
    hidden, _ = model.apply({"params": params}, tokens, positions, dec.causal_mask(valid), None, True)
    head_fn = lambda h: model.apply({"params": params}, h, method=dec.Decoder.head)
    out = chunked_token_logprobs(hidden[:, :-1], tokens[:, 1:], head_fn, chunk_size=chunk_size,
                                 temperature=temperature, return_entropy=return_entropy)
    if return_entropy:
        return _shift(out[0]), _shift(out[1])
    return _shift(out)


def response_logprobs(model_cfg: ModelConfig, params: Any, tokens, positions, valid, *, prompt_len: int,
                      group: int, chunk_size: int, temperature: float = 1.0, return_entropy: bool = False):
    """``policy_logprobs`` restricted to the response (entries t >= prompt_len; 0 before), each
    prompt computed once for its group of ``group`` consecutive rows.

    The rows of a group share tokens[:, :prompt_len] (a GRPO group: one prompt, G samples). The
    prompt runs as [B/G, P] into a KV cache; the responses [B, R] attend to it repeated over
    the group (autodiff sums the prompt's gradient over its G samples). The head and the
    log-softmax run on the R positions that predict response tokens only: the prompt's last
    position and the response's first R-1. Same function of the parameters as the full pass
    at every response position; the prompt work drops G-fold and the head work T/R-fold.
    """
    b, t = tokens.shape
    p, r = prompt_len, t - prompt_len
    if not 0 < p < t or b % group:
        raise ValueError(f"response_logprobs: prompt_len={p} of {t} tokens, {b} rows in groups of {group}")
    model = dec.Decoder(model_cfg)
    variables = {"params": params}
    first = lambda x: x[::group, :p]  # noqa: E731  (a group's prompt, from its first row)
    cache = dec.init_cache(model_cfg, b // group, p)
    h_prompt, cache = model.apply(variables, first(tokens), first(positions),
                                  dec.causal_mask(first(valid)), cache, True, fresh=True, last_only=True)
    grow = lambda x: jnp.repeat(jnp.pad(x, ((0, 0), (0, 0), (0, r), (0, 0))), group, axis=0)  # noqa: E731
    cache = {"index": p, "layers": tuple({"k": grow(c["k"]), "v": grow(c["v"])} for c in cache["layers"])}
    h_resp, _ = model.apply(variables, tokens[:, p:], positions[:, p:], dec.cache_mask(valid, p, r), cache, True)
    hidden = jnp.concatenate([jnp.repeat(h_prompt[:, -1:], group, axis=0), h_resp[:, :-1]], axis=1)
    head_fn = lambda h: model.apply(variables, h, method=dec.Decoder.head)  # noqa: E731
    out = chunked_token_logprobs(hidden, tokens[:, p:], head_fn, chunk_size=max(1, min(chunk_size, r)),
                                 temperature=temperature, return_entropy=return_entropy)
    pad = lambda x: jnp.pad(x, ((0, 0), (p, 0)))  # noqa: E731
    return (pad(out[0]), pad(out[1])) if return_entropy else pad(out)


def _sequence_logprobs(model_cfg: ModelConfig, params: Any, tokens, positions, valid, *, prompt_len: int,
                       group: int, chunk_size: int, temperature: float, return_entropy: bool = False):
    """The response path when the batch declares its prompt length and ``group`` > 0, else the
    full pass (``shared_prompt=False``: the plain path, kept for comparison)."""
    if group and prompt_len:
        return response_logprobs(model_cfg, params, tokens, positions, valid, prompt_len=prompt_len,
                                 group=group, chunk_size=chunk_size, temperature=temperature,
                                 return_entropy=return_entropy)
    return policy_logprobs(model_cfg, params, tokens, positions, valid, chunk_size=max(1, min(chunk_size, tokens.shape[1] - 1)),
                           temperature=temperature, return_entropy=return_entropy)


def critic_values(model_cfg: ModelConfig, critic_params: Any, tokens, positions, valid) -> jax.Array:
    """Values [B, T] aligned with tokens: entry t is V(state before token t)."""
    v = dec.ValueModel(model_cfg).apply({"params": critic_params}, tokens, positions, dec.causal_mask(valid))
    return _shift(v[:, :-1])


def _split_rows(tree: Any, n: int) -> Any:
    return jax.tree.map(lambda x: x.reshape((n, x.shape[0] // n) + x.shape[1:]), tree)


def _micro_map(fn: Callable, arrays: Any, micro: int) -> Any:
    """fn over row micro-batches of ``arrays`` with lax.map; results re-joined on rows."""
    b = jax.tree.leaves(arrays)[0].shape[0]
    if micro >= b:
        return fn(arrays)
    if b % micro:
        raise ValueError(f"batch of {b} rows is not divisible by micro-batch size {micro}")
    out = jax.lax.map(fn, _split_rows(arrays, b // micro))
    return jax.tree.map(lambda x: x.reshape((b,) + x.shape[2:]), out)


@functools.partial(jax.jit, static_argnames=("model_cfg", "micro_batch", "chunk_size", "temperature", "group"))
def compute_logprobs(params: Any, batch: RLBatch, micro_batch: int, *, model_cfg: ModelConfig,
                     chunk_size: int = 256, temperature: float = 1.0, group: int = 0) -> jax.Array:
    """Jitted scoring of ``batch.tokens`` in micro-batches of rows: [B, T] float32 log-probs
    (0 at entry 0). For the old policy pass the actor params (``effective_params``), for the
    reference the frozen/reference params. ``group`` > 0 with ``batch.prompt_len``: response
    positions only (0 on the prompt), each group's prompt once (``response_logprobs``)."""
    fn = lambda a: _sequence_logprobs(model_cfg, params, a[0], a[1], a[2], prompt_len=batch.prompt_len,  # noqa: E731
                                      group=group, chunk_size=chunk_size, temperature=temperature)
    return jax.lax.stop_gradient(_micro_map(fn, (batch.tokens, batch.positions, batch.valid), micro_batch))


@functools.partial(jax.jit, static_argnames=("model_cfg", "micro_batch"))
def compute_values(critic_params: Any, batch: RLBatch, micro_batch: int, *, model_cfg: ModelConfig) -> jax.Array:
    fn = lambda a: critic_values(model_cfg, critic_params, *a)
    return jax.lax.stop_gradient(_micro_map(fn, (batch.tokens, batch.positions, batch.valid), micro_batch))


def effective_params(cfg: RLConfig, state: TrainState) -> Any:
    """The actor's parameters as the model sees them (LoRA merged into the base)."""
    if cfg.lora is None:
        return state.params
    return lora_lib.merge(state.base_params, state.params, cfg.lora.alpha, cfg.lora.rank)


# ------------------------------------------------------------------ update
def _group(cfg: RLConfig, batch: RLBatch) -> int:
    """Rows per shared prompt in the update's forward passes; 0: the full pass per row."""
    return cfg.group_size if cfg.shared_prompt and batch.prompt_len else 0


def _sizes(cfg: RLConfig, b: int, group: int = 0) -> tuple[int, int]:
    mini = cfg.mini_batch_size or b
    micro = cfg.micro_batch_size or mini
    if b % mini:
        raise ValueError(f"RLConfig.mini_batch_size={mini} does not divide the batch of {b} rows")
    if mini % micro:
        raise ValueError(f"RLConfig.micro_batch_size={micro} does not divide mini_batch_size={mini}")
    score_micro = cfg.logprob_micro_batch or micro
    if group and (micro % group or score_micro % group):
        raise ValueError(f"RLConfig.shared_prompt: micro_batch_size={micro} and logprob_micro_batch="
                         f"{score_micro} must be multiples of group_size={group} (whole groups per "
                         "micro-batch), or set shared_prompt=False")
    return mini, micro


def _prepare(model_cfg: ModelConfig, cfg: RLConfig, state: TrainState, batch: RLBatch) -> tuple[RLBatch, dict]:
    """Fills old/ref log-probs, values, advantages and returns; batch-level metrics."""
    b, t = batch.tokens.shape
    mask = batch.response_mask & batch.valid
    mask = mask.at[:, 0].set(False)
    batch = batch.replace(response_mask=mask)
    group = _group(cfg, batch)
    micro = cfg.logprob_micro_batch or _sizes(cfg, b, group)[1]
    score = functools.partial(compute_logprobs, micro_batch=micro, model_cfg=model_cfg,
                              chunk_size=cfg.logprob_chunk, temperature=cfg.temperature, group=group)
    if batch.old_logprobs is None:
        batch = batch.replace(old_logprobs=score(effective_params(cfg, state), batch))
    if batch.ref_logprobs is None and cfg.beta != 0:
        if cfg.lora is None:
            raise ValueError(f"RLConfig.beta={cfg.beta} with full fine-tuning needs batch.ref_logprobs "
                             "(compute them with compute_logprobs(reference_params, ...))")
        batch = batch.replace(ref_logprobs=score(state.base_params, batch))
    m = mask.astype(jnp.float32)
    metrics = {
        "reward_mean": jnp.mean(batch.rewards),
        "reward_std": jnp.std(batch.rewards),
        "response_length": jnp.mean(jnp.sum(m, axis=1)),
        "response_tokens": jnp.sum(m),
    }
    if batch.ref_logprobs is not None:
        kl_old = loss_lib.kl_penalty(batch.old_logprobs, batch.ref_logprobs, cfg.kl_kind)
        metrics["kl_old_ref"] = adv_lib.masked_mean(kl_old, mask)
    if batch.sampler_logprobs is not None:
        gap = jnp.abs(batch.sampler_logprobs - batch.old_logprobs)
        metrics["sampler_logprob_gap"] = adv_lib.masked_mean(gap, mask)
        metrics["sampler_logprob_gap_max"] = jnp.max(jnp.where(mask, gap, 0.0))

    if cfg.algorithm == "grpo":
        if batch.advantages is None:
            seq_adv = adv_lib.group_advantages(batch.rewards, estimator=cfg.adv_estimator, group_size=cfg.group_size)
            batch = batch.replace(advantages=seq_adv)
        adv = batch.advantages
        adv = adv_lib.broadcast_sequence_advantages(adv, mask) if adv.ndim == 1 else jnp.where(mask, adv, 0.0)
        batch = batch.replace(advantages=adv)
    else:
        if batch.values is None:
            batch = batch.replace(values=compute_values(state.critic_params, batch, micro, model_cfg=model_cfg))
        if batch.advantages is None or batch.returns is None:
            kl = None
            if batch.ref_logprobs is not None and cfg.beta != 0:
                kl = loss_lib.kl_penalty(batch.old_logprobs, batch.ref_logprobs, cfg.kl_kind)
            token_rewards = adv_lib.place_outcome_reward(batch.rewards, mask, kl=kl, beta=cfg.beta)
            adv, ret = adv_lib.gae_advantages(token_rewards, batch.values, mask, gamma=cfg.gamma, lam=cfg.lam)
            if cfg.whiten_advantages:
                adv = adv_lib.masked_whiten(adv, mask)
            batch = batch.replace(advantages=adv, returns=ret)
        ret, val = batch.returns, batch.values
        var_ret = adv_lib.masked_var(ret, mask)
        metrics["explained_variance"] = 1.0 - adv_lib.masked_var(ret - val, mask) / jnp.maximum(var_ret, 1e-8)
        metrics["value_mean"] = adv_lib.masked_mean(val, mask)
    metrics["advantage_mean"] = adv_lib.masked_mean(batch.advantages, mask)
    return batch, metrics


def _loss_sums(model_cfg: ModelConfig, cfg: RLConfig, trainable, critic, base, mb: RLBatch):
    """Loss numerators (actor, critic), their counts and Weighted metrics for one micro-batch."""
    t = mb.tokens.shape[1]
    params = trainable if cfg.lora is None else lora_lib.merge(
        jax.lax.stop_gradient(base), trainable, cfg.lora.alpha, cfg.lora.rank)
    logp, ent = _sequence_logprobs(model_cfg, params, mb.tokens, mb.positions, mb.valid, prompt_len=mb.prompt_len,
                                   group=_group(cfg, mb), chunk_size=cfg.logprob_chunk,
                                   temperature=cfg.temperature, return_entropy=True)
    if cfg.entropy_coef == 0:
        ent = jax.lax.stop_gradient(ent)  # metric only: no backward through the entropy
    kw = dict(epsilon_low=cfg.clip_eps, epsilon_high=cfg.clip_eps_high, clip_ratio_c=cfg.clip_ratio_c,
              entropy=ent, entropy_coef=cfg.entropy_coef, agg_mode=cfg.agg_mode, norm_len=t)
    mask = mb.response_mask
    if cfg.algorithm == "grpo":
        loss, metrics = loss_lib.grpo_loss(logp, mb.old_logprobs, mb.ref_logprobs if cfg.beta else None,
                                           mb.advantages, mask, beta=cfg.beta, kl_kind=cfg.kl_kind, **kw)
        return loss, None, metrics
    loss, metrics = loss_lib.ppo_policy_loss(logp, mb.old_logprobs, mb.advantages, mask, **kw)
    values = critic_values(model_cfg, critic, mb.tokens, mb.positions, mb.valid)
    vloss, vmetrics = loss_lib.value_loss(values, mb.values, mb.returns, mask, clip_range=cfg.value_clip,
                                          agg_mode=cfg.agg_mode, norm_len=t)
    metrics.update(vmetrics)
    return loss, vloss, metrics


def _update(model_cfg: ModelConfig, cfg: RLConfig, state: TrainState, batch: RLBatch):
    b = batch.tokens.shape[0]
    group = _group(cfg, batch)
    mini, micro = _sizes(cfg, b, group)
    n_mini, n_micro = b // mini, mini // micro
    batch, batch_metrics = _prepare(model_cfg, cfg, state, batch)
    ppo = cfg.algorithm == "ppo"
    tx, ctx = make_optimizer(cfg), (make_optimizer(cfg, critic=True) if ppo else None)
    base = state.base_params

    def grad_fn(trainable, critic, mb):
        def total(tr, cr):
            loss, vloss, metrics = _loss_sums(model_cfg, cfg, tr, cr, base, mb)
            s = loss.sum + (cfg.vf_coef * vloss.sum if ppo else 0.0)
            return s, (loss.count, None if vloss is None else vloss.count, metrics)
        argnums = (0, 1) if ppo else 0
        (_, (count, vcount, metrics)), grads = jax.value_and_grad(total, argnums=argnums, has_aux=True)(
            trainable, critic)
        g, cg = grads if ppo else (grads, None)
        return g, cg, count, vcount, metrics

    def optimizer_step(carry, row_idx):
        params, opt_state, critic, copt = carry
        micro_idx = row_idx.reshape(n_micro, micro)

        def micro_step(acc, idx):
            mb = jax.tree.map(lambda x: x[idx], batch)
            out = grad_fn(params, critic, mb)
            return jax.tree.map(jnp.add, acc, out), None

        shapes = jax.eval_shape(lambda i: grad_fn(params, critic, jax.tree.map(lambda x: x[i], batch)), micro_idx[0])
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        (g, cg, count, vcount, metrics), _ = jax.lax.scan(micro_step, zeros, micro_idx)
        g = jax.tree.map(lambda x: x / jnp.maximum(count, 1.0), g)
        step_metrics = {"grad_norm": optax.global_norm(g)}
        updates, opt_state = tx.update(g, opt_state, params)
        params = optax.apply_updates(params, updates)
        if ppo:
            cg = jax.tree.map(lambda x: x / jnp.maximum(vcount, 1.0), cg)
            step_metrics["critic_grad_norm"] = optax.global_norm(cg)
            cupdates, copt = ctx.update(cg, copt, critic)
            critic = optax.apply_updates(critic, cupdates)
        return (params, opt_state, critic, copt), (metrics, step_metrics)

    def epoch(carry, key):
        perm = jnp.arange(b)
        if cfg.shuffle and group:   # whole groups move together: a micro-batch holds whole groups
            perm = (jax.random.permutation(key, b // group)[:, None] * group + jnp.arange(group)).reshape(b)
        elif cfg.shuffle:
            perm = jax.random.permutation(key, b)
        return jax.lax.scan(optimizer_step, carry, perm.reshape(n_mini, mini))

    rng, *keys = jax.random.split(state.rng, cfg.epochs + 1)
    carry = (state.params, state.opt_state, state.critic_params, state.critic_opt_state)
    carry, (metrics, step_metrics) = jax.lax.scan(epoch, carry, jnp.stack(keys))
    params, opt_state, critic, copt = carry
    # Weighted metrics: pooled over every micro-batch of the call; step metrics: averaged.
    pooled = loss_lib.finalize(jax.tree.map(lambda x: jnp.sum(x), metrics,
                                            is_leaf=lambda x: isinstance(x, jax.Array)))
    out = dict(batch_metrics)
    out.update(pooled)
    out.update({k: jnp.mean(v) for k, v in step_metrics.items()})
    # For the divergence guard (run/guards.py): the largest step's gradient, how far the
    # trainable weights moved, and whether they (and the critic) are still finite.
    out["grad_norm_max"] = jnp.max(step_metrics["grad_norm"])
    delta = jax.tree.map(lambda new, old: new.astype(jnp.float32) - old.astype(jnp.float32), params, state.params)
    out["update_ratio"] = optax.global_norm(delta) / jnp.maximum(optax.global_norm(state.params), 1e-12)
    finite = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves((params, critic))
              if jnp.issubdtype(x.dtype, jnp.floating)]
    out["params_finite"] = jnp.all(jnp.stack(finite)).astype(jnp.float32) if finite else jnp.float32(1)
    opt_steps = (state.step + 1) * cfg.epochs * n_mini  # optimiser steps done after this call
    out["learning_rate"] = make_schedule(cfg, cfg.learning_rate)(opt_steps - 1)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, rng=rng,
                              critic_params=critic, critic_opt_state=copt)
    return new_state, out


def _update_frozen_apart(model_cfg: ModelConfig, cfg: RLConfig, state: TrainState, base: Any, batch: RLBatch):
    """``_update`` with the frozen base passed as its own, undonated argument: the donated
    state holds no base, so the caller's base arrays (also the reference policy, the frozen
    Answer Agent and the untrained baseline) are never invalidated by donation."""
    new_state, metrics = _update(model_cfg, cfg, state.replace(base_params=base), batch)
    return new_state.replace(base_params=None), metrics


@functools.lru_cache(maxsize=32)
def _single_device_update(model_cfg: ModelConfig, cfg: RLConfig):
    # Shared by every Updater with the same configs, so jax's compile cache is reused.
    return jax.jit(functools.partial(_update_frozen_apart, model_cfg, cfg), donate_argnums=0)


class Updater:
    """``update(state, batch) -> (state, metrics)`` jit-compiled once per batch shape, the
    train state donated. With a mesh, tracing runs under the mesh and logical-axis rules
    (activation constraints), the batch is split on its rows, and the output state keeps
    the input state's shardings."""

    def __init__(self, model_cfg: ModelConfig, cfg: RLConfig, mesh=None,
                 rules: rules_lib.Rules = rules_lib.DEFAULT_RULES):
        self.model_cfg, self.cfg, self.mesh, self.rules = model_cfg, cfg, mesh, rules
        self._jitted = {}

    def shard_batch(self, batch: RLBatch) -> RLBatch:
        if self.mesh is None:
            return batch
        def put(x):
            sh = rules_lib.batch_sharding(self.mesh, x.shape, self.rules)
            if isinstance(x, jax.ShapeDtypeStruct):    # abstract (AOT lowering, memory plans)
                return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh)
            if isinstance(x, jax.Array) and x.sharding == sh:   # placed already (e.g. ref log-probs)
                return x
            # From host values: across processes every process holds the same whole batch.
            return jax.device_put(np.asarray(x), sh)
        return jax.tree.map(put, batch)

    def _fn(self, state):
        key = jax.tree.structure(state)
        if key not in self._jitted:
            fn = functools.partial(_update_frozen_apart, self.model_cfg, self.cfg)
            if self.mesh is None:
                self._jitted[key] = _single_device_update(self.model_cfg, self.cfg)
            else:
                state_sh = jax.tree.map(lambda x: x.sharding, state)
                repl = rules_lib.replicated(self.mesh)
                self._jitted[key] = jax.jit(fn, donate_argnums=0, out_shardings=(state_sh, repl))
        return self._jitted[key]

    def __call__(self, state: TrainState, batch: RLBatch):
        base, trainable = state.base_params, state.replace(base_params=None)
        fn = self._fn(trainable)
        with mesh_lib.mesh_context(self.mesh, self.rules):
            new_state, metrics = fn(trainable, base, self.shard_batch(batch))
        return new_state.replace(base_params=base), metrics

    def lower(self, state, batch):
        base, trainable = state.base_params, state.replace(base_params=None)
        with mesh_lib.mesh_context(self.mesh, self.rules):
            return self._fn(trainable).lower(trainable, base, self.shard_batch(batch))


def make_update_fn(model_cfg: ModelConfig, cfg: RLConfig, mesh=None,
                   rules: rules_lib.Rules = rules_lib.DEFAULT_RULES) -> Updater:
    return Updater(model_cfg, cfg, mesh, rules)


def update_flops(model_cfg: ModelConfig, cfg: RLConfig, batch_rows: int, seq_len: int,
                 score_old: bool = False, score_ref: bool = False) -> float:
    """Model FLOPs of one update call (MaxText convention: 6 N per trained token, 2 N per
    scored token, causal attention at average context T/2; remat recomputation not counted)."""
    per_tok = model_cfg.flops_per_token(context=seq_len // 2)
    tokens = batch_rows * seq_len
    train = 3 * per_tok * tokens * cfg.epochs
    if cfg.algorithm == "ppo":
        train *= 2  # critic of the same size
    scored = (int(score_old) + int(score_ref)) * per_tok * tokens
    return float(train + scored)
