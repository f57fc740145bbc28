"""Several systems evaluated on the same questions and compared: what
``python -m memr1_jax.evaluate --system memory-r1,memory-r1@add-all,base,rag`` (its default) prints last.

Each system is one ``evaluate`` run in its own folder (resumable as ever); the table gives
per-type and overall F1, BLEU-1, what each manager left in its banks, and the paired
bootstrap 95% interval of the first system's F1 minus each other's (10,000 resamples over
the questions, ``memr1_jax.eval.comparison``).
"""

from __future__ import annotations

import json
import pathlib

from memr1_jax.config import RunConfig, override
from memr1_jax.eval.comparison import interval, paired, read_predictions
from memr1_jax.eval.run import evaluate, pipeline, run_folder
from memr1_jax.files import atomic_write_text

LABELS = {"memory-r1": "memory-r1 (trained agents)", "base": "base (untrained agents)",
          "memory-r1@add-all": "memory-r1's Answer Agent on add-all banks"}


def evaluate_systems(cfgs: list[RunConfig], progress: bool = True) -> str:
    """Evaluates each config (one system each) in turn, then returns the comparison table
    (Markdown), also written to ``comparison.md`` in the first system's run folder."""
    runs = []
    for cfg in cfgs:
        print(f"\n== {system_label(cfg)}")
        cfg = override(cfg, {"eval.run_dir": str(run_folder(cfg))})
        evaluate(cfg, progress)
        runs.append((system_label(cfg), pathlib.Path(cfg.eval.run_dir)))
    table = comparison_table(runs)
    if len(runs) > 1:
        atomic_write_text(runs[0][1] / "comparison.md", table + "\n")
    return table


def system_label(cfg: RunConfig) -> str:
    """eval.system, with @MANAGER where its banks are not built by the LLM manager."""
    banks = pipeline(cfg) in ("base", "mem0") and cfg.eval.manager != "llm"
    return cfg.eval.system + (f"@{cfg.eval.manager}" if banks else "")


def comparison_table(runs: list[tuple[str, pathlib.Path]]) -> str:
    """Markdown: a row per (system, run folder); differences are the first row's minus each."""
    metrics = [json.loads((folder / "metrics.json").read_text()) for _, folder in runs]
    preds = [read_predictions(folder) for _, folder in runs]
    types = [t for t in metrics[0]["results"] if t != "overall"]
    first = runs[0][0]
    head = (["system"] + [f"{t} F1" for t in types] + ["F1", "B1", "memories (ADD / UPDATE / DELETE)",
                                                         "observations kept", f"{first} F1 minus this [95%]",
                                                         "wins / losses"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (system, _), m, p in zip(runs, metrics, preds):
        res = m["results"]
        cells = [f"{LABELS.get(system, system)} (n={res['overall']['count']})"]
        cells += [_pct(res.get(t, {}).get("f1")) for t in types]
        cells += [_pct(res["overall"]["f1"]), _pct(res["overall"]["b1"])]
        b = m.get("banks")
        cells += [f"{b['memories']} ({b['adds']} / {b['updates']} / {b['deletes']})" if b else "-",
                  f"{b['covered']} of {b['observations']} ({_pct(b['coverage'])}%)" if b and b["coverage"] is not None
                  else "-"]
        d = None if p is preds[0] else paired(preds[0], p)
        cells += [interval(d) if d else "-", f"{d['wins']} / {d['losses']}" if d else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}"
