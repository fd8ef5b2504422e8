"""TensorBoard logs without TensorFlow: each trial's hyperparameters and scores for the HParams
view, written with TensorBoard's own event writer (importing TensorFlow costs ~7 s; this doesn't).

`tensorboard --logdir RUN_DIR` then lists every completed trial in HParams (each trial's
`tensorboard/hparams` run) beside the Keras trials' per-epoch curves (`tensorboard/train`,
`tensorboard/validation`).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

TENSORBOARD_DIR = "tensorboard"


def _hparam_value(value: Any) -> bool | int | float | str:
    if isinstance(value, bool | int | float | str):
        return value
    return "none" if value is None else str(value)


def write_hparams(
    directory: Path, trial_id: str, hparams: dict[str, Any], metrics: dict[str, float]
) -> None:
    """One event file: the trial's hparams summary plus one scalar per metric at step 0.

    Written with TensorBoard's record writer on a plain file: its EventFileWriter would import
    TensorFlow for `tf.io.gfile`."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import summary_v2
    from tensorboard.summary.writer.record_writer import RecordWriter

    directory.mkdir(parents=True, exist_ok=True)
    now = time.time()
    name = f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.{os.getpid()}"
    clean = {k: _hparam_value(v) for k, v in hparams.items()}
    values = [Summary.Value(tag=k, simple_value=float(v)) for k, v in metrics.items()]
    events = [
        Event(wall_time=now, file_version="brain.Event:2"),
        Event(wall_time=now, step=0, summary=summary_v2.hparams_pb(clean, trial_id=trial_id)),
        Event(wall_time=now, step=0, summary=Summary(value=values)),
    ]
    with open(directory / name, "wb") as handle:
        writer = RecordWriter(handle)
        for event in events:
            writer.write(event.SerializeToString())
