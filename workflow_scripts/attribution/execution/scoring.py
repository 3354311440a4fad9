"""Score an executions frame (the ``score`` rule and the CLI): pass@k and each benchmark's other
metrics. Reads only columns of executions.parquet, so it shares no code with execution (a
scoring edit reruns scoring alone)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from attribution.data.records import BENCHMARKS
from attribution.execution.passk import pass_at_k_table

APPS_COMPARISONS = ("official", "strict")


def _counts(frame: pd.DataFrame, column: str) -> dict[str, tuple[int, int]]:
    grouped = frame.groupby("task_id", sort=False)[column]
    return {t: (int(s.size), int(s.astype(bool).sum())) for t, s in grouped}


def _block(frame: pd.DataFrame, column: str, ks: list[int] | None) -> dict[str, Any]:
    counts = _counts(frame, column)
    means, per_task = pass_at_k_table(counts, ks)
    return {
        **means,
        "per_task": {t: {"n": n, "c": c, **per_task[t]} for t, (n, c) in counts.items()},
    }


def score_executions(
    benchmark: str, executions: pd.DataFrame, ks: list[int] | None = None
) -> dict[str, Any]:
    """Metrics of an executions frame: pass@k (fractions in [0, 1]) for each requested k that
    every task's n reaches (all k <= min n when ``ks`` is None), per task and averaged.

    humanevalplus: ``base`` and ``plus`` blocks (``plus`` = base and plus tests, the HumanEval+
    number). cruxeval_*: the official verdict (skip rule applied, n kept) at top level,
    ``execution_only`` without the rule, ``official_skipped``. apps: pass@k, strict accuracy
    (all tests pass) and average test-case pass rate overall and per difficulty, with the
    configured comparison (``comparison``); ``by_comparison`` holds the same numbers under both
    the official and the strict comparison, and ``lenient_passes`` counts the samples that pass
    only under the official one. ``counts``: samples, tasks, statuses.
    """
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}")
    frame = executions[executions["task_id"].astype(str) != ""]
    statuses = Counter(executions["status"].astype(str))
    ns = frame.groupby("task_id").size()
    metrics: dict[str, Any] = {
        "benchmark": benchmark,
        "counts": {
            "samples": int(len(executions)),
            "scored_samples": int(len(frame)),
            "tasks": int(ns.size),
            "min_n": int(ns.min()) if ns.size else 0,
            "max_n": int(ns.max()) if ns.size else 0,
            "status": dict(sorted(statuses.items())),
            "without_task_id": int(len(executions) - len(frame)),
        },
    }
    if benchmark == "humanevalplus":
        metrics["base"] = _block(frame, "base_passed", ks)
        metrics["plus"] = _block(frame, "plus_passed", ks)
        metrics.update({k: v for k, v in metrics["plus"].items() if k.startswith("pass@")})
    elif benchmark.startswith("cruxeval"):
        block = _block(frame, "passed", ks)
        metrics.update(block)
        execution_only = _block(frame, "passed_execution", ks)
        metrics["execution_only"] = {k: v for k, v in execution_only.items() if k != "per_task"}
        metrics["official_skipped"] = int(frame["official_skip"].astype(bool).sum())
    else:
        metrics.update(_apps_metrics(frame, ks))
    return json.loads(json.dumps(metrics, default=_plain_json))


def _apps_metrics(frame: pd.DataFrame, ks: list[int] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "comparison" in frame.columns:
        out["comparison"] = "+".join(sorted(set(frame["comparison"].astype(str))))
    out.update(_block(frame, "passed", ks))
    out.update(_apps_stats(frame, "passed", "tests_passed"))
    out["by_difficulty"] = {}
    for diff, part in frame.groupby("difficulty", sort=True):
        block = _block(part, "passed", ks)
        block.pop("per_task")
        out["by_difficulty"][str(diff)] = {**block, **_apps_stats(part, "passed", "tests_passed")}
    if not {f"passed_{m}" for m in APPS_COMPARISONS} <= set(frame.columns):
        return out  # executions written before both verdicts were recorded
    out["by_comparison"] = {}
    for name in APPS_COMPARISONS:
        block = _block(frame, f"passed_{name}", ks)
        block.pop("per_task")
        stats = _apps_stats(frame, f"passed_{name}", f"tests_passed_{name}")
        out["by_comparison"][name] = {**block, **stats}
    official, strict = frame["passed_official"].astype(bool), frame["passed_strict"].astype(bool)
    out["lenient_passes"] = int((official & ~strict).sum())
    return out


def _apps_stats(frame: pd.DataFrame, passed: str, tests_passed: str) -> dict[str, Any]:
    if not len(frame):
        return {"strict_accuracy": 0.0, "test_case_pass_rate": 0.0, "samples": 0, "tasks": 0}
    total = frame["tests_total"].astype(float)
    rate = np.where(total > 0, frame[tests_passed].astype(float) / total.clip(lower=1), 0.0)
    return {
        "strict_accuracy": float(frame[passed].astype(bool).mean()),
        "test_case_pass_rate": float(rate.mean()),
        "samples": int(len(frame)),
        "tasks": int(frame["task_id"].nunique()),
    }


def _plain_json(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(type(obj).__name__)
