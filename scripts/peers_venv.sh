#!/bin/sh
# The peers' own virtualenv for `scripts/benchmark.py --peers`: AutoGluon 1.6.3 (tabular) and
# FLAML 2.7.0, never project dependencies. Prints the virtualenv's python. Idempotent.
# AutoGluon's XGBoost fails with scikit-learn 1.9, so scikit-learn stays below 1.9 here and the
# benchmark leaves XGBoost out of AutoGluon's models anyway (see scripts/peers.py).
# Ray is what AutoGluon installs with [all]: best_quality fits its bagged folds in parallel on it.
set -e
VENV=${PEERS_VENV:-.peers-venv}
PYTHON=${PYTHON:-python3}
if [ ! -f "$VENV/.installed-stamp" ]; then
    test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV" >&2
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
    "$VENV/bin/python" -m pip install -q "autogluon.tabular[lightgbm,catboost,fastai]==1.6.3" \
        "flaml[automl]==2.7.0" "scikit-learn<1.9" "ray>=2.43.0,<2.59.0" >&2
    touch "$VENV/.installed-stamp"
fi
echo "$VENV/bin/python"
