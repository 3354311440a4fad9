"""Execute generated samples in the sandbox pool and score them.

Entry points used by the pipeline's ``execute`` and ``score`` rules and by the CLI:

* ``execute_samples(benchmark, tasks, samples, out_path, workers)`` -> executions frame (also
  written to ``out_path`` as Parquet): one row per (task_id, sample). Results stream to shard
  files in ``.{out_path.name}.shards/`` next to ``out_path`` as they arrive; a rerun after a kill
  reuses every finished row whose completion is unchanged. The final file is written atomically
  and the shards removed.
* ``score_executions(benchmark, executions, ks)`` -> metrics dict (pass@k, per task, per suite /
  difficulty, counts).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attribution.data.records import BENCHMARK_DATASET, BENCHMARKS, records_from_frame
from attribution.execution.apps import AppsChecker
from attribution.execution.cruxeval import CruxEvalChecker
from attribution.execution.humanevalplus import HumanEvalPlusChecker
from attribution.execution.passk import pass_at_k_table
from attribution.execution.sandbox import SandboxLimits, SandboxPool, SandboxResult
from attribution.io import atomic_path, write_parquet
from attribution.provenance import with_columns

BASE_COLUMNS = {
    "task_id": "",
    "sample": 0,
    "completion_sha256": "",
    "status": "",
    "passed": False,
    "error": "",
    "details": "",
    "wall_s": 0.0,
    "layers": "",
}
SHARD_ROWS = 256
SHARD_SECONDS = 30.0


CHECKERS = {
    "humanevalplus": HumanEvalPlusChecker,
    "cruxeval_o": CruxEvalChecker,
    "cruxeval_i": CruxEvalChecker,
    "apps": AppsChecker,
}


def make_checker(benchmark: str, tasks: pd.DataFrame, **options: Any) -> Any:
    """The checker object of ``benchmark`` for a normalized dataset frame."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {BENCHMARKS}")
    records = records_from_frame(BENCHMARK_DATASET[benchmark], tasks)
    if benchmark.startswith("cruxeval"):
        return CruxEvalChecker(benchmark, records, **options)
    return CHECKERS[benchmark](records, **options)


def completion_sha256(completion: Any) -> str:
    text = completion if isinstance(completion, str) else repr(completion)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _columns(checker: Any) -> dict[str, Any]:
    return {**BASE_COLUMNS, **checker.extra_columns}


def _row(checker: Any, task_id: str, sample: int, completion: Any, **fields: Any) -> dict[str, Any]:
    row = dict(_columns(checker))
    row.update(task_id=task_id, sample=int(sample), completion_sha256=completion_sha256(completion))
    row.update(fields)
    # Text from the sandbox side may hold lone surrogates; Parquet needs valid UTF-8.
    for key, value in row.items():
        if isinstance(value, str):
            row[key] = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return row


def _precheck(samples: pd.DataFrame, tasks: dict[str, Any]) -> list[tuple[int, str, str]]:
    """Per-sample problems found before running anything: (row position, status, error)."""
    problems = []
    has_error = "error" in samples.columns
    for pos, (task_id, completion) in enumerate(
        zip(samples["task_id"], samples["completion"], strict=True)
    ):
        err = samples["error"].iat[pos] if has_error else None
        if isinstance(err, str) and err:
            problems.append((pos, "malformed", err))
        elif not isinstance(task_id, str) or not task_id:
            problems.append((pos, "malformed", f"sample row {pos}: missing task_id"))
        elif task_id not in tasks:
            problems.append((pos, "unknown_task", f"sample row {pos}: unknown task_id {task_id!r}"))
        elif not isinstance(completion, str):
            problems.append((pos, "malformed", f"sample row {pos}: completion is not text"))
        elif not completion.strip():
            problems.append((pos, "empty_completion", f"sample row {pos}: empty completion"))
    return problems


def _shard_dir(out_path: Path) -> Path:
    return out_path.parent / f".{out_path.name}.shards"


def _load_shards(shards: Path) -> pd.DataFrame | None:
    files = sorted(shards.glob("part-*.parquet")) if shards.is_dir() else []
    frames = []
    for f in files:
        try:
            frames.append(pd.read_parquet(f))
        except Exception:  # a shard cut short by a kill: its rows simply run again
            continue
    return pd.concat(frames, ignore_index=True) if frames else None


def execute_samples(
    benchmark: str,
    tasks: pd.DataFrame,
    samples: pd.DataFrame,
    out_path: str | Path,
    workers: int = 1,
    limits: SandboxLimits | None = None,
    progress: bool = True,
    checker_options: dict[str, Any] | None = None,
    reference_cache: Path | bool = True,
    provenance: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Run every sample of ``samples`` (columns task_id, sample, completion; optional error) on
    the tasks of the normalized dataset frame ``tasks`` and write the executions Parquet.

    ``checker_options`` go to the benchmark's checker (e.g. ``{"suites": ("base",)}`` for
    HumanEval+, ``{"extract": False}`` for CRUXEval). HumanEval+ reference outputs and times
    are cached by content hash in ``reference_cache`` (True: ``default_reference_cache()``; a
    folder; False: off). Malformed samples get a status of their own
    (``malformed``, ``unknown_task``, ``empty_completion``) and count as failures.
    ``provenance``: a record (attribution.provenance) written as columns after the verdicts.
    """
    out_path = Path(out_path)
    missing = {"task_id", "sample", "completion"} - set(samples.columns)
    if missing:
        raise ValueError(f"samples frame lacks column(s) {sorted(missing)}")
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {BENCHMARKS}")
    # The candidate pool starts now and gets ready while the tasks are parsed and the references
    # run; it is closed unused if nothing is left to run.
    pool = SandboxPool(workers, limits, CHECKERS[benchmark].preload, wait=False)
    try:
        return _execute(benchmark, tasks, samples, out_path, pool, workers, limits, progress,
                        checker_options, reference_cache, provenance)  # fmt: skip
    finally:
        pool.close()


def _execute(
    benchmark: str,
    tasks: pd.DataFrame,
    samples: pd.DataFrame,
    out_path: Path,
    pool: SandboxPool,
    workers: int,
    limits: SandboxLimits | None,
    progress: bool,
    checker_options: dict[str, Any] | None,
    reference_cache: Path | bool,
    provenance: dict[str, Any] | None = None,
) -> pd.DataFrame:
    checker = make_checker(benchmark, tasks, **(checker_options or {}))
    samples = samples.reset_index(drop=True)
    problems = {pos: (st, err) for pos, st, err in _precheck(samples, checker.tasks)}

    rows: list[dict[str, Any]] = []
    task_columns = getattr(checker, "task_columns", None)
    for pos, (status, err) in problems.items():
        tid = samples["task_id"].iat[pos]
        # A sample that never ran still belongs to its task's group (e.g. APPS difficulty).
        known = isinstance(tid, str) and tid in checker.tasks and task_columns is not None
        rows.append(
            _row(
                checker,
                tid if isinstance(tid, str) else "",
                samples["sample"].iat[pos],
                samples["completion"].iat[pos],
                status=status,
                error=err,
                **(task_columns(checker.tasks[tid]) if known else {}),
            )
        )

    shards = _shard_dir(out_path)
    wanted: dict[tuple[str, int, str], tuple[str, int, str]] = {}
    for pos in range(len(samples)):
        if pos in problems:
            continue
        tid, smp, comp = (samples[c].iat[pos] for c in ("task_id", "sample", "completion"))
        wanted[(tid, int(smp), completion_sha256(comp))] = (tid, int(smp), comp)

    # Rows finished by an earlier, interrupted run; a shard row whose sample has changed since
    # (other completion) is dropped and that sample runs again.
    done = _load_shards(shards)
    if done is not None:
        for row in done.to_dict(orient="records"):
            key = (row["task_id"], int(row["sample"]), row["completion_sha256"])
            if wanted.pop(key, None) is not None:
                rows.append(row)
    todo = list(wanted.values())

    if todo:
        if checker.needs_reference:
            cache_dir = default_reference_cache() if reference_cache is True else reference_cache
            _run_references(
                checker, sorted({t for t, _, _ in todo}), workers, limits, cache_dir or None
            )
        rows += _run_candidates(checker, todo, shards, pool, progress)

    frame = pd.DataFrame(rows, columns=list(_columns(checker)))
    order = {t: i for i, t in enumerate(checker.tasks)}
    frame["_o"] = frame["task_id"].map(order).fillna(len(order))
    frame = frame.sort_values(["_o", "task_id", "sample"], kind="stable").drop(columns="_o")
    frame = frame.reset_index(drop=True)
    frame["sample"] = frame["sample"].astype("int64")
    if provenance is not None:
        frame = with_columns(frame, provenance)
    write_parquet(frame, out_path)
    if shards.is_dir():
        for f in shards.glob("*"):
            f.unlink()
        shards.rmdir()
    return frame


def default_reference_cache() -> Path:
    """``$XDG_CACHE_HOME/attribution/references`` (default ``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "attribution" / "references"


def _run_references(
    checker: Any,
    task_ids: list[str],
    workers: int,
    limits: SandboxLimits | None,
    cache_dir: Path | None,
) -> None:
    cache_file = cache_dir / f"{checker.benchmark}.pkl" if cache_dir else None
    cache: dict[str, Any] = {}
    if cache_file is not None and cache_file.exists():
        try:  # our own file (mode 0600); a damaged one is simply recomputed
            cache = pickle.loads(cache_file.read_bytes())
        except Exception:
            cache = {}
        checker.import_references(cache)
    if not checker.reference_programs(task_ids):
        return
    # A separate pool: no process that ever held expected outputs runs a candidate.
    with SandboxPool(workers, limits, checker.preload) as pool:
        while progs := checker.reference_programs(task_ids):
            for idx, result in pool.imap_unordered(p for _, p in progs):
                checker.set_reference(progs[idx][0], result)
    if cache_file is not None:
        cache.update(checker.export_references())
        with atomic_path(cache_file) as tmp:
            tmp.write_bytes(pickle.dumps(cache, protocol=pickle.HIGHEST_PROTOCOL))
            os.chmod(tmp, 0o600)


def _run_candidates(
    checker: Any,
    todo: list[tuple[str, int, str]],
    shards: Path,
    pool: SandboxPool,
    progress: bool,
) -> list[dict[str, Any]]:
    from tqdm import tqdm

    shards.mkdir(parents=True, exist_ok=True)
    next_part = len(list(shards.glob("part-*.parquet")))
    rows: list[dict[str, Any]] = []
    buffer: list[dict[str, Any]] = []
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal next_part, last_flush
        if buffer:
            frame = pd.DataFrame(buffer, columns=list(_columns(checker)))
            write_parquet(frame, shards / f"part-{next_part:06d}.parquet")
            next_part += 1
            buffer.clear()
        last_flush = time.monotonic()

    if checker.needs_reference:  # longest first, so no worker is left with a long tail
        todo = sorted(todo, key=lambda item: -checker.cost(item[0]))
    # Identical (task, completion) pairs run once when the checker's programs are deterministic
    # (CRUXEval: pure functions); every sample still gets its own row.
    groups: dict[tuple[str, str], list[int]] = {}
    for i, (tid, _, comp) in enumerate(todo):
        key = (tid, comp) if checker.deterministic else (tid, f"{i}")
        groups.setdefault(key, []).append(i)
    members = list(groups.values())
    programs = (checker.program(checker.tasks[todo[m[0]][0]], todo[m[0]][2]) for m in members)
    bar = tqdm(total=len(todo), disable=not progress, unit="prog", desc=checker.benchmark)
    for idx, result in pool.imap_unordered(programs):
        first = todo[members[idx][0]]
        fields = _judge(checker, first[0], first[2], result)
        for i in members[idx]:
            tid, smp, comp = todo[i]
            row = _row(checker, tid, smp, comp, **fields)
            rows.append(row)
            buffer.append(row)
        bar.update(len(members[idx]))
        if len(buffer) >= SHARD_ROWS or time.monotonic() - last_flush > SHARD_SECONDS:
            flush()
    flush()
    bar.close()
    return rows


def _judge(checker: Any, task_id: str, completion: str, result: SandboxResult) -> dict[str, Any]:
    task = checker.tasks[task_id]
    if checker.benchmark.startswith("cruxeval"):
        fields = checker.judge(task, completion, result)
    else:
        fields = checker.judge(task, result)
    if result.status == "sandbox_error":
        fields["status"], fields["passed"] = "sandbox_error", False
    fields["wall_s"] = float(result.wall_s)
    fields["layers"] = ",".join(result.layers)
    return fields


# ------------------------------------------------------------------------------------------------
# Scoring


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
    ``execution_only`` without the rule, ``official_skipped``. apps: pass@k, strict accuracy and
    average test-case pass rate overall and per difficulty. ``counts``: samples, tasks,
    statuses.
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
        metrics.update(_block(frame, "passed", ks))
        metrics.update(_apps_stats(frame))
        metrics["by_difficulty"] = {}
        for diff, part in frame.groupby("difficulty", sort=True):
            block = _block(part, "passed", ks)
            block.pop("per_task")
            metrics["by_difficulty"][str(diff)] = {**block, **_apps_stats(part)}
    return json.loads(json.dumps(metrics, default=_plain_json))


def _apps_stats(frame: pd.DataFrame) -> dict[str, Any]:
    if not len(frame):
        return {"strict_accuracy": 0.0, "test_case_pass_rate": 0.0, "samples": 0}
    total = frame["tests_total"].astype(float)
    rate = np.where(total > 0, frame["tests_passed"].astype(float) / total.clip(lower=1), 0.0)
    return {
        "strict_accuracy": float(frame["passed"].astype(bool).mean()),
        "test_case_pass_rate": float(rate.mean()),
        "samples": int(len(frame)),
        "tasks": int(frame["task_id"].nunique()),
    }


def _plain_json(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(type(obj).__name__)
