"""The ``Checker`` protocol: what the execution engine needs from a benchmark's checker.

A checker turns (task, completion) into a sandbox ``Program`` and the ``SandboxResult`` back
into a ``Verdict``; it never runs code itself. Checkers that derive expected values from a
trusted solution (HumanEval+) also hand out reference programs and take their results; the
others implement that part with ``NoReferences``. ``make_checker`` builds the checker of a
benchmark from a normalized dataset frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import pandas as pd

from attribution.data.records import BENCHMARK_DATASET, BENCHMARKS, records_from_frame
from attribution.execution.references import ReferenceTable
from attribution.execution.sandbox import Program, SandboxResult
from attribution.execution.verdicts import ColumnValue, Verdict

JSONValue = str | int | float | bool | None | list["JSONValue"] | dict[str, "JSONValue"]


class Checker(Protocol):
    """One benchmark's checker (see the module doc)."""

    benchmark: str
    preload: tuple[str, ...]  # modules every sandbox worker imports before forking
    deterministic: bool  # identical (task, completion) pairs may share one run
    extra_columns: Mapping[str, ColumnValue]  # the checker's own executions columns + defaults

    def task_ids(self) -> Sequence[str]:
        """Every task, in dataset order."""
        ...

    def task_columns(self, task_id: str) -> dict[str, ColumnValue]:
        """Task-level columns, also for samples that never run (e.g. APPS difficulty)."""
        ...

    def settings(self) -> dict[str, JSONValue]:
        """Everything besides code, data and references that verdicts depend on (limits,
        comparison mode, suites): part of the executions shards' fingerprint."""
        ...

    def reference_programs(self, task_ids: Sequence[str]) -> list[tuple[str, Program]]:
        """Trusted runs still needed for ``task_ids``; call again after ``set_reference``
        until it returns nothing."""
        ...

    def set_reference(self, task_id: str, result: SandboxResult) -> None: ...

    def import_references(self, table: ReferenceTable) -> None:
        """Use the rows of ``table`` whose key matches the task (others are ignored)."""
        ...

    def export_references(self) -> ReferenceTable: ...

    def cost(self, task_id: str) -> float:
        """A guess of how long a candidate runs (long programs are scheduled first)."""
        ...

    def program(self, task_id: str, completion: str) -> Program: ...

    def judge(self, task_id: str, completion: str, result: SandboxResult) -> Verdict: ...


class NoReferences:
    """The reference part of ``Checker`` for checkers whose expected values are in the data."""

    def reference_programs(self, task_ids: Sequence[str]) -> list[tuple[str, Program]]:
        return []

    def set_reference(self, task_id: str, result: SandboxResult) -> None:
        raise RuntimeError(f"{task_id}: this checker runs no reference programs")

    def import_references(self, table: ReferenceTable) -> None:
        return None

    def export_references(self) -> ReferenceTable:
        return {}

    def cost(self, task_id: str) -> float:
        return 0.0


def checker_class(benchmark: str) -> type[Checker]:
    """The checker class of ``benchmark``."""
    from attribution.execution.apps import AppsChecker
    from attribution.execution.cruxeval import CruxEvalInputChecker, CruxEvalOutputChecker
    from attribution.execution.humanevalplus import HumanEvalPlusChecker

    classes: dict[str, type[Checker]] = {
        "humanevalplus": HumanEvalPlusChecker,
        "cruxeval_o": CruxEvalOutputChecker,
        "cruxeval_i": CruxEvalInputChecker,
        "apps": AppsChecker,
    }
    if benchmark not in classes:
        raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {BENCHMARKS}")
    return classes[benchmark]


def make_checker(
    benchmark: str, tasks: pd.DataFrame, options: Mapping[str, JSONValue] | None = None
) -> Checker:
    """The checker of ``benchmark`` for a normalized dataset frame; ``options`` are the
    checker's keyword arguments (limits, comparison mode, ...)."""
    cls = checker_class(benchmark)
    records = records_from_frame(BENCHMARK_DATASET[benchmark], tasks)
    opts = dict(options or {})
    try:
        return cls(records, **opts)  # type: ignore[call-arg]
    except TypeError as exc:
        raise ValueError(f"{benchmark}: invalid checker options {sorted(opts)}: {exc}") from exc
