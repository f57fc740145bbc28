"""RL configuration, the train state pytree, optimizers and train-state shardings."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from memr1_jax.models import decoder as dec
from memr1_jax.models.config import ModelConfig
from memr1_jax.parallel import rules as rules_lib
from memr1_jax.rl import lora as lora_lib

ALGORITHMS = ("grpo", "ppo")
SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class RLConfig:
    """Everything the update step needs besides the model config. Defaults follow the
    Memory-R1 paper (actor lr 1e-6, critic lr 1e-5, constant schedule with warmup)."""
    algorithm: str = "grpo"            # "grpo": KL in loss, group advantages; "ppo": GAE, KL in reward
    # optimiser (AdamW + global-norm clipping); warmup/total are counted in optimiser steps
    learning_rate: float = 1e-6
    critic_learning_rate: float = 1e-5
    schedule: str = "constant"         # "constant" (linear warmup then flat) or "cosine"
    warmup_steps: int = 0
    total_steps: int = 1000            # cosine decay length
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    max_grad_norm: float | None = 1.0
    # batching: rows per optimiser step and per gradient micro-batch (None: whole batch)
    epochs: int = 1
    mini_batch_size: int | None = None
    micro_batch_size: int | None = None
    shuffle: bool = True
    logprob_micro_batch: int | None = None   # rows per forward when scoring (None: micro_batch_size)
    logprob_chunk: int = 256                 # sequence chunk of the LM head / log-softmax
    # Batches that declare their prompt length (pack_episodes does): each group's prompt runs
    # once and the head on response positions only (update.response_logprobs). False: the full
    # pass on every row (the plain path, kept for comparison and for equivalence tests).
    shared_prompt: bool = True
    temperature: float = 1.0                 # sampling temperature the log-probs describe
    # losses
    clip_eps: float = 0.2
    clip_eps_high: float | None = None
    clip_ratio_c: float | None = None
    beta: float = 0.04                 # KL coefficient (GRPO: in the loss; PPO: in the reward)
    kl_kind: str = "k3"
    entropy_coef: float = 0.0
    agg_mode: str = "token-mean"
    # GRPO advantages (rewards [B] ordered group-major, group_size samples per prompt)
    group_size: int = 1
    adv_estimator: str = "grpo"
    # PPO
    gamma: float = 1.0
    lam: float = 0.95
    value_clip: float | None = 0.2
    vf_coef: float = 1.0
    whiten_advantages: bool = True
    # LoRA (None: full fine-tuning)
    lora: lora_lib.LoraConfig | None = None

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"RLConfig.algorithm={self.algorithm!r}: expected one of {ALGORITHMS}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"RLConfig.schedule={self.schedule!r}: expected one of {SCHEDULES}")
        for name in ("epochs", "group_size", "logprob_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"RLConfig.{name}={getattr(self, name)}: must be >= 1")
        for name in ("mini_batch_size", "micro_batch_size", "logprob_micro_batch"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"RLConfig.{name}={v}: must be >= 1 or None")
        if isinstance(self.lora, dict):
            object.__setattr__(self, "lora", lora_lib.LoraConfig(**self.lora))

    def replace(self, **kw) -> "RLConfig":
        return dataclasses.replace(self, **kw)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RLConfig":
        d = json.loads(text)
        if d.get("lora") is not None:
            d["lora"] = lora_lib.LoraConfig(**{**d["lora"], "targets": tuple(map(tuple, d["lora"]["targets"]))})
        return cls(**d)


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training. ``params`` are the *trainable* actor
    parameters: the full tree, or LoRA adapters with the frozen ``base_params``."""
    step: jax.Array                    # int32: number of completed update() calls
    params: Any
    opt_state: Any
    rng: jax.Array                     # uint32[2] raw PRNG key (shuffling)
    base_params: Any = None            # LoRA only: frozen base = reference policy
    critic_params: Any = None          # PPO only: ValueModel params
    critic_opt_state: Any = None


def _decay_mask(params):
    # Decay matrices only; norms, biases and the scalar value bias are left alone.
    return jax.tree.map(lambda x: np.ndim(x) >= 2, params)


def make_schedule(cfg: RLConfig, lr: float) -> optax.Schedule:
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, lr, max(cfg.warmup_steps, 0), max(cfg.total_steps, cfg.warmup_steps + 1), lr * cfg.min_lr_ratio)
    if cfg.warmup_steps > 0:
        return optax.join_schedules(
            [optax.linear_schedule(0.0, lr, cfg.warmup_steps), optax.constant_schedule(lr)], [cfg.warmup_steps])
    return optax.constant_schedule(lr)


def make_optimizer(cfg: RLConfig, critic: bool = False) -> optax.GradientTransformation:
    lr = cfg.critic_learning_rate if critic else cfg.learning_rate
    parts = []
    if cfg.max_grad_norm is not None:
        parts.append(optax.clip_by_global_norm(cfg.max_grad_norm))
    parts.append(optax.adamw(make_schedule(cfg, lr), b1=cfg.adam_b1, b2=cfg.adam_b2, eps=cfg.adam_eps,
                             weight_decay=cfg.weight_decay, mask=_decay_mask))
    return optax.chain(*parts)


def init_critic_params(model_cfg: ModelConfig, actor_params: Any) -> dict:
    """Critic = a copy of the actor backbone with a zero scalar head (values start at 0)."""
    backbone = jax.tree.map(lambda x: jnp.array(x, copy=True), actor_params)
    dt = model_cfg.weight_dtype
    return {"backbone": backbone, "value_head": jnp.zeros((model_cfg.embed_dim,), dt),
            "value_bias": jnp.zeros((), dt)}


def init_train_state(model_cfg: ModelConfig, cfg: RLConfig, params: Any, rng: jax.Array,
                     critic_params: Any = None) -> TrainState:
    """A fresh train state on the default device(s); shard it with ``shard_train_state``.
    rng: a raw uint32[2] key (``jax.random.PRNGKey``)."""
    rng = jnp.asarray(rng, jnp.uint32)
    rng, lora_rng = jax.random.split(rng)
    if cfg.lora is not None:   # the base is passed to the update undonated (rl.update.Updater)
        base, trainable = params, lora_lib.init_adapters(params, cfg.lora, lora_rng)
    else:
        # Full fine-tuning trains a copy: the update donates the state, and the caller's
        # params stay the reference policy / untrained baseline.
        base, trainable = None, jax.tree.map(lambda x: jnp.array(x, copy=True), params)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=trainable,
                       opt_state=make_optimizer(cfg).init(trainable), rng=rng, base_params=base)
    if cfg.algorithm == "ppo":
        critic = critic_params if critic_params is not None else init_critic_params(model_cfg, params)
        state = state.replace(critic_params=critic, critic_opt_state=make_optimizer(cfg, critic=True).init(critic))
    return state


# ------------------------------------------------------------------------ shardings
def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)


def train_state_shardings(model_cfg: ModelConfig, cfg: RLConfig, state: Any, mesh: Mesh,
                          rules: rules_lib.Rules = rules_lib.DEFAULT_RULES) -> TrainState:
    """NamedShardings for every leaf of ``state`` (arrays or ShapeDtypeStructs).

    Parameters follow the model's logical axes through ``rules``; optimizer states are
    matched leaf by leaf to the parameters they mirror (derived from ``eval_shape`` of the
    optimizer init, so they are sharded before the first step); scalars are replicated."""
    abstract_boxed = dec.abstract_params(model_cfg)
    full_sh = rules_lib.boxed_shardings(abstract_boxed, mesh, rules)
    full_abs = nn.meta.unbox(abstract_boxed)
    repl = NamedSharding(mesh, P())
    if cfg.lora is not None:
        logical = lora_lib.adapter_logical_axes(state.params, nn.get_partition_spec(abstract_boxed), cfg.lora)
        params_sh = rules_lib.logical_to_sharding(logical, _abstract(state.params), mesh, rules)
        base_sh = full_sh
    else:
        params_sh, base_sh = full_sh, None
    opt_abs = jax.eval_shape(make_optimizer(cfg).init, _abstract(state.params))
    opt_sh = rules_lib.match_shardings(opt_abs, _abstract(state.params), params_sh, mesh)
    critic_sh = critic_opt_sh = None
    if state.critic_params is not None:
        value_head_sh = rules_lib.logical_to_sharding(
            P("embed"), jax.ShapeDtypeStruct((model_cfg.embed_dim,), jnp.float32), mesh, rules)
        critic_sh = {"backbone": full_sh, "value_head": value_head_sh, "value_bias": repl}
        critic_abs = {"backbone": full_abs, "value_head": jax.ShapeDtypeStruct((model_cfg.embed_dim,), jnp.float32),
                      "value_bias": jax.ShapeDtypeStruct((), jnp.float32)}
        copt_abs = jax.eval_shape(make_optimizer(cfg, critic=True).init, critic_abs)
        critic_opt_sh = rules_lib.match_shardings(copt_abs, critic_abs, critic_sh, mesh)
    return TrainState(step=repl, params=params_sh, opt_state=opt_sh, rng=repl, base_params=base_sh,
                      critic_params=critic_sh, critic_opt_state=critic_opt_sh)


def shard_train_state(state: TrainState, shardings: TrainState) -> TrainState:
    return jax.device_put(state, shardings)


def init_sharded_train_state(model_cfg: ModelConfig, cfg: RLConfig, params: Any, rng: jax.Array,
                             mesh: Mesh, rules: rules_lib.Rules = rules_lib.DEFAULT_RULES,
                             critic_params: Any = None) -> TrainState:
    """Like ``init_train_state`` but every leaf is created directly with its target
    sharding: parameters are placed first, then the optimizer states are initialised by
    a jit whose out_shardings come from ``eval_shape`` (no replicated copy, and the update
    step compiles once)."""
    abstract_state = jax.eval_shape(
        lambda p, r, c: init_train_state(model_cfg, cfg, p, r, c), _abstract(params),
        jax.ShapeDtypeStruct((2,), jnp.uint32), None if critic_params is None else _abstract(critic_params))
    sh = train_state_shardings(model_cfg, cfg, abstract_state, mesh, rules)
    full_sh = rules_lib.boxed_shardings(dec.abstract_params(model_cfg), mesh, rules)
    params = jax.device_put(params, full_sh)
    if critic_params is not None:
        critic_params = jax.device_put(critic_params, sh.critic_params)
    init = jax.jit(lambda p, r, c: init_train_state(model_cfg, cfg, p, r, c), out_shardings=sh)
    return init(params, jnp.asarray(rng, jnp.uint32), critic_params)
