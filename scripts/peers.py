"""Run one peer AutoML system on a train/test split and save its test predictions.

Runs inside the peers' own virtualenv (`scripts/peers_venv.sh`), never the project's: AutoGluon
and FLAML are benchmark opponents, not dependencies. `scripts/benchmark.py --peers` calls it
once per system and dataset with the same files, budget and cores as our own run, and scores
the saved predictions itself, so every system is measured by the same code.

    python scripts/peers.py SYSTEM TRAIN TEST TARGET TASK CLASSES BUDGET THREADS OUT_NPY WORKDIR

SYSTEM is `autogluon` (best_quality; XGBoost left out: it fails with scikit-learn 1.9 and this
virtualenv keeps the version AutoGluon supports, but the exclusion keeps runs comparable with
earlier tables) or `flaml`. Class probabilities are saved in the order of
CLASSES (a JSON list of strings: our `Target`'s order); regression saves values. For a
classifier it also records how often the system's own `predict` names the class that the saved
probabilities rank first: near 1, a poor score is the system's own answer, not a mixed-up order.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

import numpy as np
import pandas as pd


def autogluon(train, test, target, task, classes, budget, threads, workdir):  # noqa: ANN001, ANN201
    from autogluon.tabular import TabularPredictor

    problem = {"binary": "binary", "multiclass": "multiclass", "regression": "regression"}[task]
    if task != "regression":
        train = train.assign(**{target: train[target].astype(str)})
    predictor = TabularPredictor(label=target, problem_type=problem, path=workdir, verbosity=0).fit(
        train,
        time_limit=budget,
        presets="best_quality",
        num_cpus=threads,
        num_gpus=0,
        excluded_model_types=["XGB"],
    )
    features = test.drop(columns=[target])
    if task == "regression":
        return predictor.predict(features).to_numpy(float), predictor.model_best, None
    proba = predictor.predict_proba(features)
    proba.columns = [str(c) for c in proba.columns]
    labels = predictor.predict(features).astype(str).to_numpy()
    return proba[classes].to_numpy(float), predictor.model_best, labels


def flaml(train, test, target, task, classes, budget, threads, workdir):  # noqa: ANN001, ANN201
    from flaml import AutoML

    automl = AutoML()
    x, y = train.drop(columns=[target]), train[target]
    if task != "regression":
        y = y.astype(str)
    automl.fit(
        x,
        y,
        task="regression" if task == "regression" else "classification",
        time_budget=budget,
        n_jobs=threads,
        verbose=0,
        log_file_name=os.path.join(workdir, "flaml.log"),
        seed=0,
    )
    features = test.drop(columns=[target])
    if task == "regression":
        return np.asarray(automl.predict(features), float), automl.best_estimator, None
    proba = automl.predict_proba(features)
    order = [list(map(str, automl.classes_)).index(c) for c in classes]
    labels = np.asarray(automl.predict(features)).astype(str)
    return np.asarray(proba, float)[:, order], automl.best_estimator, labels


SELF, CHILDREN = resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN
SYSTEMS = {"autogluon": autogluon, "flaml": flaml}


def main() -> int:
    system, train_path, test_path, target, task, classes, budget, threads, out, workdir = sys.argv[
        1:
    ]
    start = time.time()
    train, test = pd.read_csv(train_path), pd.read_csv(test_path)
    os.makedirs(workdir, exist_ok=True)
    pred, best, labels = SYSTEMS[system](
        train, test, target, task, json.loads(classes), float(budget), int(threads), workdir
    )
    np.save(out, pred)
    seconds = time.time() - start
    with open(out + ".json", "w") as handle:
        peak_kb = max(resource.getrusage(who).ru_maxrss for who in (SELF, CHILDREN))
        facts = {"seconds": seconds, "detail": str(best), "peak_mb": peak_kb / 1024}
        if labels is not None:  # its own predict against the saved probabilities' first class
            ranked_first = np.asarray(json.loads(classes))[pred.argmax(axis=1)]
            facts["own_predict_agreement"] = float(np.mean(ranked_first == labels))
        json.dump(facts, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
