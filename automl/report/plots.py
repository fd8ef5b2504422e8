"""The report's figures, each rendered by matplotlib to a standalone SVG string.

Every function takes plain data (records, arrays, summaries) and returns SVG text, or None when
there is nothing to draw, so the page can leave a section out rather than show an empty frame.
Text stays text in the SVG (smaller files, crisp at any zoom); matplotlib escapes it as XML.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from automl.run import TrialRecord

PALETTE = [
    "#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3",
    "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD",
]  # fmt: skip


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "svg.fonttype": "none",
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
        }
    )
    return plt


def to_svg(fig: Any) -> str:
    plt = _pyplot()
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.find("<svg") :]


def family_colors(families: Sequence[str]) -> dict[str, str]:
    return {f: PALETTE[i % len(PALETTE)] for i, f in enumerate(sorted(set(families)))}


def history(records: list[TrialRecord], metric: str, greater: bool) -> str | None:
    """Each trial's validation score by trial number, per family, with best-so-far lines."""
    done = sorted(
        (r for r in records if r.status == "complete" and r.val_score is not None),
        key=lambda r: r.number,
    )
    if not done:
        return None
    plt = _pyplot()
    colors = family_colors([r.family for r in done])
    fig, ax = plt.subplots(figsize=(8, 3.6))
    pick = max if greater else min
    for family, color in colors.items():
        pts = [r for r in done if r.family == family]
        ax.scatter(
            [r.number for r in pts],
            [r.val_score for r in pts],
            s=18,
            color=color,
            alpha=0.75,
            label=family,
        )
        best = [pick(r.score for r in pts[: i + 1]) for i in range(len(pts))]
        ax.step([r.number for r in pts], best, where="post", color=color, linewidth=0.9, alpha=0.6)
    overall = [pick(r.score for r in done[: i + 1]) for i in range(len(done))]
    ax.step(
        [r.number for r in done],
        overall,
        where="post",
        color="black",
        linewidth=1.6,
        label="best so far",
    )
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {metric}")
    ax.legend(fontsize=8, ncol=min(4, len(colors) + 1), loc="best")
    return to_svg(fig)


def by_family(records: list[TrialRecord], metric: str) -> str | None:
    """The spread of validation scores per family: which model types are worth the budget."""
    done = [r for r in records if r.status == "complete" and r.val_score is not None]
    families = sorted({r.family for r in done})
    if not families:
        return None
    plt = _pyplot()
    colors = family_colors(families)
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * len(families)))
    data = [[r.val_score for r in done if r.family == f] for f in families]
    parts = ax.boxplot(data, vert=False, patch_artist=True, widths=0.6)
    for patch, family in zip(parts["boxes"], families, strict=True):
        patch.set_facecolor(colors[family])
        patch.set_alpha(0.5)
    labels = [f"{f} ({len(d)} trials)" for f, d in zip(families, data, strict=True)]
    ax.set_yticks(range(1, len(families) + 1), labels)
    ax.set_xlabel(f"validation {metric}")
    return to_svg(fig)


def importances(per_family: dict[str, dict[str, float]]) -> str | None:
    """fANOVA importance of each family's hyperparameters, one panel per family."""
    shown = {f: imp for f, imp in per_family.items() if imp}
    if not shown:
        return None
    plt = _pyplot()
    n = len(shown)
    height = max(2.2, 0.3 * max(len(v) for v in shown.values()) + 1)
    fig, axes = plt.subplots(1, n, figsize=(min(3.6 * n, 11), height), squeeze=False)
    colors = family_colors(list(shown))
    for ax, (family, imp) in zip(axes[0], shown.items(), strict=True):
        names = list(imp)[::-1]
        ax.barh(names, [imp[k] for k in names], color=colors[family])
        ax.set_title(family)
        ax.set_xlim(0, 1)
        ax.set_xlabel("importance")
    return to_svg(fig)


def score_vs_params(
    records: list[TrialRecord], params: Sequence[str], metric: str, family: str
) -> str | None:
    """Validation score against the family's most important parameters."""
    done = [r for r in records if r.status == "complete" and r.family == family]
    params = [p for p in params if any(p in r.params for r in done)][:3]
    if not done or not params:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(params), figsize=(3.4 * len(params), 2.8), squeeze=False)
    for ax, param in zip(axes[0], params, strict=True):
        pts = [(r.params[param], r.val_score) for r in done if param in r.params]
        xs = [p[0] for p in pts]
        numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs)
        if not numeric:
            labels = sorted({str(x) for x in xs})
            xs = [labels.index(str(x)) for x in xs]
            ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
        elif min(xs) > 0 and max(xs) / max(min(xs), 1e-300) > 100:
            ax.set_xscale("log")
        ax.scatter(xs, [p[1] for p in pts], s=16, alpha=0.7, color=PALETTE[0])
        ax.set_xlabel(param)
        ax.set_ylabel(f"validation {metric}")
    fig.suptitle(family, fontsize=9)
    return to_svg(fig)


def learning_curves(curves: list[tuple[str, dict[str, list[float]]]]) -> str | None:
    """Training and validation loss per epoch of the best Keras trials."""
    curves = [(name, h) for name, h in curves if h.get("loss")]
    if not curves:
        return None
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
    for i, (name, h) in enumerate(curves):
        color = PALETTE[i % len(PALETTE)]
        left.plot(h["loss"], color=color, label=name, linewidth=1.2)
        if h.get("val_loss"):
            right.plot(h["val_loss"], color=color, linewidth=1.2)
    left.set_title("training loss")
    right.set_title("validation loss")
    for ax in (left, right):
        ax.set_xlabel("epoch")
    left.legend(fontsize=7)
    return to_svg(fig)


def ensemble_weights(members: list[dict[str, Any]], title: str) -> str | None:
    members = sorted(members, key=lambda m: -m["weight"])[:20]
    if not members:
        return None
    plt = _pyplot()
    colors = family_colors([m["family"] for m in members])
    fig, ax = plt.subplots(figsize=(6, 0.6 + 0.3 * len(members)))
    names = [m["name"] for m in members][::-1]
    weights = [m["weight"] for m in members][::-1]
    ax.barh(names, weights, color=[colors[m["family"]] for m in members][::-1])
    ax.set_xlabel("weight")
    ax.set_title(title)
    return to_svg(fig)


def correlation_heatmap(names: list[str], matrix: list[list[float]]) -> str | None:
    if len(names) < 2:
        return None
    plt = _pyplot()
    size = 1.8 + 0.42 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(np.asarray(matrix), vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.grid(False)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6)
    fig.colorbar(image, ax=ax, shrink=0.8, label="error correlation")
    return to_svg(fig)


def ensemble_gains(ensembles: list[dict[str, Any]]) -> str | None:
    """Each ensemble's gain over the best single model: validation, held-out folds, test."""
    if not ensembles:
        return None
    plt = _pyplot()
    names = [e["name"] for e in ensembles]
    series = {
        "validation": [e.get("gain", {}).get("val") for e in ensembles],
        "held-out folds": [
            e.get("held_out", e.get("split_half", {})).get("mean_gain") for e in ensembles
        ],
        "test": [e.get("gain", {}).get("test") for e in ensembles],
    }
    fig, ax = plt.subplots(figsize=(8, 0.8 + 0.5 * len(names)))
    y = np.arange(len(names))
    for i, (label, values) in enumerate(series.items()):
        ax.barh(y + (i - 1) * 0.26, [v or 0.0 for v in values], height=0.25, label=label,
                color=PALETTE[i])  # fmt: skip
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(y, names)
    ax.set_xlabel("gain over the best single model (positive is better)")
    ax.legend(fontsize=7)
    return to_svg(fig)


def confusion(y: np.ndarray, proba: np.ndarray, classes: list[Any]) -> str | None:
    from sklearn.metrics import confusion_matrix

    if len(classes) > 30:
        return None
    plt = _pyplot()
    matrix = confusion_matrix(y, proba.argmax(axis=1), labels=range(len(classes)))
    size = 2.2 + 0.35 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    ax.imshow(matrix, cmap="Blues")
    labels = [str(c) for c in classes]
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.grid(False)
    threshold = matrix.max() / 2
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(
                j,
                i,
                str(matrix[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if matrix[i, j] > threshold else "black",
            )
    return to_svg(fig)


def roc(y: np.ndarray, proba: np.ndarray, classes: list[Any]) -> str | None:
    from sklearn.metrics import auc, roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    shown = [1] if len(classes) == 2 else list(range(min(len(classes), 10)))
    for i, k in enumerate(shown):
        positive = np.asarray(y) == k
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, proba[:, k])
        label = f"{classes[k]} (AUC {auc(fpr, tpr):.3f})"
        ax.plot(fpr, tpr, color=PALETTE[i % len(PALETTE)], linewidth=1.3, label=label)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=7, loc="lower right")
    return to_svg(fig)


def residuals(y: np.ndarray, pred: np.ndarray) -> str | None:
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2))
    left.scatter(pred, y - pred, s=8, alpha=0.5, color=PALETTE[0])
    left.axhline(0, color="black", linewidth=0.8)
    left.set_xlabel("predicted")
    left.set_ylabel("residual (true - predicted)")
    right.scatter(pred, y, s=8, alpha=0.5, color=PALETTE[1])
    low, high = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    right.plot([low, high], [low, high], color="black", linewidth=0.8)
    right.set_xlabel("predicted")
    right.set_ylabel("true")
    return to_svg(fig)


def network(layers: list[dict[str, Any]]) -> str | None:
    """A layer graph of a Keras functional model: boxes by depth, arrows from inbound layers."""
    if not layers:
        return None
    depth: dict[str, int] = {}
    for layer in layers:  # Keras lists layers in topological order
        depth[layer["name"]] = 1 + max((depth.get(i, 0) for i in layer["inbound"]), default=-1)
    rows: dict[int, list[str]] = {}
    for name, d in depth.items():
        rows.setdefault(d, []).append(name)
    width = max(len(v) for v in rows.values())
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 2.6 * width), 0.75 * len(rows) + 0.6))
    position = {
        name: ((i + 0.5) / len(names) * width, -d)
        for d, names in rows.items()
        for i, name in enumerate(names)
    }
    kinds = {layer["name"]: layer for layer in layers}
    for layer in layers:
        x, y = position[layer["name"]]
        for source in layer["inbound"]:
            if source in position:
                sx, sy = position[source]
                ax.annotate(
                    "",
                    xy=(x, y + 0.22),
                    xytext=(sx, sy - 0.22),
                    arrowprops={"arrowstyle": "->", "color": "#555"},
                )
        text = f"{layer['name']}: {kinds[layer['name']]['class']}"
        if layer.get("detail"):
            text += f"\n{layer['detail']}"
        ax.text(
            x,
            y,
            text,
            ha="center",
            va="center",
            fontsize=7,
            bbox={"boxstyle": "round", "facecolor": "#eef3fa", "edgecolor": "#4C72B0"},
        )
    ax.set_xlim(0, width)
    ax.set_ylim(-len(rows) + 0.4, 0.6)
    ax.axis("off")
    return to_svg(fig)
