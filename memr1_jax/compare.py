"""``python -m memr1_jax.compare RUN_A RUN_B [...]``: paired differences between evaluation runs.

Each RUN is an evaluation run folder (its ``predictions.jsonl``). The questions both runs
answered are paired; for F1, BLEU-1 and EM it prints the mean difference of the first run
against each other run with a paired bootstrap 95% interval (10,000 resamples, seed 0) and
the per-question wins / losses.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from memr1_jax.eval.metrics import paired_bootstrap

METRICS = ("f1", "b1", "em")


def _scores(run: pathlib.Path) -> dict[str, dict]:
    path = run / "predictions.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run}: no predictions.jsonl (not an evaluation run folder)")
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rec = json.loads(line)
                out[rec["key"]] = rec                 # a later line of a key replaces an earlier one
            except (ValueError, KeyError) as e:
                raise ValueError(f"{path}:{n}: not a prediction record ({e})") from None
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m memr1_jax.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=pathlib.Path, help="run folders; the first is compared with each other")
    args = p.parse_args(argv)
    if len(args.runs) < 2:
        p.error("give at least two run folders")
    try:
        scores = [_scores(r) for r in args.runs]
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    first = scores[0]
    print(f"| {args.runs[0].name} vs | n | " + " | ".join(f"{m} diff [95%]" for m in METRICS) + " | F1 wins / losses |")
    print("|---|---|" + "---|" * (len(METRICS) + 1))
    for run, other in zip(args.runs[1:], scores[1:]):
        keys = sorted(set(first) & set(other))
        if not keys:
            print(f"error: {run} shares no question with {args.runs[0]}", file=sys.stderr)
            return 2
        cells, f1 = [], None
        for m in METRICS:
            r = paired_bootstrap([100 * first[k][m] for k in keys], [100 * other[k][m] for k in keys])
            cells.append(f"{r['mean']:+.2f} [{r['lo']:+.2f}, {r['hi']:+.2f}]")
            f1 = f1 or r
        print(f"| {run.name} | {len(keys)} | " + " | ".join(cells) + f" | {f1['wins']} / {f1['losses']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
