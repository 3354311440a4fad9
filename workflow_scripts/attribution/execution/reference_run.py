"""Compute reference outputs and timings by running the trusted solutions in the sandbox (the
``references`` rule, and execute runs given no references file)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from attribution.data.loaders import frame_sha256
from attribution.execution.checker import Checker, JSONValue, make_checker
from attribution.execution.references import ReferenceTable, write_references
from attribution.execution.sandbox import SandboxLimits, SandboxPool


def run_reference_programs(
    checker: Checker, task_ids: Sequence[str], workers: int, limits: SandboxLimits | None
) -> None:
    """Run every reference program ``checker`` still needs for ``task_ids``. A pool of its own:
    no process that ever held expected outputs runs a candidate."""
    if not checker.reference_programs(task_ids):
        return
    with SandboxPool(workers, limits, checker.preload) as pool:
        while progs := checker.reference_programs(task_ids):
            for idx, result in pool.imap_unordered(p for _, p in progs):
                checker.set_reference(progs[idx][0], result)


def compute_references(
    benchmark: str,
    tasks: pd.DataFrame,
    workers: int = 1,
    limits: SandboxLimits | None = None,
    checker_options: Mapping[str, JSONValue] | None = None,
) -> ReferenceTable:
    """Reference outputs and CPU times of every task of ``tasks`` (all suites)."""
    checker = make_checker(benchmark, tasks, checker_options)
    run_reference_programs(checker, checker.task_ids(), workers, limits)
    return checker.export_references()


def references_job(
    benchmark: str, dataset: str | Path, out_path: str | Path, workers: int, code: str = ""
) -> ReferenceTable:
    """The ``references`` rule: read the normalized dataset, compute, write the Parquet."""
    tasks = pd.read_parquet(dataset)
    table = compute_references(benchmark, tasks, workers)
    write_references(table, out_path, dataset_sha256=frame_sha256(tasks), code=code)
    return table
