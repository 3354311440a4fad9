"""One long table of every score: ``results/summary/metrics.parquet``.

One row per (model, benchmark, metric). Each row carries the dataset's content hash and the
code version that produced it, so numbers from different dataset versions or code are never
compared by accident, and the training step / tokens parsed from the model revision, so the
checkpoint sweeps and figures can plot against them. The provenance columns (dtype, device,
GPU, backend, batch size, library versions: :mod:`attribution.provenance`) say how the
generations behind each number were made; the comparison warns when compared rows differ in them.
``sandbox_layers``: the sandbox isolation layers its executions ran under.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from attribution.config import parse_revision_step, parse_revision_tokens
from attribution.data.records import BENCHMARK_DATASET
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
    "k",
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


@dataclass(frozen=True)
class Run:
    """One model x benchmark result: the wildcard, its config entry and revision, the file."""

    model: str
    model_entry: str
    revision: str | None
    benchmark: str
    metrics_path: str


def metric_rows(metrics: Mapping[str, Any]) -> Iterator[tuple[str, int | None, float, int | None]]:
    """(metric name, k, value, tasks) for every score in a metrics.json dict. Nested blocks
    give slash names: ``base/pass@1``, ``plus/pass@1`` (HumanEval+), ``introductory/pass@1``
    (APPS by difficulty), ``execution_only/pass@1`` (CRUXEval without the official skip rule)."""
    tasks = metrics.get("counts", {}).get("tasks")

    def walk(block: Mapping[str, Any], prefix: str, block_tasks: int | None) -> Iterator[Any]:
        for key, value in block.items():
            if key in SKIPPED_BLOCKS:
                continue
            if isinstance(value, Mapping):
                if key == "by_difficulty":
                    for diff, sub in value.items():
                        # An empty key means rows without a difficulty: keep them visible.
                        name = diff or "unknown_difficulty"
                        yield from walk(sub, f"{prefix}{name}/", sub.get("tasks", block_tasks))
                else:
                    yield from walk(value, f"{prefix}{key}/", block_tasks)
                continue
            match = PASS_AT.match(key)
            if match or key in SCORE_LEAVES:
                k = int(match.group(1)) if match else None
                yield f"{prefix}{key}", k, float(value), block_tasks

    yield from walk(metrics, "", tasks)


def summarize(
    runs: list[Run],
    dataset_provenance: Mapping[str, str | Path],
    code_version: str,
) -> pd.DataFrame:
    """The summary table (columns SUMMARY_COLUMNS) of ``runs``; ``dataset_provenance`` maps a
    dataset name to its ``data/raw/{dataset}.json`` (holding ``content_sha256``)."""
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
        for metric, k, value, tasks in metric_rows(metrics):
            rows.append(
                {
                    "model": run.model,
                    "model_entry": run.model_entry,
                    "revision": run.revision,
                    "training_step": parse_revision_step(run.revision),
                    "training_tokens": parse_revision_tokens(run.revision),
                    "benchmark": run.benchmark,
                    "dataset": dataset,
                    "dataset_sha256": hashes[dataset],
                    "metric": metric,
                    "k": k,
                    "value": value,
                    "n": n,
                    "tasks": tasks,
                    "code_version": code_version,
                    **{c: made.get(c) for c in PROVENANCE},
                    "sandbox_layers": layers,
                }
            )
    frame = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    for column in ("training_step", "k", "n", "tasks", "gpu_count", "batch_size"):
        frame[column] = frame[column].astype("Int64")
    frame["training_tokens"] = frame["training_tokens"].astype("float64")
    frame["value"] = frame["value"].astype("float64")
    for column in ("model", "model_entry", "revision", "benchmark", "dataset", "metric",
                   "sandbox_layers"):  # fmt: skip
        frame[column] = frame[column].astype("string")
    for column in set(PROVENANCE) - {"gpu_count", "batch_size"}:
        frame[column] = frame[column].astype("string")
    return frame.sort_values(["model", "benchmark", "metric"], kind="stable").reset_index(drop=True)
