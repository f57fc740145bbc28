"""Paired comparison of evaluation runs: per-question scores of the questions two runs both
answered, the mean difference with a paired bootstrap 95% interval, wins and losses."""

from __future__ import annotations

import json
import pathlib

from memr1_jax.eval.metrics import paired_bootstrap

METRICS = ("f1", "b1", "em")


def read_predictions(run: pathlib.Path) -> dict[str, dict]:
    """The run folder's prediction records by question key (a later line of a key replaces an
    earlier one); errors name the file and line."""
    path = pathlib.Path(run) / "predictions.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run}: no predictions.jsonl (not an evaluation run folder)")
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rec = json.loads(line)
                out[rec["key"]] = rec
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{n}: not a prediction record ({e})") from None
    return out


def paired(first: dict[str, dict], other: dict[str, dict], metric: str = "f1") -> dict | None:
    """``paired_bootstrap`` of ``first - other`` on ``metric`` (x100) over their shared questions;
    None when they share none."""
    keys = sorted(set(first) & set(other))
    if not keys:
        return None
    return paired_bootstrap([100 * first[k][metric] for k in keys], [100 * other[k][metric] for k in keys])


def interval(r: dict) -> str:
    return f"{r['mean']:+.2f} [{r['lo']:+.2f}, {r['hi']:+.2f}]"
