"""Trained Memory-R1 pipelines: the pair of agents (LoRA adapter folders, 5 MB each, or model
names) with the run-config settings they were trained for.

A pipeline folder holds ``pipeline.json``: {"model": the registry preset both agents are
over, "answer_agent" / "memory_manager": an adapter folder relative to the pipeline folder
(``memr1_jax.weights.adapters``) or a model name (a stage that kept its untrained weights),
"settings": dotted run-config keys (the manager's output format, the answer prompt, ...),
"provenance": how each agent was trained}. The package ships one per model in
``memr1_jax/trained/<model>/`` (``--system memory-r1``); ``python -m memr1_jax.pipeline``
writes one for the agents it trains (``--system memory-r1:PATH``).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

ROOT = pathlib.Path(__file__).parent
PIPELINE = "pipeline.json"


@dataclasses.dataclass(frozen=True)
class TrainedPipeline:
    model: str                 # the registry preset the agents are over
    answer_agent: str          # adapter folder (a path) or model name
    memory_manager: str
    settings: dict[str, Any]   # dotted run-config keys the agents were trained with
    provenance: dict[str, Any]


def available() -> list[str]:
    """Registry presets with a shipped trained pipeline."""
    return sorted(p.parent.name for p in ROOT.glob(f"*/{PIPELINE}"))


def load_pipeline(folder) -> TrainedPipeline:
    """The pipeline in ``folder``; errors name the file and what is wrong."""
    folder = pathlib.Path(folder)
    path = folder / PIPELINE
    if not path.is_file():
        raise ValueError(f"{folder}: no {PIPELINE} (not a trained-pipeline folder)")
    try:
        spec = json.loads(path.read_text())
        agents = {k: str(folder / spec[k]) if (folder / spec[k]).is_dir() else spec[k]
                  for k in ("answer_agent", "memory_manager")}
        return TrainedPipeline(model=spec["model"], settings=dict(spec["settings"]),
                               provenance=dict(spec.get("provenance", {})), **agents)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a trained-pipeline file ({e!r})") from None


def write_pipeline(folder, pipeline: TrainedPipeline) -> pathlib.Path:
    """Writes ``pipeline.json`` into ``folder`` (agent paths inside it stored relative)."""
    from memr1_jax.files import atomic_write_text
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rel = lambda p: str(pathlib.Path(p).resolve().relative_to(folder.resolve())) \
        if pathlib.Path(p).is_dir() and pathlib.Path(p).resolve().is_relative_to(folder.resolve()) else str(p)  # noqa: E731
    spec = {**dataclasses.asdict(pipeline), "answer_agent": rel(pipeline.answer_agent),
            "memory_manager": rel(pipeline.memory_manager)}
    atomic_write_text(folder / PIPELINE, json.dumps(spec, indent=1) + "\n")
    return folder / PIPELINE


def trained_pipeline(model: str) -> TrainedPipeline:
    """The shipped pipeline over ``model``; a model without one is a ValueError naming those there are."""
    if pathlib.Path(model).name != model or not (ROOT / model / PIPELINE).is_file():
        raise ValueError(f"no trained Memory-R1 pipeline ships for model {model!r} (there is one for "
                         f"{', '.join(available())}); train one with python -m memr1_jax.pipeline and evaluate it "
                         f"with --system memory-r1:PATH")
    return load_pipeline(ROOT / model)


def pipeline_of_system(system: str, model: str) -> TrainedPipeline:
    """memory-r1: the shipped pipeline over ``model``; memory-r1:PATH: the one in PATH, which
    must be over ``model``."""
    if system == "memory-r1":
        return trained_pipeline(model)
    p = load_pipeline(system.split(":", 1)[1])
    if p.model != model:
        raise ValueError(f"{system}: its agents are over {p.model!r}, the run's model.name is {model!r} "
                         f"(--model {p.model})")
    return p
