"""``python -m attribution evaluate``: score a generations file with the sandboxed checkers.

    python -m attribution evaluate --benchmark {humanevalplus,cruxeval_o,cruxeval_i,apps}
        --dataset PATH --samples PATH --out PATH [--workers N] [--ks 1,10] [--metrics PATH]
        [--min-time-limit S] [--time-limit-factor F]        (HumanEval+)
        [--time-limit S]                                    (CRUXEval, APPS)
        [--comparison official|strict] [--float-tolerance T] (APPS)
        [--references PATH]                                 (HumanEval+)

``--dataset``: any file the download stage accepts (see ``attribution.data.loaders``).
``--samples``: JSONL, one object per sample with ``task_id`` and ``completion``; several rows per
task for n > 1 (the ``sample`` index is assigned per task in file order). A line that is not
UTF-8, not JSON, or lacks a field becomes a ``malformed`` row naming the line, never a crash.
Writes the executions Parquet to ``--out`` and prints the metrics as JSON on stdout.
``--references``: HumanEval+ reference outputs and timings (a ``references`` rule output, or a
file this command wrote before): tasks found there are reused, the others computed and added.
Without it they are computed in every run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from attribution.data.records import BENCHMARK_DATASET, BENCHMARKS
from attribution.execution.sandbox.records import ISOLATION_MODES


def _valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_samples(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Samples JSONL -> frame (task_id, sample, completion, error); bad lines get ``error``."""
    import gzip

    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    rows: list[dict[str, Any]] = []
    per_task: dict[str, int] = {}
    with opener(p, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            task_id, completion, error = None, None, ""
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                error = f"{p}:{lineno}: not valid UTF-8"
            except json.JSONDecodeError as exc:
                error = f"{p}:{lineno}: not valid JSON ({exc.msg})"
            else:
                if not isinstance(obj, dict):
                    error = f"{p}:{lineno}: expected a JSON object"
                else:
                    task_id, completion = obj.get("task_id"), obj.get("completion")
                    if task_id is not None and not isinstance(task_id, str):
                        task_id = str(task_id)
                    if not task_id:
                        error, task_id = f"{p}:{lineno}: missing task_id", None
                    elif not isinstance(completion, str):
                        error = f"{p}:{lineno}: missing or non-text completion"
                    elif not _valid_unicode(completion) or not _valid_unicode(task_id):
                        error = f"{p}:{lineno}: text with lone surrogates (not valid Unicode)"
                        task_id = task_id if _valid_unicode(task_id) else None
                        completion = None
            key = task_id or ""
            sample = per_task.get(key, 0)
            per_task[key] = sample + 1
            rows.append(
                {
                    "task_id": task_id or "",
                    "sample": sample,
                    "completion": completion if isinstance(completion, str) else "",
                    "error": error,
                }
            )
    return pd.DataFrame(rows, columns=["task_id", "sample", "completion", "error"])


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m attribution evaluate",
        description="Score generated samples with the sandboxed official checkers.",
    )
    ap.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    ap.add_argument("--dataset", required=True, type=Path, help="dataset file or APPS folder")
    ap.add_argument("--samples", required=True, type=Path, help="JSONL: task_id, completion")
    ap.add_argument("--out", required=True, type=Path, help="executions Parquet to write")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--ks", default="", help="comma-separated k for pass@k (default: all k <= n)")
    ap.add_argument("--metrics", type=Path, help="also write the metrics JSON here")
    ap.add_argument(
        "--no-extract",
        action="store_true",
        help="CRUXEval: use completions as given (no [ANSWER]/== extraction)",
    )
    limits = ap.add_argument_group("limits and comparison (defaults: the official ones)")
    limits.add_argument(
        "--min-time-limit",
        type=float,
        metavar="S",
        help="HumanEval+: smallest CPU limit per input (default 1.0)",
    )
    limits.add_argument(
        "--time-limit-factor",
        type=float,
        metavar="F",
        help="HumanEval+: limit = max(min, F x reference CPU time) (default 4.0)",
    )
    limits.add_argument(
        "--time-limit",
        type=float,
        metavar="S",
        help="CRUXEval, APPS: CPU limit per prediction / test (default 3 / 4)",
    )
    limits.add_argument(
        "--comparison",
        choices=("official", "strict"),
        help="APPS: output comparison (default official; metrics report both)",
    )
    limits.add_argument(
        "--float-tolerance",
        type=float,
        metavar="T",
        help="APPS, --comparison strict: numbers within T x max(1, |expected|) are equal",
    )
    ap.add_argument(
        "--references",
        type=Path,
        help="HumanEval+: reference outputs file to reuse and extend",
    )
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument(
        "--isolation",
        choices=ISOLATION_MODES,
        default="strict",
        help="strict (default): refuse to run where the sandbox lacks file-system, network or "
        "credential isolation; best_effort: run with what is available and warn",
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from attribution.data.loaders import load_dataset_file
    from attribution.execution.engine import execute_samples
    from attribution.execution.options import OptionError, checker_options
    from attribution.execution.sandbox import SandboxLimits, SandboxUnavailable, layers_in_force
    from attribution.execution.scoring import score_executions
    from attribution.io import write_json

    for name in ("dataset", "samples"):
        if not getattr(args, name).exists():
            print(f"error: --{name} {getattr(args, name)} does not exist", file=sys.stderr)
            return 2
    try:
        ks = [int(k) for k in args.ks.split(",") if k.strip()] or None
    except ValueError:
        print(f"error: --ks {args.ks!r} is not a comma-separated list of integers", file=sys.stderr)
        return 2
    try:
        options = checker_options(
            args.benchmark,
            min_time_limit_s=args.min_time_limit,
            time_limit_factor=args.time_limit_factor,
            time_limit_s=args.time_limit,
            comparison=args.comparison,
            float_tolerance=args.float_tolerance,
        )
    except OptionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.references is not None and args.benchmark != "humanevalplus":
        print("error: --references applies to humanevalplus only", file=sys.stderr)
        return 2
    if args.no_extract and args.benchmark.startswith("cruxeval"):
        options["extract"] = False
    tasks = load_dataset_file(BENCHMARK_DATASET[args.benchmark], args.dataset)
    samples = read_samples(args.samples)
    try:
        executions = execute_samples(
            args.benchmark,
            tasks,
            samples,
            args.out,
            workers=args.workers,
            progress=not args.no_progress,
            checker_options=options,
            references=args.references,
            limits=SandboxLimits(isolation=args.isolation),
        )
    except SandboxUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    metrics = score_executions(args.benchmark, executions, ks)
    metrics["sandbox"] = layers_in_force(executions["layers"])
    if args.metrics:
        write_json(metrics, args.metrics)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0
