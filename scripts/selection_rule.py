"""How `load("best")` chooses between single trials and ensembles, measured on kept runs.

Two rules, on the same saved predictions of each run (search-time models, no refit):
- `single val`: the best single trial by its validation score against each ensemble's
  cross-validated score (the rule before this script);
- `like with like`: each ensemble's cross-validated score against the cross-validated score
  of choosing the best single trial on the same folds (`predict.choose` now).

For each run it prints what each rule chose and that choice's test score. Run it on the
runs of a development split, never the headline's:

    python scripts/benchmark.py --split-seed 1 --budget 120 --keep-runs /tmp/dev \
        --name dev --out /tmp/dev-out ../shared/data/<set>.csv.gz:<target> ...
    python scripts/selection_rule.py /tmp/dev/*/run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from automl.ensemble.build import load_ensembles  # noqa: E402
from automl.metrics import METRICS  # noqa: E402
from automl.predict import choose  # noqa: E402
from automl.run import RunDir, load_trials  # noqa: E402


def single_val_rule(run: RunDir) -> tuple[str, float | None]:
    """The rule before: single trials by validation, ensembles by their cross-validated score."""
    metric = METRICS[run.info()["metric"]]
    sign = 1.0 if metric.greater_is_better else -1.0
    scored: list[tuple[float, str, float | None]] = [
        (r.val_score, r.name, r.test_score)
        for r in load_trials(run)
        if r.status == "complete" and r.val_score is not None
    ]
    scored += [
        (e["honest_val_score"], f"ensemble-{e['name']}", e.get("test_score"))
        for e in load_ensembles(run)
        if e.get("honest_val_score") is not None
    ]
    _, name, test = max(scored, key=lambda s: sign * s[0])  # first wins a tie: singles first
    return name, test


def test_score_of(run: RunDir, name: str) -> float | None:
    for ensemble in load_ensembles(run):
        if f"ensemble-{ensemble['name']}" == name:
            return ensemble.get("test_score")
    for record in load_trials(run):
        if record.name == name:
            return record.test_score
    return None


def compare(path: Path) -> dict[str, Any]:
    run = RunDir(path)
    metric = METRICS[run.info()["metric"]]
    before, before_test = single_val_rule(run)
    now, _, _ = choose(run, "best")
    return {
        "run": path.parent.name,
        "metric": metric.name,
        "before": before,
        "before_test": before_test,
        "now": now,
        "now_test": test_score_of(run, now),
        "greater_is_better": metric.greater_is_better,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories")
    args = parser.parse_args()
    print("| run | metric | single val: chose | test | like with like: chose | test | change |")
    print("|---|---|---|---|---|---|---|")
    better = worse = 0
    for path in args.runs:
        row = compare(path)
        a, b = row["before_test"], row["now_test"]
        change = "same"
        if a is not None and b is not None and a != b:
            gained = (b > a) == row["greater_is_better"]
            better, worse = better + gained, worse + (not gained)
            change = "better" if gained else "worse"
        print(
            f"| {row['run']} | {row['metric']} | {row['before']} | {a:.4f} | {row['now']} | "
            f"{b:.4f} | {change} |"
        )
    print(f"\nlike with like against single val, on test: {better} better, {worse} worse")
    return 0


if __name__ == "__main__":
    sys.exit(main())
