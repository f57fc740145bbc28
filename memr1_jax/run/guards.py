"""Checks that stop a training run before a bad step is saved: non-finite rewards (before
the update), non-finite metrics or weights and the divergence limits of ``cfg.guard``
(after it). The trainer raises ``TrainingDiverged`` before the step's checkpoint, so the
last checkpoint on disk is the last good step and nothing diverged is ever exported."""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import numpy as np

EXIT_CODE = 3


class TrainingDiverged(RuntimeError):
    """The run stopped at ``step`` because of ``reason``."""

    def __init__(self, step: int, reason: str):
        self.step, self.reason = step, reason
        super().__init__(f"step {step}: {reason}")


def check_rewards(step: int, rewards: Sequence[float], items: Sequence[str] = ()) -> None:
    bad = [i for i, r in enumerate(rewards) if not math.isfinite(r)]
    if bad:
        where = f" (first: {items[bad[0]]})" if items else ""
        raise TrainingDiverged(step, f"{len(bad)} of {len(rewards)} rollout rewards are not finite "
                                     f"({rewards[bad[0]]}){where}; check the reward settings "
                                     "(task.answer / task.manager weights)")


def check_update(step: int, metrics: dict, guard) -> None:
    """``metrics``: the update's scalars; ``guard``: a ``config.GuardSection``."""
    nonfinite = sorted(k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v))
    if nonfinite:
        raise TrainingDiverged(step, f"non-finite {', '.join(nonfinite)} after the update")
    if metrics.get("params_finite", 1.0) < 1.0:
        raise TrainingDiverged(step, "the update produced non-finite weights")
    limits = (("update_ratio", guard.max_update_ratio, "guard.max_update_ratio"),
              ("grad_norm_max", guard.max_grad_norm, "guard.max_grad_norm"),
              ("ppo_kl", guard.max_kl, "guard.max_kl"))
    for key, limit, name in limits:
        if limit and key in metrics and abs(metrics[key]) > limit:
            raise TrainingDiverged(step, f"{key} = {metrics[key]:.4g} exceeds {name} = {limit:g} "
                                         "(learning rate too high?); raise the limit or set it to 0 to go on")


def check_finite_weights(params: Any, what: str) -> None:
    """Refuses to write weights holding NaN / inf (``what`` names the destination)."""
    bad = [jax.tree_util.keystr(path) for path, x in jax.tree_util.tree_leaves_with_path(params)
           if np.issubdtype(np.asarray(x).dtype, np.floating) and not np.isfinite(np.asarray(x)).all()]
    if bad:
        raise ValueError(f"{what}: {len(bad)} weight tensors hold NaN or inf (e.g. {bad[0]}); not written")
