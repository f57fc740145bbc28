"""What a training task is, and the backbone both tasks build on.

A task owns everything agent-specific: its training items, rollouts and reward, its
validation score and its final evaluation. The trainer (``memr1_jax.train``) holds none of
it: it draws items, asks the task for episodes, packs and updates.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Callable, Protocol, Sequence

from memr1_jax.agents.llm import ChatLLM
from memr1_jax.agents.rollout import Episode
from memr1_jax.config import RunConfig
from memr1_jax.data import default_split, load_conversations
from memr1_jax.data.locomo import Split
from memr1_jax.memory import Retriever
from memr1_jax.memory.encoder import make_encoder
from memr1_jax.run.models import build_mesh, load_chat_model
from memr1_jax.sampling.sampler import SamplingConfig

Log = Callable[[str], None]


@dataclasses.dataclass
class Backbone:
    """Loaded once per run. ``llm.params`` are the pretrained weights: the frozen base of
    LoRA, the reference policy and the untrained baseline. The update never donates them
    (``rl.update.Updater`` passes the base as a separate argument; full fine-tuning trains
    a copy), so they stay valid for the whole run."""
    cfg: RunConfig
    llm: ChatLLM                       # llm.mesh: the run's device mesh (None: one device)
    encoder: Any
    retriever: Retriever
    split: Split

    def with_params(self, params: Any) -> ChatLLM:
        return dataclasses.replace(self.llm, params=params)

    def sampling(self, temperature: float) -> SamplingConfig:
        # scaled_logprobs: the sampler reports log softmax(logits / T), the behaviour policy's
        # log-probs, so the update can use them as old log-probs at any temperature.
        return SamplingConfig(temperature=temperature, scaled_logprobs=temperature > 0)


def load_backbone(cfg: RunConfig) -> Backbone:
    llm = load_chat_model(cfg.model.name, cfg, build_mesh(cfg))
    split = default_split(load_conversations(cfg.data.path, cfg.data.format), cfg.data.train_ids,
                          cfg.data.validation_ids)
    if not split.train or not split.validation:
        ids = ", ".join(c.id for c in split.all)
        raise ValueError(f"data.path={cfg.data.path!r}: training needs train and validation conversations; "
                         f"choose them with data.train_ids and data.validation_ids (the data has {ids:.300})")
    if cfg.data.facts == "extract":
        split = _extracted_split(cfg, llm, split)
    return Backbone(cfg, llm, make_encoder(cfg.model.encoder), Retriever(), split)


def _extracted_split(cfg: RunConfig, llm, split):
    """The train and validation conversations with facts extracted from their dialogue (by
    data.extract_model or the untrained backbone), cached in data.facts_cache."""
    from memr1_jax.eval.run import extracted
    extractor = load_chat_model(cfg.data.extract_model, cfg, llm.mesh) if cfg.data.extract_model else llm
    train = extracted(cfg, split.train, extractor, pathlib.Path(cfg.data.facts_cache), progress=False)
    val = extracted(cfg, split.validation, extractor, pathlib.Path(cfg.data.facts_cache), progress=False)
    return dataclasses.replace(split, train=train, validation=val)


class Task(Protocol):
    backbone: Backbone
    train_items: list                  # what a step draws rollout.questions_per_step of
    response_len: int                  # the policy's max_new_tokens (one update shape)

    def rollouts(self, params: Any, items: Sequence[Any], rng, group: int,
                 temperature: float) -> list[Episode]:
        """``group`` sampled episodes per item, group-major, each with its reward."""

    def step_metrics(self, episodes: Sequence[Episode]) -> dict[str, float]:
        """Task-specific means logged with the update's metrics."""

    def validate(self, params: Any) -> dict:
        """Greedy policy on the validation items: {"score": ..., "em", "f1", "n", ...};
        the highest score selects the exported checkpoint."""

    def final_evaluation(self, params: Any, run_dir: pathlib.Path) -> dict[str, dict]:
        """{tag: evaluation table} of the trained params (and the untrained base)."""


def final_eval_config(cfg: RunConfig, run_dir: pathlib.Path, tag: str, keys: dict | None = None) -> RunConfig:
    """The run config of one final evaluation: the base pipeline on ``cfg.eval.split`` into
    ``<run>/eval_<tag>``, with ``keys`` set."""
    from memr1_jax.config import override
    return override(cfg, {"eval.system": "base", "eval.run_dir": str(run_dir / f"eval_{tag}"), **(keys or {})})


def mean_em_f1(infos: Sequence[dict]) -> dict[str, float]:
    import numpy as np
    return {"em_mean": float(np.mean([i["em"] for i in infos])), "f1_mean": float(np.mean([i["f1"] for i in infos]))}
