#!/usr/bin/env bash
# The wheel is the product: build it, install it into a clean virtualenv (no editable install,
# the exact versions of constraints.txt), and run search (no --space), ensemble, report and
# predict from it, outside the source tree so nothing resolves a path there.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

"$ROOT/.venv/bin/python" -m build --wheel --outdir "$WORK/dist" "$ROOT" >"$WORK/build.log" 2>&1 \
  || { cat "$WORK/build.log"; exit 1; }
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --disable-pip-version-check \
  -c "$ROOT/constraints.txt" "$WORK"/dist/automl-*.whl
cd "$WORK"
BIN="$WORK/venv/bin"
"$BIN/automl" --version
"$BIN/automl" search --data builtin:iris --out "$WORK/run" --trials 4 --seed 0 | tail -3
grep -q '"space_choice": "the bundled' "$WORK/run/run.json"
"$BIN/automl" ensemble "$WORK/run" --recipe greedy >"$WORK/ensemble.log"
"$BIN/automl" report "$WORK/run"
"$BIN/automl" predict "$WORK/run" --data builtin:iris --out "$WORK/predictions.parquet"
"$BIN/python" - "$WORK" <<'PY'
import sys
from pathlib import Path

import pandas as pd
from sklearn.datasets import load_iris

import automl

where = Path(automl.__file__).parent
assert "site-packages" in str(where), where  # the installed wheel, not the source tree
assert (where / "search_spaces" / "tabular.yaml").is_file()
predictions = pd.read_parquet(Path(sys.argv[1]) / "predictions.parquet")
truth = load_iris(as_frame=True).target_names[load_iris().target]
accuracy = (predictions.prediction.to_numpy() == truth).mean()
assert accuracy > 0.9, accuracy
print(f"wheel check: automl {automl.__version__} from {where}; iris accuracy {accuracy:.3f}")
PY
