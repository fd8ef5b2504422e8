"""Choose the tabular portfolio: the ordered configurations every tabular search starts with.

    python scripts/choose_portfolio.py [--max-rows 2000] [--draws 20] [--size 6] [--cap 20]
                                        [--write]
    python scripts/choose_portfolio.py --resume           # go on after a crash or a kill
    python scripts/choose_portfolio.py --reuse --write   # re-choose from the saved scores

1. Candidates: each tree and linear family's defaults, plus `--draws` random configurations
   per family drawn (seeded) from the bundled spaces. Networks are not candidates: the search
   places their default by a rule on the data (see `SearchSpace.defaults`).
2. Each candidate is cross-validated (3 folds, the search's own encoders, families and
   metrics) on each tabular dataset of ../shared/data, subsampled to `--max-rows` rows; its
   score and fit time are kept in benchmarks/portfolio_candidates.csv, a row as soon as it is
   measured (`--resume` skips what the file holds). A candidate has `--cap` seconds on a
   dataset, shared by its folds the way a search trial's deadline is: boosting, forests and
   networks stop there with what they have (a CatBoost draw of depth 10 took 144 s on
   segment's seven classes), as they would in a search.
3. A candidate's error on a dataset is its rank among the candidates there, scaled to [0, 1]
   (0: the best). A portfolio's error on a dataset is that of its best member so far.
4. Start orders compared: the family defaults (in the bundle's order, or cheap first) followed
   by random draws (what TPE's first trials are), or by greedy selection, the way AutoGluon's
   zero-shot portfolios are built (add the candidate that most lowers the mean error over the
   datasets, per (mean fit seconds) ** alpha: alpha 0 picks the strongest first, 1 the best
   gain per second), or greedy selection from scratch.
5. Each order is chosen leave-one-dataset-out: on nine datasets, scored on the tenth under
   budgets of 0.5, 1, 2 and 4 times what the six defaults take there (the error of the best
   configuration that ran within it). The order with the lowest mean held-out error wins.

The results go to benchmarks/portfolio.md; `--write` writes the chosen portfolio (chosen on
every dataset) into search_spaces/tabular.yaml, with the network default that
benchmarks/wide_deep.md chose right after the family defaults.

    python scripts/choose_portfolio.py --networks   # wide & deep against the MLP (~15 min)

`--networks` cross-validates the network defaults the same way (the MLP, wide & deep with one
input, wide & deep with the categories wide and the numbers deep) and ranks them among the
saved candidates: benchmarks/wide_deep.md says which network default is tried first on
tabular data, by the rule stated there.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data"
DATASETS = [  # file, target, task (None: inferred)
    ("credit_g", "class", None),
    ("blood_transfusion", "Class", None),
    ("phoneme", "Class", None),
    ("adult", "class", None),
    ("vehicle", "Class", None),
    ("segment", "class", None),
    ("car", "class", None),
    ("wine_quality", "quality", "regression"),
    ("house_16H", "y", "regression"),
    ("boston_housing", "medv", "regression"),
]
FAMILIES = ["lightgbm", "catboost", "hist_gb", "random_forest", "extra_trees", "linear"]
ALPHAS = [0.0, 0.5, 1.0]
FOLDS = 3
MARKER = "# portfolio: written by scripts/choose_portfolio.py"


def candidates(draws: int, seed: int) -> list[dict[str, Any]]:
    """Each family's defaults, then `draws` random configurations of it (seeded)."""
    import optuna

    from automl.resources import space_path
    from automl.space import SearchSpace

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = []
    for family in FAMILIES:
        space = SearchSpace.from_files([space_path(family)])
        out.append(space.config(space.defaults()[0]).__dict__ | {"id": f"{family}-default"})
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        for i in range(draws):
            flat = space.suggest(study.ask())
            out.append(space.config(flat).__dict__ | {"id": f"{family}-{i}"})
    return out


def evaluate(
    name: str,
    target: str,
    task: str | None,
    configs: list[dict],
    max_rows: int,
    threads: int,
    cap: float | None = None,
    out: Path | None = None,
) -> list[dict[str, Any]]:
    """Cross-validate `configs` on one dataset, each within `cap` seconds; each row is
    appended to `out` (a CSV) as soon as it is measured."""
    from automl.data import load_dataset
    from automl.folds import fold_rows
    from automl.metrics import get_metric
    from automl.models import FAMILIES as REGISTRY
    from automl.models import BuildContext
    from automl.preprocess import fit_encoder, layout, transform
    from automl.search.evaluate import fold_deadline

    data = load_dataset(str(DATA / f"{name}.csv.gz"), target, task=task, seed=0)
    x = pd.concat([data.x_fit, data.x_val, data.x_test], ignore_index=True)
    y = np.concatenate([data.y_fit, data.y_val, data.y_test])
    classify = data.task != "regression"
    if len(y) > max_rows:  # a stratified subsample keeps the search's class balance
        keep = fold_rows(y, max(2, len(y) // max_rows), classify, 0)[0][1][:max_rows]
        x, y = x.iloc[keep].reset_index(drop=True), y[keep]
    metric = get_metric(None, data.task)
    n_classes = len(data.target.classes)
    folds = fold_rows(y, FOLDS, classify, 0)
    encoded = {}
    for encoding in {REGISTRY[c["family"]].encoding for c in configs}:
        encoded[encoding] = []
        for train, held in folds:
            encoder = fit_encoder(encoding, data.schema, x.iloc[train])
            encoded[encoding].append(
                (transform(encoder, x.iloc[train]), transform(encoder, x.iloc[held]), encoder)
            )
    rows = []
    for config in configs:
        family = REGISTRY[config["family"]]
        oof = np.zeros((len(y), n_classes)) if classify else np.zeros(len(y))
        start = time.perf_counter()
        deadline = time.time() + cap if cap else None
        for k, ((train, held), (x_train, x_held, encoder)) in enumerate(
            zip(folds, encoded[family.encoding], strict=True)
        ):
            ctx = BuildContext(data.task, n_classes, 0, threads, layout=layout(encoder))
            # Early stopping watches the held-out fold, as in the search's cross-fitting.
            model = family.build(config["params"], ctx)
            model.fit(x_train, y[train], x_held, y[held],
                      deadline=fold_deadline(deadline, k, FOLDS))  # fmt: skip
            oof[held] = model.predict(x_held)
        seconds = time.perf_counter() - start
        score = metric(y, oof)
        row = {"dataset": name, "id": config["id"], "family": config["family"],
               "score": score, "error": metric.error(y, oof), "seconds": seconds}  # fmt: skip
        rows.append(row)
        if out is not None:
            pd.DataFrame([row]).to_csv(out, mode="a", header=not out.exists(), index=False)
        print(f"  {name:<18} {config['id']:<22} {metric.name} {score:.4f} {seconds:6.1f}s",
              flush=True)  # fmt: skip
    return rows


def rank_errors(table: pd.DataFrame) -> pd.DataFrame:
    """Each candidate's rank error per dataset in [0, 1] (0: best there)."""
    out = table.copy()
    out["rank_error"] = out.groupby("dataset")["error"].rank(method="average", pct=True)
    low = out.groupby("dataset")["rank_error"].transform("min")
    out["rank_error"] = (out["rank_error"] - low) / (1 - low)
    return out


def greedy(table: pd.DataFrame, size: int, alpha: float, start: list[str]) -> list[str]:
    """`start`, then the candidate ids greedy selection adds, in order, to `size` in all."""
    err = table.pivot(index="id", columns="dataset", values="rank_error")
    cost = table.groupby("id")["seconds"].mean()
    chosen = list(start)
    best = pd.Series(1.0, index=err.columns)
    for cid in chosen:
        best = np.minimum(best, err.loc[cid])
    while len(chosen) < min(size, len(err)):
        gains = {}
        for cid in err.index.difference(chosen):
            gain = float(best.mean() - np.minimum(best, err.loc[cid]).mean())
            gains[cid] = gain / max(float(cost[cid]), 1e-3) ** alpha
        pick = max(gains, key=lambda c: (gains[c], -cost[c]))
        if gains[pick] <= 0:
            break
        chosen.append(pick)
        best = np.minimum(best, err.loc[pick])
    return chosen


def budgeted_error(table: pd.DataFrame, dataset: str, order: list[str], budget: float) -> float:
    """The rank error of the best configuration in `order` that ran within `budget` seconds
    (the first always runs)."""
    part = table[table.dataset == dataset].set_index("id")
    spent, best = 0.0, 1.0
    for cid in order:
        spent += float(part.loc[cid, "seconds"])
        if spent > budget and cid != order[0]:
            break
        best = min(best, float(part.loc[cid, "rank_error"]))
    return best


def strategies(rest: pd.DataFrame, size: int, seed: int) -> dict[str, list[list[str]]]:
    """Start orders, each chosen from `rest` (the datasets other than the one scored); a
    strategy may be several orders (random ones), averaged when scored."""
    defaults = [f"{f}-default" for f in FAMILIES]
    cost = rest.groupby("id")["seconds"].mean()
    cheap_defaults = sorted(defaults, key=lambda c: cost[c])
    extras = [c for c in cost.index if c not in defaults]
    rng = np.random.default_rng(seed)
    out: dict[str, list[list[str]]] = {
        # What a search did before the portfolio: the defaults in the bundle's order, then
        # TPE's first trials, which are random draws.
        "defaults, then random": [
            defaults + list(rng.permutation(extras)[:size]) for _ in range(50)
        ],
        "defaults cheap first, then random": [
            cheap_defaults + list(rng.permutation(extras)[:size]) for _ in range(50)
        ],
    }
    for alpha in ALPHAS:
        out[f"defaults cheap first, then greedy (alpha {alpha})"] = [
            greedy(rest, len(defaults) + size, alpha, cheap_defaults)
        ]
        out[f"greedy from scratch (alpha {alpha})"] = [greedy(rest, size, alpha, [])]
    return out


NETWORKS = [  # (id, family, parameters that differ from the family's defaults)
    ("mlp-default", "mlp", {}),
    ("wide_deep-default", "wide_deep", {}),
    ("wide_deep-groups", "wide_deep", {"inputs": "groups"}),
]


def network_candidates() -> list[dict[str, Any]]:
    from automl.resources import space_path
    from automl.space import FAMILY_KEY, SearchSpace

    out = []
    for cid, family, given in NETWORKS:
        space = SearchSpace.from_files([space_path(family)])
        flat = space.defaults()[0] | {f"{family}.{k}": v for k, v in given.items()}
        assert flat[FAMILY_KEY] == family
        out.append(space.config(flat).__dict__ | {"id": cid})
    return out


def compare_networks(args: argparse.Namespace) -> int:
    """The network defaults cross-validated like the candidates, ranked among them; the rule:
    wide & deep's default replaces the MLP's among a tabular search's first trials if its mean
    rank error is lower and it beats the MLP's on at least half the datasets. Either way both
    families are in the tabular bundle, so the sampler can propose either."""
    saved = pd.read_csv(ROOT / "benchmarks" / "portfolio_candidates.csv")
    configs = network_candidates()
    rows = []
    for name, target, task in DATASETS:
        rows += evaluate(name, target, task, configs, args.max_rows, args.threads)
    networks = pd.DataFrame(rows)
    networks.to_csv(ROOT / "benchmarks" / "wide_deep.csv", index=False)
    table = rank_errors(pd.concat([saved, networks], ignore_index=True))
    nets = table[table.id.isin([c for c, _, _ in NETWORKS])]
    wide = nets.pivot(index="dataset", columns="id", values="score")
    err = nets.pivot(index="dataset", columns="id", values="error")
    rank = nets.pivot(index="dataset", columns="id", values="rank_error")
    secs = nets.pivot(index="dataset", columns="id", values="seconds")
    ids = [c for c, _, _ in NETWORKS]
    wins = {c: int((err[c] < err["mlp-default"]).sum()) for c in ids[1:]}
    best_wide = min(ids[1:], key=lambda c: rank[c].mean())
    chosen = (
        best_wide
        if rank[best_wide].mean() < rank["mlp-default"].mean() and wins[best_wide] * 2 >= len(rank)
        else "mlp-default"
    )
    lines = ["# Wide & deep against the MLP on tabular data", "",
             f"`python scripts/choose_portfolio.py --networks --max-rows {args.max_rows}`: "
             f"each network default {FOLDS}-fold cross-validated on the ten tabular datasets "
             f"(up to {args.max_rows} rows), as the portfolio's candidates were; the rank error "
             "is among the portfolio's candidates and these three (0: the best there). "
             "Scores: the "
             "task's metric (AUC, log-loss, RMSE).", "",
             "| dataset | " + " | ".join(f"{c} score (rank error, s)" for c in ids) + " |",
             "|---|" + "---|" * len(ids)]  # fmt: skip
    for dataset in wide.index:
        cells = [f"{wide.loc[dataset, c]:.4f} ({rank.loc[dataset, c]:.3f}, "
                 f"{secs.loc[dataset, c]:.1f})" for c in ids]  # fmt: skip
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    lines.append("| mean rank error | " + " | ".join(f"{rank[c].mean():.3f}" for c in ids) + " |")
    lines += ["", "Wins against the MLP's default (lower error): "
              + ", ".join(f"{c} {wins[c]} of {len(rank)}" for c in ids[1:]) + ".", "",
              "Rule: wide & deep's default replaces the MLP's among the first trials if its "
              "mean rank error is lower and it wins on at least half the datasets; both "
              "families are in the tabular bundle either way, for the sampler.", "",
              f"Chosen for the first trials: **{chosen}**."]  # fmt: skip
    text = "\n".join(lines) + "\n"
    (ROOT / "benchmarks" / "wide_deep.md").write_text(text)
    print(text)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-rows", type=int, default=2000)
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--size", type=int, default=6, help="configurations after the defaults")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cap",
        type=float,
        default=20.0,
        help="seconds a candidate may take on one dataset (0: no cap)",
    )
    parser.add_argument("--reuse", action="store_true", help="reuse the candidates' CSV")
    parser.add_argument(
        "--resume", action="store_true", help="measure only what the candidates' CSV lacks"
    )
    parser.add_argument("--write", action="store_true", help="write into tabular.yaml")
    parser.add_argument(
        "--networks", action="store_true", help="wide & deep against the MLP (wide_deep.md)"
    )
    args = parser.parse_args()
    if args.networks:
        return compare_networks(args)
    results = ROOT / "benchmarks" / "portfolio_candidates.csv"
    configs = candidates(args.draws, args.seed)
    if not args.reuse:
        if not args.resume:
            results.unlink(missing_ok=True)
        done = pd.read_csv(results) if results.exists() else pd.DataFrame(columns=["dataset", "id"])
        for name, target, task in DATASETS:
            have = set(done[done.dataset == name].id)
            todo = [c for c in configs if c["id"] not in have]
            if todo:
                evaluate(name, target, task, todo, args.max_rows, args.threads, args.cap, results)
    table = pd.read_csv(results)
    table = table[table.id.isin({c["id"] for c in configs})]
    table = rank_errors(table)
    defaults = [f"{f}-default" for f in FAMILIES]
    datasets = list(dict.fromkeys(table.dataset))
    # Budgets: the time the six family defaults take on the held-out dataset, times these.
    multiples = (0.5, 1.0, 2.0, 4.0)
    held: dict[str, list[float]] = {}
    for dataset in datasets:
        rest = table[table.dataset != dataset]
        base = float(table[(table.dataset == dataset) & table.id.isin(defaults)].seconds.sum())
        for name, orders in strategies(rest, args.size, args.seed).items():
            for k in multiples:
                errors = [budgeted_error(table, dataset, o, k * base) for o in orders]
                held.setdefault(f"{name}|{k}", []).append(float(np.mean(errors)))
    names = list(strategies(table, args.size, args.seed))
    mean = {n: float(np.mean([np.mean(held[f"{n}|{k}"]) for k in multiples])) for n in names}
    winner = min(names, key=lambda n: (mean[n], names.index(n)))

    lines = ["# The tabular portfolio", "", f"`python scripts/choose_portfolio.py "
             f"--max-rows {args.max_rows} --draws {args.draws} --size {args.size} "
             f"--cap {args.cap:g}`: "
             f"{len(configs)} candidates (each family's defaults and {args.draws} random "
             f"draws) x {len(datasets)} datasets (up to {args.max_rows} rows each), "
             f"{FOLDS}-fold cross-validation, each candidate within {args.cap:g} s on a "
             "dataset (its folds share them, as a search trial's deadline; boosting and "
             "forests stop there with what they have); scores and fit seconds in "
             "`portfolio_candidates.csv`. Rank error: 0 = the best candidate on that dataset, "
             "1 = the worst. ", "",
             "Leave-one-dataset-out: each start order is chosen on nine datasets and scored "
             "on the tenth, as the rank error of the best configuration that ran within a "
             "budget of k times the time the six family defaults take there (mean over the "
             "ten; random orders averaged over 50 draws):", "",
             "| start order | " + " | ".join(f"k={k}" for k in multiples) + " | mean |",
             "|---|" + "---|" * (len(multiples) + 1)]  # fmt: skip
    for n in names:
        cells = [f"{np.mean(held[f'{n}|{k}']):.3f}" for k in multiples]
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {mean[n]:.3f} |")
    order = strategies(table, args.size, args.seed)[winner][0]
    if winner.endswith("then random"):  # the random part is the search's own sampler's job
        order = order[: len(defaults)]
    params = {c["id"]: c for c in configs}
    lines += ["", f"Chosen: **{winner}** (the lowest held-out mean; a tie goes to the "
              "simpler order). Chosen on all ten datasets, the search starts with "
              "(then TPE, whose first trials are random draws):", "",
              "| # | candidate | mean rank error | mean fit s |", "|---|---|---|---|"]  # fmt: skip
    for i, cid in enumerate(order, start=1):
        part = table[table.id == cid]
        lines.append(f"| {i} | {cid} `{params[cid]['params']}` | "
                     f"{part.rank_error.mean():.3f} | {part.seconds.mean():.2f} |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    (ROOT / "benchmarks" / "portfolio.md").write_text(text)
    print(text)
    if args.write:
        # The network default benchmarks/wide_deep.md chose comes right after the family
        # defaults, before greedy's additions: networks are not candidates here, and behind six
        # more trees a 120-s search (4 to 11 trials) would rarely reach it.
        network = next(c for c in network_candidates() if c["id"] == chosen_network())
        head, tail = order[: len(defaults)], order[len(defaults) :]
        write_portfolio([params[cid] for cid in head] + [network] + [params[c] for c in tail])
    return 0


def chosen_network() -> str:
    """The network default `--networks` chose (benchmarks/wide_deep.md)."""
    import re

    text = (ROOT / "benchmarks" / "wide_deep.md").read_text()
    found = re.search(r"Chosen for the first trials: \*\*([\w-]+)\*\*", text)
    if found is None:
        raise SystemExit("benchmarks/wide_deep.md names no chosen network: run --networks")
    return found.group(1)


def write_portfolio(entries: list[dict[str, Any]]) -> None:
    """Replace the `portfolio:` block at the end of search_spaces/tabular.yaml."""
    import yaml

    path = ROOT / "search_spaces" / "tabular.yaml"
    text = path.read_text()
    text = text.split(MARKER)[0].rstrip() + "\n"
    from automl.resources import space_path
    from automl.space import SearchSpace

    block = []
    for entry in entries:  # the values that differ from the family's defaults
        family = SearchSpace.from_files([space_path(entry["family"])]).families[entry["family"]]
        defaults = family.default_params()
        fixed = {p.name for p in family.params if p.type == "fixed"}
        block.append({"family": entry["family"]} | {
            k: v for k, v in entry["params"].items() if k not in fixed and defaults.get(k) != v
        })  # fmt: skip
    dumped = yaml.safe_dump({"portfolio": block}, sort_keys=False, default_flow_style=None)
    path.write_text(f"{text}{MARKER} (benchmarks/portfolio.md)\n{dumped}")


if __name__ == "__main__":
    raise SystemExit(main())
