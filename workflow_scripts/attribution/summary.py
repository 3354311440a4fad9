"""One long table of every score: ``results/summary/metrics.parquet``.

One row per (model, benchmark, metric, subset). Each row carries the dataset's content hash and
the code version that produced it, so numbers from different dataset versions or code are never
compared by accident, and the training step / tokens parsed from the model revision, so the
checkpoint sweeps and figures can plot against them.

A metric's identity is in columns: ``variant`` (the block it comes from: ``""`` for the
benchmark's own score, ``base`` / ``plus`` for HumanEval+, a difficulty for APPS,
``execution_only`` for CRUXEval without the official skip rule), ``stat`` (``pass@k``,
``strict_accuracy``, ``test_case_pass_rate``) and ``k``; ``metric`` keeps the packed name
(``plus/pass@1``). ``subset`` is ``all``, or for a dataset with a held-out part
(:mod:`attribution.data.splits`) also ``train`` and ``held_out``: pass@k averaged over the
tasks of that part only (the per-task unbiased estimates of metrics.json, so the parts'
task-weighted mean is the ``all`` value).

The provenance columns (dtype, device, GPU, backend, batch size, library versions:
:mod:`attribution.provenance`) say how the generations behind each number were made; the
comparison warns when compared rows differ in them.
``sandbox_layers``: the sandbox isolation layers its executions ran under.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from attribution.config import parse_revision_step, parse_revision_tokens
from attribution.data.records import BENCHMARK_DATASET
from attribution.data.splits import ALL, PARTS
from attribution.provenance import COMPARED as PROVENANCE

SUMMARY_COLUMNS = (
    "model",
    "model_entry",
    "revision",
    "training_step",
    "training_tokens",
    "benchmark",
    "dataset",
    "dataset_sha256",
    "metric",
    "variant",
    "stat",
    "k",
    "subset",
    "value",
    "n",
    "tasks",
    "code_version",
    *PROVENANCE,  # how the generations were made (metrics.json's provenance block)
    "sandbox_layers",
)
PASS_AT = re.compile(r"^pass@(\d+)$")
# Leaves of metrics.json that are scores (fractions in [0, 1]); counts and per-task blocks are not.
SCORE_LEAVES = ("strict_accuracy", "test_case_pass_rate")
SKIPPED_BLOCKS = ("per_task", "counts", "provenance")
# attribution.summary's name for APPS rows without a difficulty (a by_difficulty key "")
UNRECORDED = "unknown_difficulty"


@dataclass(frozen=True)
class Run:
    """One model x benchmark result: the wildcard, its config entry and revision, the file."""

    model: str
    model_entry: str
    revision: str | None
    benchmark: str
    metrics_path: str


class MetricRow(NamedTuple):
    """One score of a metrics.json: its packed name, identity columns, value, number of tasks,
    and the per-task block it averages (None when the block has none)."""

    metric: str
    variant: str
    stat: str
    k: int | None
    value: float
    tasks: int | None
    per_task: Mapping[str, Mapping[str, Any]] | None = None


def metric_rows(metrics: Mapping[str, Any]) -> Iterator[MetricRow]:
    """Every score in a metrics.json dict. Nested blocks give slash names and variants:
    ``base/pass@1``, ``plus/pass@1`` (HumanEval+), ``introductory/pass@1`` (APPS by difficulty;
    rows without a difficulty are ``unknown_difficulty``), ``execution_only/pass@1``
    (CRUXEval without the official skip rule)."""
    tasks = metrics.get("counts", {}).get("tasks")

    def walk(
        block: Mapping[str, Any], path: tuple[str, ...], block_tasks: int | None
    ) -> Iterator[MetricRow]:
        for key, value in block.items():
            if key in SKIPPED_BLOCKS:
                continue
            if isinstance(value, Mapping):
                if key == "by_difficulty":
                    for diff, sub in value.items():
                        # An empty key means rows without a difficulty: keep them visible.
                        name = diff or UNRECORDED
                        yield from walk(sub, (*path, name), sub.get("tasks", block_tasks))
                else:
                    yield from walk(value, (*path, key), block_tasks)
                continue
            match = PASS_AT.match(key)
            if match or key in SCORE_LEAVES:
                k = int(match.group(1)) if match else None
                per_task = block.get("per_task") if match else None
                yield MetricRow(
                    metric="/".join((*path, key)),
                    variant="/".join(path),
                    stat="pass@k" if match else key,
                    k=k,
                    value=float(value),
                    tasks=block_tasks,
                    per_task=per_task,
                )

    yield from walk(metrics, (), tasks)


def subset_rows(row: MetricRow, parts: Mapping[str, str]) -> Iterator[tuple[str, float, int]]:
    """(subset, pass@k, tasks) of ``row`` over each part of ``parts`` (task id -> part) that
    holds scored tasks; nothing for rows without per-task values."""
    if row.per_task is None or row.k is None:
        return
    key = f"pass@{row.k}"
    for part in PARTS:
        values = [
            float(scores[key])
            for task, scores in row.per_task.items()
            if parts.get(str(task)) == part and key in scores
        ]
        if values:
            yield part, sum(values) / len(values), len(values)


def summarize(
    runs: list[Run],
    dataset_provenance: Mapping[str, str | Path],
    code_version: str,
    task_parts: Mapping[str, Mapping[str, str]] | None = None,
) -> pd.DataFrame:
    """The summary table (columns SUMMARY_COLUMNS) of ``runs``; ``dataset_provenance`` maps a
    dataset name to its ``data/raw/{dataset}.json`` (holding ``content_sha256``);
    ``task_parts`` maps a dataset with a held-out part to its task id -> ``train`` |
    ``held_out`` (:func:`attribution.data.splits.task_parts`)."""
    task_parts = task_parts or {}
    hashes: dict[str, str] = {}
    for name, path in dataset_provenance.items():
        record = json.loads(Path(path).read_text())
        if "content_sha256" not in record:
            raise ValueError(f"{path}: provenance record has no 'content_sha256'")
        hashes[name] = record["content_sha256"]
    rows = []
    for run in runs:
        dataset = BENCHMARK_DATASET[run.benchmark]
        if dataset not in hashes:
            raise ValueError(f"{run.model}/{run.benchmark}: no provenance for dataset {dataset!r}")
        metrics = json.loads(Path(run.metrics_path).read_text())
        if metrics.get("benchmark", run.benchmark) != run.benchmark:
            raise ValueError(
                f"{run.metrics_path}: holds benchmark {metrics.get('benchmark')!r}, "
                f"expected {run.benchmark!r}"
            )
        n = metrics.get("counts", {}).get("min_n")
        made = metrics.get("provenance", {})
        # The sandbox's isolation layers in force for every executed sample (metrics.json).
        layers = ",".join(metrics.get("sandbox", {}).get("layers", []))
        common = {
            "model": run.model,
            "model_entry": run.model_entry,
            "revision": run.revision,
            "training_step": parse_revision_step(run.revision),
            "training_tokens": parse_revision_tokens(run.revision),
            "benchmark": run.benchmark,
            "dataset": dataset,
            "dataset_sha256": hashes[dataset],
            "n": n,
            "code_version": code_version,
            **{c: made.get(c) for c in PROVENANCE},
            "sandbox_layers": layers,
        }
        for row in metric_rows(metrics):
            identity = {"metric": row.metric, "variant": row.variant, "stat": row.stat, "k": row.k}
            rows.append(
                {**common, **identity, "subset": ALL, "value": row.value, "tasks": row.tasks}
            )
            if dataset in task_parts:
                for subset, value, tasks in subset_rows(row, task_parts[dataset]):
                    rows.append(
                        {**common, **identity, "subset": subset, "value": value, "tasks": tasks}
                    )
    frame = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    for column in ("training_step", "k", "n", "tasks", "gpu_count", "batch_size"):
        frame[column] = frame[column].astype("Int64")
    frame["training_tokens"] = frame["training_tokens"].astype("float64")
    frame["value"] = frame["value"].astype("float64")
    for column in (
        "model",
        "model_entry",
        "revision",
        "benchmark",
        "dataset",
        "metric",
        "variant",
        "stat",
        "subset",
        "sandbox_layers",
    ):
        frame[column] = frame[column].astype("string")
    for column in set(PROVENANCE) - {"gpu_count", "batch_size"}:
        frame[column] = frame[column].astype("string")
    order = frame["subset"].map({ALL: 0, **{p: i + 1 for i, p in enumerate(PARTS)}})
    frame = frame.assign(_subset=order).sort_values(
        ["model", "benchmark", "metric", "_subset"], kind="stable"
    )
    return frame.drop(columns="_subset").reset_index(drop=True)
