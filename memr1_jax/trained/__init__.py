"""The trained Memory-R1 agents that ship with the package: LoRA adapters (5 MB each) over a
registry model, with the pipeline settings they were trained for.

``<model>/pipeline.json`` names the Memory Manager's and the Answer Agent's adapter folders
(``memr1_jax.weights.adapters``), the run-config keys they need (``settings``: the manager's
output format, the answer prompt, ...) and how each was trained (``provenance``: config,
command, validation). ``python -m memr1_jax.evaluate --system memory-r1`` evaluates them.
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
    model: str                     # the registry preset the adapters were trained over
    answer_agent: pathlib.Path     # adapter folder
    memory_manager: pathlib.Path   # adapter folder
    settings: dict[str, Any]       # dotted run-config keys the agents were trained with
    provenance: dict[str, Any]


def available() -> list[str]:
    """Registry presets with a trained pipeline."""
    return sorted(p.parent.name for p in ROOT.glob(f"*/{PIPELINE}"))


def trained_pipeline(model: str) -> TrainedPipeline:
    """The trained pipeline over ``model``; a model without one is a ValueError naming those there are."""
    path = ROOT / pathlib.Path(model).name / PIPELINE
    if pathlib.Path(model).name != model or not path.is_file():
        raise ValueError(f"no trained Memory-R1 pipeline ships for model {model!r} (there is one for "
                         f"{', '.join(available())}); train one (README: the staged pipeline) and evaluate it with "
                         f"--system checkpoint:PATH --manager-model PATH")
    try:
        spec = json.loads(path.read_text())
        return TrainedPipeline(model=spec["model"], answer_agent=path.parent / spec["answer_agent"],
                               memory_manager=path.parent / spec["memory_manager"], settings=dict(spec["settings"]),
                               provenance=dict(spec.get("provenance", {})))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a trained-pipeline file ({e!r})") from None
