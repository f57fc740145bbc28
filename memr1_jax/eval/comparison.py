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
    return _keyed_rows(path, lambda rec: rec["key"], "prediction record")


def _keyed_rows(path: pathlib.Path, key, what: str) -> dict:
    """A JSONL file's records by ``key(record)``, a later line replacing an earlier one; a bad
    line is a ValueError naming the file, the line and ``what`` it should be."""
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rec = json.loads(line)
                out[key(rec)] = rec
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{n}: not a {what} ({e})") from None
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


VALIDATION_SCORES = {"f1_per_item": "validation F1", "gold_per_item": "gold agreement"}


def read_validation(run: pathlib.Path) -> list[dict]:
    """A training run's validation rows (``validation.jsonl``), one per validated step, in order;
    a rerun's row of a step replaces the earlier one."""
    path = pathlib.Path(run) / "validation.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run}: no validation.jsonl (not a training run folder)")
    rows = _keyed_rows(path, lambda row: int(row["step"]), "validation row")
    return [rows[k] for k in sorted(rows)]


def validation_table(run: pathlib.Path) -> str:
    """Markdown: each validated step's per-item scores against step 0's (x100, paired bootstrap);
    rows written before per-item scores were kept show their means only."""
    rows = read_validation(run)
    keys = [k for k in VALIDATION_SCORES if any(k in r for r in rows)]
    head = ["step", "n"] + [f"{VALIDATION_SCORES[k]}, minus step {rows[0]['step']} [95%]" for k in keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["step"]), str(r.get("n", ""))]
        for k in keys:
            mean = 100 * sum(r[k]) / len(r[k]) if r.get(k) else None
            if mean is None:
                cells.append("-")
            elif r is rows[0] or k not in rows[0] or len(rows[0][k]) != len(r[k]):
                cells.append(f"{mean:.2f}")
            else:
                cells.append(f"{mean:.2f} ({interval(paired_bootstrap([100 * x for x in r[k]], [100 * x for x in rows[0][k]]))})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
