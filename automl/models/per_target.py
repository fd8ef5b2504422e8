"""Several targets for families without output heads: one model per target.

The objective's model is saved where a single-target model would be (so loading, `predict`
and the ensemble see an ordinary trial); each further target's model is saved in
`target_<i>/` with its own manifest.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from automl.io import MANIFEST, write_manifest
from automl.models.base import BuildContext, Family


def _column(y: np.ndarray, i: int, task: str) -> np.ndarray:
    values = np.asarray(y)[:, i]
    return values.astype(np.int64) if task != "regression" else values.astype(float)


class PerTarget:
    """The objective's model plus one model per further target, fitted on the same rows."""

    def __init__(self, family: Family, params: dict[str, Any], ctx: BuildContext) -> None:
        self.ctx = ctx
        self.main = family.build(params, replace(ctx, others=()))
        self.extra = [
            family.build(params, replace(ctx, task=task, n_classes=n, others=(), on_epoch=None))
            for _, task, n in ctx.others
        ]

    def fit(self, x, y, x_val, y_val, deadline=None):  # noqa: ANN001, ANN201
        self.main.fit(x, _column(y, 0, self.ctx.task), x_val, _column(y_val, 0, self.ctx.task),
                      deadline=deadline)  # fmt: skip
        for i, (model, (_, task, _)) in enumerate(zip(self.extra, self.ctx.others, strict=True)):
            model.fit(x, _column(y, i + 1, task), x_val, _column(y_val, i + 1, task),
                      deadline=deadline)  # fmt: skip
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.main.predict(x)

    def predict_others(self, x: np.ndarray) -> list[np.ndarray]:
        return [model.predict(x) for model in self.extra]

    def count_params(self) -> int | None:
        count = getattr(self.main, "count_params", None)
        return count() if callable(count) else None

    def save(self, directory: Path) -> list[str]:
        names = self.main.save(directory)
        for i, model in enumerate(self.extra):
            sub = Path(directory) / f"target_{i}"
            sub.mkdir(exist_ok=True)
            write_manifest(sub, model.save(sub))
            names.append(f"target_{i}/{MANIFEST}")
        return names
