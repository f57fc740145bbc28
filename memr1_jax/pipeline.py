"""``python -m memr1_jax.pipeline --config FILE``: the paper's staged training and its evaluation
in one command.

    python -m memr1_jax.pipeline --config configs/pipelines/smollm2_locomo_cpu.py --config.data.path=../shared/data/locomo10
    python -m memr1_jax.pipeline --config FILE --run-dir runs/pipeline/<run>    # resume: the same folder
    python -m memr1_jax.pipeline --config FILE --config.manager.steps=2 --config.evaluation.eval.limit=40

FILE defines ``get_stages()`` returning {"manager": RunConfig, "answer": RunConfig,
"evaluation": RunConfig}. ``--config.KEY=VALUE`` sets KEY in every stage;
``--config.<stage>.KEY=VALUE`` in one. The stages, each in a folder of the run:

1. ``manager/``: the Memory Manager (task.agent=manager) trained with its frozen Answer Agent.
2. ``answer/``: the Answer Agent (task.agent=answer) trained on banks the stage-1 manager builds
   (task.bank=llm, task.bank_manager_model = its adapters, task.manager = stage 1's).
3. ``trained/pipeline.json``: both agents and their settings (``memr1_jax.trained``), then
   ``evaluation/``: every system of the evaluation stage's eval.system on the same questions,
   ``memory-r1`` standing for this run's agents, compared with paired bootstrap intervals
   (``memr1_jax.eval.systems``).

A stage whose folder holds a finished run (summary.json) is not run again; one interrupted
resumes from its last checkpoint, and the evaluations resume per question.
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import sys

from memr1_jax import compile_cache
from memr1_jax.config import ConfigError, RunConfig, call_config_function, override, split_config_args, to_dict
from memr1_jax.data.locomo import LocomoFormatError
from memr1_jax.eval.systems import evaluate_systems
from memr1_jax.files import FolderInUse, atomic_write_text, safe_name
from memr1_jax.run.guards import EXIT_CODE as DIVERGED_EXIT_CODE
from memr1_jax.run.guards import TrainingDiverged
from memr1_jax.run.preemption import EXIT_CODE as PREEMPTED_EXIT_CODE
from memr1_jax.run.preemption import INTERRUPT_EXIT_CODE
from memr1_jax.trained import TrainedPipeline, load_pipeline, write_pipeline
from memr1_jax.train import train

STAGES = ("manager", "answer", "evaluation")


def load_stages(path: str) -> dict[str, RunConfig]:
    stages = call_config_function(path, "get_stages", "a pipeline config")
    if not isinstance(stages, dict) or set(stages) != set(STAGES) or \
            not all(isinstance(c, RunConfig) for c in stages.values()):
        raise ConfigError(f"--config {path}: get_stages() must return {{{', '.join(map(repr, STAGES))}: RunConfig}}")
    return stages


def apply_overrides(stages: dict[str, RunConfig], dotted: list[tuple[str, str]]) -> dict[str, RunConfig]:
    """``stage.KEY`` sets KEY in that stage, any other KEY in every stage."""
    out = dict(stages)
    for key, value in dotted:
        head, _, rest = key.partition(".")
        names = [head] if head in STAGES and rest else list(STAGES)
        k = rest if head in STAGES and rest else key
        for name in names:
            out[name] = override(out[name], {k: value}, from_strings=True)
    return out


def linked(stages: dict[str, RunConfig], root: pathlib.Path, manager_agent: str | None = None) -> dict[str, RunConfig]:
    """The stages with the links between them set (see the module docstring)."""
    m = override(stages["manager"], {"task.agent": "manager", "run_dir": str(root / "manager"),
                                     "eval.after_training": False})
    a = override(stages["answer"], {"task.agent": "answer", "run_dir": str(root / "answer"),
                                    "eval.after_training": False, "task.bank": "llm",
                                    "task.bank_manager_model": manager_agent or "", "task.manager": m.task.manager})
    for name, c in (("answer", a), ("evaluation", stages["evaluation"])):
        if c.model.name != m.model.name:
            raise ConfigError(f"pipeline: the {name} stage's model.name {c.model.name!r} differs from the manager "
                              f"stage's {m.model.name!r}")
    return {"manager": m, "answer": a, "evaluation": stages["evaluation"]}


class Preempted(Exception):
    """A training stage stopped on SIGTERM or Ctrl-C after saving a checkpoint (args: its run folder,
    the exit code); rerun to resume."""


def _trained_agent(cfg: RunConfig) -> str:
    """A stage's selected agent: its adapter folder, or the untrained model when validation kept step 0."""
    summary = pathlib.Path(cfg.run_dir) / "summary.json"
    done = summary.is_file() and not json.loads(summary.read_text()).get("preempted")
    if not done and (out := train(cfg))["preempted"]:
        raise Preempted(cfg.run_dir, out["exit_code"])
    return json.loads(summary.read_text()).get("adapter") or cfg.model.name


def run_pipeline(stages: dict[str, RunConfig], root: pathlib.Path, dotted: list[tuple[str, str]] = ()) -> str:
    """Runs (or resumes) the three stages of the config file's ``stages`` in ``root``, with the
    command line's ``dotted`` overrides; returns the comparison table."""
    file_stages, stages = stages, apply_overrides(stages, list(dotted))
    s = linked(stages, root)
    print(f"== stage 1: Memory Manager ({root / 'manager'})")
    manager = _trained_agent(s["manager"])
    s = linked(stages, root, manager)
    print(f"== stage 2: Answer Agent on the stage-1 manager's banks ({root / 'answer'})")
    answer = _trained_agent(s["answer"])
    m, a = s["manager"].task.manager, s["answer"].task.answer
    settings = {f"task.manager.{k}": getattr(m, k) for k in ("output", "constrained", "max_facts_per_step",
                                                             "max_new_tokens", "retrieve_k", "min_score")}
    settings.update({f"task.answer.{k}": getattr(a, k) for k in ("prompt", "k_per_speaker", "max_new_tokens",
                                                                 "distill")})
    folder = root / "trained"
    write_pipeline(folder, TrainedPipeline(
        model=s["manager"].model.name, answer_agent=answer, memory_manager=manager, settings=settings,
        provenance={name: {"run_dir": s[name].run_dir, "config": to_dict(s[name])} for name in ("manager", "answer")}))
    print(f"== stage 3: evaluation ({root / 'evaluation'})")
    cfgs = []
    for system in s["evaluation"].eval.systems:
        name = f"memory-r1:{folder}" if system == "memory-r1" else system
        c = stages["evaluation"]
        if name.startswith("memory-r1:"):   # the agents' settings, beneath the command line's
            own = settings if system == "memory-r1" else load_pipeline(name.split(":", 1)[1]).settings
            trained = override(file_stages["evaluation"], own)
            c = apply_overrides({**file_stages, "evaluation": trained}, list(dotted))["evaluation"]
        cfgs.append(override(c, {"eval.system": name, "eval.run_dir": str(root / "evaluation" / safe_name(system))}))
    table = evaluate_systems(cfgs)
    atomic_write_text(root / "comparison.md", table + "\n")
    return table


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        path, dotted, show, rest = split_config_args(argv)
        run_dir = None
        if rest[:1] == ["--run-dir"] and len(rest) == 2:
            run_dir = pathlib.Path(rest[1])
        elif rest:
            raise ConfigError(f"unknown argument {rest[0]!r} (expected --config FILE, --config.KEY=VALUE, "
                              "--run-dir DIR, --print_config)")
        if not path:
            raise ConfigError("--config FILE is required (a pipeline config, e.g. configs/pipelines/smollm2_locomo_cpu.py)")
        stages = load_stages(path)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        root = run_dir or pathlib.Path("runs") / "pipeline" / f"{pathlib.Path(path).stem}-{stamp}"
        if show:
            linked_stages = linked(apply_overrides(stages, dotted), root, "<stage-1 adapter>")
            print(json.dumps({k: to_dict(v) for k, v in linked_stages.items()}, indent=1))
            return 0
        compile_cache.enable()
        table = run_pipeline(stages, root, dotted)
    except TrainingDiverged as e:
        print(f"error: training stopped at {e}", file=sys.stderr)
        return DIVERGED_EXIT_CODE
    except Preempted as e:
        print(f"stopped: stage {e.args[0]} saved a checkpoint; rerun with --run-dir {root} to resume", file=sys.stderr)
        return e.args[1] if len(e.args) > 1 else PREEMPTED_EXIT_CODE
    except (ConfigError, LocomoFormatError, FileNotFoundError, FolderInUse, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: rerun with --run-dir {root} to resume from the last checkpoints", file=sys.stderr)
        return INTERRUPT_EXIT_CODE
    print(f"\nthe staged pipeline ({root}) against its baselines:\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
