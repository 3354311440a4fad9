"""A dataset's seeded held-out part: the tasks that no model built or fine-tuned here trains on.

``datasets.<name>.held_out: {fraction, seed}`` in the config. The split is a pure function of the
dataset's task ids, the fraction and the seed: the held-out tasks are the first
``ceil(fraction * n)`` ids in the order of ``sha256(f"{seed}:{task_id}")``, so it does not depend
on row order, and a task keeps its side when other tasks are added (unless it falls at the
boundary). The build corpus (:mod:`attribution.models.corpus`), the fine-tuning data
(:mod:`attribution.finetune.dataset`, whose ``eval_fraction`` / ``seed`` must then match) and the
summary's ``subset`` rows (:mod:`attribution.summary`) all use this one function.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TRAIN = "train"
HELD_OUT = "held_out"
PARTS = (TRAIN, HELD_OUT)
ALL = "all"  # the summary's subset of every task


@dataclass(frozen=True)
class HeldOut:
    """A ``held_out`` block: the fraction of tasks held out and the seed of the split."""

    fraction: float
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.fraction < 1:
            raise ValueError(f"held_out.fraction must be in (0, 1), got {self.fraction}")

    @classmethod
    def from_config(cls, block: Mapping[str, Any] | None) -> HeldOut | None:
        if not block:
            return None
        return cls(fraction=float(block["fraction"]), seed=int(block.get("seed", 0)))


def split_problems(problem_ids: Sequence[str], eval_fraction: float, seed: int) -> set[str]:
    """Held-out ids: the first ceil(fraction * n) by a seeded hash order (at least one when the
    fraction is > 0 and there are two or more ids; never all of them)."""
    if eval_fraction <= 0 or len(problem_ids) < 2:
        return set()
    n_eval = min(len(problem_ids) - 1, max(1, math.ceil(eval_fraction * len(problem_ids))))

    def key(pid: str) -> str:
        return hashlib.sha256(f"{seed}:{pid}".encode()).hexdigest()

    return set(sorted((str(p) for p in problem_ids), key=key)[:n_eval])


def task_parts(task_ids: Iterable[str], held_out: HeldOut | None) -> dict[str, str]:
    """task id -> ``train`` | ``held_out`` (every task ``train`` without a split)."""
    ids = list(dict.fromkeys(str(t) for t in task_ids))
    held = split_problems(ids, held_out.fraction, held_out.seed) if held_out else set()
    return {t: HELD_OUT if t in held else TRAIN for t in ids}


def trained_ids(task_ids: Iterable[str], held_out: HeldOut | None) -> list[str]:
    """The task ids a model may train on, in the given order."""
    return [t for t, part in task_parts(task_ids, held_out).items() if part == TRAIN]


def task_id_of(task: Any) -> str:
    """The id of a HumanEval+, CRUXEval or APPS record (:mod:`attribution.data.records`)."""
    for field in ("task_id", "id", "problem_id"):
        if hasattr(task, field):
            return str(getattr(task, field))
    raise TypeError(f"{type(task).__name__} has no task id field")


def dataset_task_ids(dataset: str, frame: Any) -> list[str]:
    """Task ids of a normalized dataset frame (``data/raw/<dataset>.parquet``), in order."""
    from attribution.data.records import records_from_frame

    return [task_id_of(task) for task in records_from_frame(dataset, frame)]
