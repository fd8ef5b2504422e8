"""A trial's user attributes written in one database transaction.

Optuna's storage API writes one attribute per transaction, and a finished trial carries
about eight (scores, timings, artifacts): eight SQLite commits, each an fsync, were most of
the local executor's overhead per trial. With optuna's relational storage (SQLite,
PostgreSQL, MySQL) they are written here in one transaction through the storage's own upsert;
any other storage gets them one by one, as before. Either way each value is JSON, read back by
optuna (and optuna-dashboard) as ordinary user attributes.
"""

from __future__ import annotations

from typing import Any

from automl.run import study_backend


def _relational(study: Any) -> Any:
    """The study's RDBStorage, through optuna's cache layer, or None."""
    from optuna.storages import RDBStorage

    backend = study_backend(study)
    if isinstance(backend, RDBStorage) and hasattr(backend, "_set_trial_attr_without_commit"):
        return backend
    return None


def set_user_attrs(study: Any, trial_id: int, attrs: dict[str, Any]) -> None:
    """Set every attribute of `attrs` on the trial, in one transaction where the storage
    allows."""
    if not attrs:
        return
    backend = _relational(study)
    if backend is None:
        for key, value in attrs.items():
            study._storage.set_trial_user_attr(trial_id, key, value)
        return
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(backend.scoped_session, True) as session:
        for key, value in attrs.items():
            backend._set_trial_attr_without_commit(
                session, models.TrialUserAttributeModel, trial_id, key, value
            )
