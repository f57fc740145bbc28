"""Hooks on the training loop, in the manner of levanter's ``TrainerHooks``: each runs every
``every`` steps (and on a forced call, e.g. the last step), in the order they were added."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable


@dataclasses.dataclass
class StepInfo:
    step: int
    state: Any            # the train state after this step's update
    metrics: dict         # the update's scalars and the task's step metrics
    timings: dict         # seconds (kept out of metrics.jsonl, which must be reproducible)
    episodes: list        # this step's rollouts


class Hooks:
    def __init__(self):
        self._hooks: list[tuple[Callable[[StepInfo], None], int]] = []

    def add(self, fn: Callable[[StepInfo], None], every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"hook {getattr(fn, '__name__', fn)}: every={every} must be >= 1")
        self._hooks.append((fn, every))

    def run(self, info: StepInfo, force: bool = False) -> None:
        for fn, every in self._hooks:
            if force or info.step % every == 0:
                fn(info)
