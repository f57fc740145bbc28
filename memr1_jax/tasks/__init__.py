"""Training tasks: the Answer Agent and the Memory Manager (see ``tasks.base.Task``)."""

from __future__ import annotations

import pathlib

from memr1_jax.tasks.answer import AnswerTask
from memr1_jax.tasks.base import Backbone, Task, load_backbone
from memr1_jax.tasks.manager import ManagerTask

TASKS = {"answer": AnswerTask, "manager": ManagerTask}


def make_task(backbone: Backbone, log, run_dir: pathlib.Path | None = None) -> Task:
    return TASKS[backbone.cfg.task.agent](backbone, log, run_dir)


__all__ = ["AnswerTask", "Backbone", "ManagerTask", "TASKS", "Task", "load_backbone", "make_task"]
