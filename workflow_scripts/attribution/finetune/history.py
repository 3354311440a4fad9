"""Trainer log history -> ``results/finetune/{name}/history.parquet`` (one row per logged step).

Columns: step, epoch, train_loss, eval_loss, learning_rate, tokens_seen (non-padding input
tokens, prompts included, summed over all processes), wall_time_s (seconds of training since the
run first started, summed over resumed sessions). A missing value is NaN (e.g. eval_loss on a
step without evaluation). The file written by the fine-tune job adds the provenance columns
(:mod:`attribution.provenance`) after these.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import pandas as pd
from transformers import TrainerCallback

HISTORY_COLUMNS = (
    "step",
    "epoch",
    "train_loss",
    "eval_loss",
    "learning_rate",
    "tokens_seen",
    "wall_time_s",
)
# Trainer log keys -> history columns.
_KEYS = {
    "epoch": "epoch",
    "loss": "train_loss",
    "eval_loss": "eval_loss",
    "learning_rate": "learning_rate",
    "num_input_tokens_seen": "tokens_seen",
    "wall_time_s": "wall_time_s",
}


class WallTimeCallback(TrainerCallback):
    """Stamps every log entry with the training wall time, continuing across resumes (the
    resumed state carries the earlier entries; their last stamp is the offset)."""

    def __init__(self) -> None:
        self._start = time.monotonic()
        self._offset = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        stamps = [e["wall_time_s"] for e in state.log_history if "wall_time_s" in e]
        self._offset = max(stamps, default=0.0)
        self._start = time.monotonic()

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if state.log_history:
            state.log_history[-1]["wall_time_s"] = self._offset + time.monotonic() - self._start


def history_frame(log_history: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Merge the Trainer's log entries by step (train and eval entries share a step)."""
    rows: dict[int, dict[str, Any]] = {}
    for entry in log_history:
        # The end-of-run summary carries the run's mean "train_loss": not a step's loss.
        if "step" not in entry or "train_loss" in entry:
            continue
        row = rows.setdefault(int(entry["step"]), {"step": int(entry["step"])})
        for key, column in _KEYS.items():
            value = entry.get(key)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                row[column] = value
    frame = pd.DataFrame.from_records(
        [rows[s] for s in sorted(rows)], columns=list(HISTORY_COLUMNS)
    )
    frame["step"] = frame["step"].astype("int64")
    for column in HISTORY_COLUMNS[1:]:
        frame[column] = frame[column].astype("float64")
    return frame
