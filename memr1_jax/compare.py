"""``python -m memr1_jax.compare RUN_A RUN_B [...]``: paired differences between evaluation runs;
``python -m memr1_jax.compare --validation TRAIN_RUN``: a training run's validation curve, each
step against step 0 on the same items.

Each RUN is an evaluation run folder (its ``predictions.jsonl``). The questions both runs
answered are paired; for F1, BLEU-1 and EM it prints the mean difference of the first run
against each other run with a paired bootstrap 95% interval (10,000 resamples, seed 0) and
the per-question wins / losses.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from memr1_jax.eval.comparison import METRICS, interval, paired, read_predictions, validation_table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m memr1_jax.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=pathlib.Path, help="run folders; the first is compared with each other")
    p.add_argument("--validation", action="store_true", help="the runs are training runs: print each one's "
                   "validation scores per step, paired against step 0")
    args = p.parse_args(argv)
    if args.validation:
        try:
            for run in args.runs:
                print(f"{run}:\n{validation_table(run)}")
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    if len(args.runs) < 2:
        p.error("give at least two run folders")
    try:
        scores = [read_predictions(r) for r in args.runs]
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    first = scores[0]
    print(f"| {args.runs[0].name} vs | n | " + " | ".join(f"{m} diff [95%]" for m in METRICS) + " | F1 wins / losses |")
    print("|---|---|" + "---|" * (len(METRICS) + 1))
    for run, other in zip(args.runs[1:], scores[1:]):
        results = [paired(first, other, m) for m in METRICS]
        if results[0] is None:
            print(f"error: {run} shares no question with {args.runs[0]}", file=sys.stderr)
            return 2
        f1 = results[0]
        print(f"| {run.name} | {f1['n']} | " + " | ".join(interval(r) for r in results)
              + f" | {f1['wins']} / {f1['losses']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
