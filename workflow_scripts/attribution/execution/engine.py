"""Execute generated samples in the sandbox pool (the ``execute`` rule and the CLI).

``execute_samples(benchmark, tasks, samples, out_path, workers)`` -> executions frame (also
written to ``out_path`` as Parquet): one row per (task_id, sample) with ``status`` (one of
``verdicts.STATUSES``), ``reason`` (why it failed, in words), ``passed``, the time limit applied
and the checker's own columns. Scoring (pass@k) is ``attribution.execution.scoring``, kept apart
so that a scoring edit never reruns execution.

Resume: results stream to shard files in ``.{out_path.name}.shards/`` as they arrive, next to a
``fingerprint.json`` of everything a verdict depends on (execution code, dataset content,
checker settings such as limits and comparison mode, sandbox limits, reference outputs and
timings). A rerun after a kill reuses the finished rows only when the fingerprint is the same
and the sample's completion is unchanged; otherwise the shards are discarded. Reference outputs
computed during a run go to the references file given, or else to the shard folder, so that a
resumed run uses the same limits.
The final file is written atomically and the shards removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from attribution.data.loaders import frame_sha256
from attribution.data.records import BENCHMARKS
from attribution.execution.checker import Checker, JSONValue, checker_class, make_checker
from attribution.execution.reference_run import run_reference_programs
from attribution.execution.references import (
    ReferenceError,
    ReferenceTable,
    read_references,
    table_digest,
    write_references,
)
from attribution.execution.sandbox import SandboxLimits, SandboxPool, SandboxResult
from attribution.execution.verdicts import (
    EMPTY_COMPLETION,
    MALFORMED,
    SANDBOX_ERROR,
    STATUSES,
    UNKNOWN_TASK,
    ColumnValue,
)
from attribution.io import write_json, write_parquet
from attribution.provenance import with_columns

log = logging.getLogger(__name__)

BASE_COLUMNS: dict[str, ColumnValue] = {
    "task_id": "",
    "sample": 0,
    "completion_sha256": "",
    "status": "",
    "passed": False,
    "reason": "",
    "error": "",
    "details": "",
    "wall_s": 0.0,
    "time_limit_s": 0.0,
    "layers": "",
}
SHARD_ROWS = 256
SHARD_SECONDS = 30.0
FINGERPRINT_VERSION = 1
# The code a verdict depends on, conservatively: the whole execution package, the dataset
# records and loaders, the Parquet writer (a scoring-only edit merely discards the shards of an
# interrupted run).
_PACKAGE = Path(__file__).resolve().parent
EXECUTION_CODE = (
    *sorted(p for p in _PACKAGE.rglob("*.py") if "__pycache__" not in p.parts),
    _PACKAGE.parent / "data" / "records.py",
    _PACKAGE.parent / "data" / "loaders.py",
    _PACKAGE.parent / "io.py",
)
ReferencesArg = str | Path | ReferenceTable | None


def completion_sha256(completion: Any) -> str:
    text = completion if isinstance(completion, str) else repr(completion)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _columns(checker: Checker) -> dict[str, ColumnValue]:
    return {**BASE_COLUMNS, **checker.extra_columns}


def _row(
    checker: Checker, task_id: str, sample: int, completion: Any, **fields: Any
) -> dict[str, Any]:
    row = dict(_columns(checker))
    row.update(task_id=task_id, sample=int(sample), completion_sha256=completion_sha256(completion))
    row.update(fields)
    if row["status"] not in STATUSES:
        raise ValueError(f"{checker.benchmark}: unknown status {row['status']!r} for {task_id}")
    # Text from the sandbox side may hold lone surrogates; Parquet needs valid UTF-8.
    for key, value in row.items():
        if isinstance(value, str):
            row[key] = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return row


def _precheck(samples: pd.DataFrame, task_ids: set[str]) -> list[tuple[int, str, str]]:
    """Per-sample problems found before running anything: (row position, status, error)."""
    problems = []
    has_error = "error" in samples.columns
    for pos, (task_id, completion) in enumerate(
        zip(samples["task_id"], samples["completion"], strict=True)
    ):
        err = samples["error"].iat[pos] if has_error else None
        if isinstance(err, str) and err:
            problems.append((pos, MALFORMED, err))
        elif not isinstance(task_id, str) or not task_id:
            problems.append((pos, MALFORMED, f"sample row {pos}: missing task_id"))
        elif task_id not in task_ids:
            problems.append((pos, UNKNOWN_TASK, f"sample row {pos}: unknown task_id {task_id!r}"))
        elif not isinstance(completion, str):
            problems.append((pos, MALFORMED, f"sample row {pos}: completion is not text"))
        elif not completion.strip():
            problems.append((pos, EMPTY_COMPLETION, f"sample row {pos}: empty completion"))
    return problems


def execution_code_hash() -> str:
    """Content hash of the code verdicts depend on (part of the shards' fingerprint)."""
    digest = hashlib.sha256()
    for path in EXECUTION_CODE:
        digest.update(path.relative_to(_PACKAGE.parent).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def execute_samples(
    benchmark: str,
    tasks: pd.DataFrame,
    samples: pd.DataFrame,
    out_path: str | Path,
    workers: int = 1,
    limits: SandboxLimits | None = None,
    progress: bool = True,
    checker_options: Mapping[str, JSONValue] | None = None,
    references: ReferencesArg = None,
    references_mode: Literal["update", "require"] = "update",
    provenance: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Run every sample of ``samples`` (columns task_id, sample, completion; optional error) on
    the tasks of the normalized dataset frame ``tasks`` and write the executions Parquet.

    ``checker_options`` go to the benchmark's checker (e.g. ``{"suites": ["base"]}`` or
    ``{"min_time_limit": 2.0}`` for HumanEval+, ``{"extract": False}`` for CRUXEval,
    ``{"comparison": "strict"}`` for APPS). ``references``: reference outputs and timings
    (HumanEval+), a table or a references Parquet file; tasks missing from it are computed in
    this run (``references_mode="update"``, and written back to the file when one was given)
    or are an error (``"require"``, the pipeline: the ``references`` rule made the file).
    Malformed samples get a status of their own (``malformed``, ``unknown_task``,
    ``empty_completion``) and count as failures. ``provenance``: a record
    (attribution.provenance) written as columns after the verdicts.
    """
    out_path = Path(out_path)
    missing = {"task_id", "sample", "completion"} - set(samples.columns)
    if missing:
        raise ValueError(f"samples frame lacks column(s) {sorted(missing)}")
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {BENCHMARKS}")
    if references_mode not in ("update", "require"):
        raise ValueError(f"references_mode must be 'update' or 'require', not {references_mode!r}")
    # The candidate pool starts now and gets ready while the tasks are parsed and the references
    # run; it is closed unused if nothing is left to run.
    pool = SandboxPool(workers, limits, checker_class(benchmark).preload, wait=False)
    try:
        checker = make_checker(benchmark, tasks, checker_options)
        return _execute(checker, tasks, samples, out_path, pool, workers, limits, progress,
                        references, references_mode, provenance)  # fmt: skip
    finally:
        pool.close()


def _execute(
    checker: Checker,
    tasks: pd.DataFrame,
    samples: pd.DataFrame,
    out_path: Path,
    pool: SandboxPool,
    workers: int,
    limits: SandboxLimits | None,
    progress: bool,
    references: ReferencesArg,
    references_mode: str,
    provenance: dict[str, Any] | None,
) -> pd.DataFrame:
    samples = samples.reset_index(drop=True)
    known = set(checker.task_ids())
    problems = {pos: (st, err) for pos, st, err in _precheck(samples, known)}

    rows: list[dict[str, Any]] = []
    for pos, (status, err) in problems.items():
        tid = samples["task_id"].iat[pos]
        # A sample that never ran still belongs to its task's group (e.g. APPS difficulty).
        task_cols = checker.task_columns(tid) if isinstance(tid, str) and tid in known else {}
        rows.append(
            _row(
                checker,
                tid if isinstance(tid, str) else "",
                samples["sample"].iat[pos],
                samples["completion"].iat[pos],
                status=status,
                error=err,
                reason=err,
                **task_cols,
            )
        )

    wanted: dict[tuple[str, int, str], tuple[str, int, str]] = {}
    for pos in range(len(samples)):
        if pos in problems:
            continue
        tid, smp, comp = (samples[c].iat[pos] for c in ("task_id", "sample", "completion"))
        wanted[(tid, int(smp), completion_sha256(comp))] = (tid, int(smp), comp)
    task_ids = sorted({t for t, _, _ in wanted.values()})

    shards = out_path.parent / f".{out_path.name}.shards"
    if task_ids:
        _resolve_references(checker, task_ids, workers, limits, references, references_mode, shards)
    fingerprint = run_fingerprint(checker, tasks, limits, task_ids)
    done = _open_shards(shards, fingerprint, list(_columns(checker)))
    # Rows finished by an earlier, interrupted run of the same fingerprint; a shard row whose
    # sample has changed since (other completion) is dropped and that sample runs again.
    for row in done:
        key = (row["task_id"], int(row["sample"]), row["completion_sha256"])
        if wanted.pop(key, None) is not None:
            rows.append(row)
    todo = list(wanted.values())
    if todo:
        rows += _run_candidates(checker, todo, shards, pool, progress)

    frame = pd.DataFrame(rows, columns=list(_columns(checker)))
    order = {t: i for i, t in enumerate(checker.task_ids())}
    frame["_o"] = frame["task_id"].map(order).fillna(len(order))
    frame = frame.sort_values(["_o", "task_id", "sample"], kind="stable").drop(columns="_o")
    frame = frame.reset_index(drop=True)
    frame["sample"] = frame["sample"].astype("int64")
    if provenance is not None:
        frame = with_columns(frame, provenance)
    write_parquet(frame, out_path)
    shutil.rmtree(shards, ignore_errors=True)
    return frame


def run_fingerprint(
    checker: Checker, tasks: pd.DataFrame, limits: SandboxLimits | None, task_ids: list[str]
) -> dict[str, Any]:
    """Everything a verdict depends on (see the module doc), as plain JSON."""
    fingerprint = {
        "version": FINGERPRINT_VERSION,
        "benchmark": checker.benchmark,
        "code": execution_code_hash(),
        "dataset_sha256": frame_sha256(tasks),
        "settings": checker.settings(),
        "sandbox": asdict(limits or SandboxLimits()),
        "references": table_digest(checker.export_references(), task_ids),
    }
    result: dict[str, Any] = json.loads(json.dumps(fingerprint))
    return result


def _open_shards(shards: Path, fingerprint: dict[str, Any], columns: list[str]) -> list[dict]:
    """The finished rows of an interrupted run with the same fingerprint; shards of any other
    run are discarded (their verdicts may be stale). Leaves the folder ready for new shards."""
    parts = sorted(shards.glob("part-*.parquet")) if shards.is_dir() else []
    stamp = shards / "fingerprint.json"
    try:
        same = json.loads(stamp.read_text()) == fingerprint
    except (OSError, ValueError):
        same = False
    if not same:
        if parts:
            log.info(
                "discarding %d shard file(s) in %s: made with other code, data, settings or "
                "references",
                len(parts),
                shards,
            )
        for f in parts:
            f.unlink()
        parts = []
        shards.mkdir(parents=True, exist_ok=True)
        write_json(fingerprint, stamp)
    rows: list[dict] = []
    for f in parts:
        try:
            part = pd.read_parquet(f)
        except Exception:  # noqa: BLE001 - a shard cut short by a kill: its rows run again
            continue
        if list(part.columns) == columns:
            rows += part.to_dict(orient="records")
    if rows:
        log.info("resuming: %d finished row(s) from %s", len(rows), shards)
    return rows


def _resolve_references(
    checker: Checker,
    task_ids: list[str],
    workers: int,
    limits: SandboxLimits | None,
    references: ReferencesArg,
    mode: str,
    shards: Path,
) -> None:
    """Give the checker its reference outputs for ``task_ids``: from ``references``, from an
    interrupted run's shard folder, or computed now (see ``execute_samples``)."""
    path = None if references is None or isinstance(references, dict) else Path(references)
    table: ReferenceTable = {}
    if isinstance(references, dict):
        table = references
    elif path is not None and path.exists():
        table = read_references(path)
    elif path is not None and mode == "require":
        raise ReferenceError(f"references file {path} does not exist")
    checker.import_references(table)
    saved = shards / "references.parquet"
    if saved.exists():
        try:
            checker.import_references(read_references(saved))
        except ReferenceError as exc:
            log.warning("ignoring %s", exc)
    if not checker.reference_programs(task_ids):
        return
    if mode == "require":
        missing = [t for t, _ in checker.reference_programs(task_ids)]
        raise ReferenceError(
            f"{checker.benchmark}: {path or 'the references given'} hold no reference outputs "
            f"for {len(missing)} task(s) of this dataset (e.g. {missing[:3]}): made from another "
            "dataset version? Rerun the references rule."
        )
    run_reference_programs(checker, task_ids, workers, limits)
    computed = checker.export_references()
    if path is not None:  # a resumed run reads them back from there
        write_references({**table, **computed}, path)
    else:  # kept with the shards, so that a resumed run uses the same limits
        shards.mkdir(parents=True, exist_ok=True)
        write_references(computed, saved)


def _run_candidates(
    checker: Checker,
    todo: list[tuple[str, int, str]],
    shards: Path,
    pool: SandboxPool,
    progress: bool,
) -> list[dict[str, Any]]:
    from tqdm import tqdm

    shards.mkdir(parents=True, exist_ok=True)
    existing = [int(p.stem.split("-")[1]) for p in shards.glob("part-*.parquet")]
    next_part = max(existing, default=-1) + 1
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

    # Longest first (by the reference solution's time, where known), so that no worker is left
    # with a long tail.
    todo = sorted(todo, key=lambda item: -checker.cost(item[0]))
    # Identical (task, completion) pairs run once when the checker's programs are deterministic
    # (CRUXEval: pure functions); every sample still gets its own row.
    groups: dict[tuple[str, str], list[int]] = {}
    for i, (tid, _, comp) in enumerate(todo):
        key = (tid, comp) if checker.deterministic else (tid, f"{i}")
        groups.setdefault(key, []).append(i)
    members = list(groups.values())
    programs = (checker.program(todo[m[0]][0], todo[m[0]][2]) for m in members)
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


def _judge(checker: Checker, task_id: str, completion: str, result: SandboxResult) -> dict:
    v = checker.judge(task_id, completion, result)
    fields: dict[str, Any] = {
        "passed": v.passed,
        "status": v.status,
        "reason": v.reason,
        "error": v.error,
        "details": v.details,
        **v.columns,
    }
    if result.status == "sandbox_error":  # the infrastructure failed: never a verdict
        fields.update(passed=False, status=SANDBOX_ERROR, reason=f"sandbox error: {result.error}")
    fields["wall_s"] = float(result.wall_s)
    fields["layers"] = ",".join(result.layers)
    return fields
