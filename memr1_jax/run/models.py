"""The models of a run (training or evaluation): its device mesh and how a named model is
loaded into it (precision, sharding, batch and prompt limits from the run config)."""

from __future__ import annotations

import dataclasses

from memr1_jax.agents.llm import ChatLLM
from memr1_jax.config import RunConfig


def build_mesh(cfg: RunConfig):
    """The run's device mesh, or None when it spans one device (the single-device path)."""
    from memr1_jax.parallel.mesh import make_mesh, mesh_devices
    devices = mesh_devices(cfg.mesh)
    return make_mesh(cfg.mesh, devices) if len(devices) > 1 else None


def load_chat_model(name: str, cfg: RunConfig, mesh=None) -> ChatLLM:
    """A model of the run (the backbone, a bank builder, a frozen Answer Agent): a registry
    name or model folder, in the run's precision, sharded over ``mesh``."""
    llm = ChatLLM.from_registry(name, mesh=mesh, rules=cfg.mesh.rules, dtype=cfg.model.param_dtype,
                                batch_size=cfg.rollout.gen_batch_size, max_prompt_tokens=cfg.rollout.max_prompt_tokens or None,
                                speculative_tokens=cfg.rollout.speculative_tokens)
    m = cfg.model
    return dataclasses.replace(llm, cfg=llm.cfg.replace(dtype=m.dtype, remat=m.remat, attention=m.attention,
                                                        attention_block=m.attention_block))
