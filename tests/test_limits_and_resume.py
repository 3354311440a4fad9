"""Limits users set (config, CLI), executions that record them, resumes that never reuse stale
verdicts, and reference outputs as a file that cannot run code when it is read."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from attribution.data.records import COLUMNS
from attribution.execution.engine import execute_samples
from attribution.execution.options import OptionError, checker_options, config_options
from attribution.execution.references import (
    Reference,
    ReferenceError,
    read_references,
    write_references,
)

pytestmark = pytest.mark.timeout(300)
REPO = Path(__file__).resolve().parents[1]

BUSY = (
    "    import time\n    t = time.process_time()\n"
    "    while time.process_time() - t < {s}:\n        pass\n    return x + 1\n"
)


def _tasks(n: int = 1, base: int = 3) -> pd.DataFrame:
    rows = [
        {
            "task_id": f"T/{i}",
            "prompt": "def f(x):\n",
            "entry_point": "f",
            "canonical_solution": "    return x + 1\n",
            "test": "",
            "contract": "",
            "base_input": json.dumps([[k] for k in range(base)]),
            "plus_input": "[]",
            "atol": 0.0,
        }
        for i in range(n)
    ]
    return pd.DataFrame(rows, columns=list(COLUMNS["humanevalplus"]))


# ------------------------------------------------------------------------------------------------
# Limits


def test_checker_options_apply_per_benchmark():
    assert checker_options("humanevalplus", min_time_limit_s=2, time_limit_factor=3) == {
        "min_time_limit": 2.0,
        "time_limit_factor": 3.0,
    }
    assert checker_options("apps", time_limit_s=6, comparison="strict", float_tolerance=1e-6) == {
        "time_limit": 6.0,
        "comparison": "strict",
        "float_tolerance": 1e-6,
    }
    assert checker_options("cruxeval_i", time_limit_s=1) == {"time_limit": 1.0}
    for bad in (
        {"benchmark": "humanevalplus", "time_limit_s": 3},
        {"benchmark": "cruxeval_o", "min_time_limit_s": 3},
        {"benchmark": "cruxeval_o", "comparison": "strict"},
        {"benchmark": "apps", "float_tolerance": 0.1},  # needs comparison: strict
    ):
        with pytest.raises(OptionError):
            checker_options(**bad)
    defaults = {"time_limit_s": None, "comparison": "official", "float_tolerance": None}
    execution = {"workers": 2, "min_time_limit_s": 1.0, "time_limit_factor": 4.0}
    assert config_options("humanevalplus", defaults, execution) == {
        "min_time_limit_s": 1.0,
        "time_limit_factor": 4.0,
    }
    assert config_options("apps", dict(defaults, time_limit_s=5), execution) == {
        "time_limit_s": 5,
        "comparison": "official",
    }
    assert config_options("cruxeval_o", defaults, execution) == {}


def test_config_rejects_settings_for_the_wrong_benchmark(repo_root):
    from attribution.config import ConfigError, check_config
    from workflow_utils import repo_config

    config = repo_config()
    config["benchmarks"]["humanevalplus"]["comparison"] = "strict"
    with pytest.raises(ConfigError, match="benchmarks.humanevalplus: comparison does not apply"):
        check_config(config, workdir=repo_root)


def test_limits_are_recorded_and_decide_the_verdict(tmp_path):
    samples = pd.DataFrame({"task_id": "T/0", "sample": [0], "completion": [BUSY.format(s=0.4)]})
    loose = execute_samples(
        "humanevalplus", _tasks(), samples, tmp_path / "a.parquet", progress=False
    )
    tight = execute_samples(
        "humanevalplus",
        _tasks(),
        samples,
        tmp_path / "b.parquet",
        progress=False,
        checker_options={"min_time_limit": 0.2, "time_limit_factor": 1.0},
    )
    assert loose["passed"].iloc[0] and loose["time_limit_s"].iloc[0] == 1.0
    assert tight["status"].iloc[0] == "timeout"
    assert tight["time_limit_s"].iloc[0] == 0.2
    assert tight["reason"].iloc[0] == "timeout (CPU limit 0.2 s) on base input 0"


def test_cli_flags_reach_the_checker(tmp_path, repo_root):
    tasks = tmp_path / "crux.jsonl"
    tasks.write_text(
        json.dumps({"id": "c", "code": "def f(x):\n    return x\n", "input": "1", "output": "1"})
        + "\n"
    )
    samples = tmp_path / "s.jsonl"
    slow = "(lambda t: [0 for _ in iter(lambda: __import__('time').process_time() - t < 0.5, False)] and 1)(__import__('time').process_time())"  # noqa: E501
    samples.write_text(json.dumps({"task_id": "c", "completion": slow}) + "\n")
    env = {**os.environ, "PYTHONPATH": str(repo_root / "workflow_scripts")}

    def run(*flags: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "attribution", "evaluate", "--benchmark", "cruxeval_o",
             "--dataset", str(tasks), "--samples", str(samples), "--no-extract",
             "--out", str(tmp_path / "ex.parquet"), "--workers", "1", "--no-progress", *flags],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip

    short = run("--time-limit", "0.2")
    assert short.returncode == 0, short.stderr
    ex = pd.read_parquet(tmp_path / "ex.parquet")
    assert ex["status"].iloc[0] == "timeout" and ex["time_limit_s"].iloc[0] == 0.2
    long = run("--time-limit", "3")
    assert long.returncode == 0, long.stderr
    ex = pd.read_parquet(tmp_path / "ex.parquet")
    assert ex["passed"].iloc[0] and ex["time_limit_s"].iloc[0] == 3.0
    wrong = run("--comparison", "strict")
    assert wrong.returncode == 2 and "comparison does not apply to cruxeval_o" in wrong.stderr


# ------------------------------------------------------------------------------------------------
# Resume after a kill

_KILLED_RUN = """
import sys, pandas as pd
from attribution.execution import engine
engine.SHARD_ROWS, engine.SHARD_SECONDS = 1, 0.0
engine.execute_samples("humanevalplus", pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2]),
                       sys.argv[3], workers=1, progress=False)
"""


def _killed_run(tmp_path, tasks, samples, out):
    """Run execute in a subprocess and SIGKILL it once it has written two shards."""
    tasks.to_parquet(tmp_path / "tasks.parquet")
    samples.to_parquet(tmp_path / "samples.parquet")
    shards = out.parent / f".{out.name}.shards"
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow_scripts")}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, str(tmp_path / "tasks.parquet"),
         str(tmp_path / "samples.parquet"), str(out)],
        env=env, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while len(list(shards.glob("part-*.parquet"))) < 2:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no shards written"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not out.exists()
    return shards


def test_killed_run_resumes_only_with_the_same_fingerprint(tmp_path):
    import shutil

    tasks = _tasks(n=8)
    samples = pd.DataFrame(
        {"task_id": [f"T/{i}" for i in range(8)], "sample": 0, "completion": BUSY.format(s=0.1)}
    )
    out = tmp_path / "ex.parquet"
    shards = _killed_run(tmp_path, tasks, samples, out)
    fingerprint = json.loads((shards / "fingerprint.json").read_text())
    assert fingerprint["settings"]["min_time_limit_s"] == 1.0
    assert (shards / "references.parquet").exists()  # the limits the shards were made with
    done = pd.concat(pd.read_parquet(p) for p in sorted(shards.glob("part-*.parquet")))
    assert len(done) >= 2
    saved = tmp_path / "saved"
    shutil.copytree(shards, saved)

    # Same settings: the finished rows are reused as they are.
    same = execute_samples("humanevalplus", tasks, samples, out, progress=False)
    reused = same.merge(done[["task_id", "wall_s"]], on="task_id", suffixes=("", "_shard"))
    assert len(reused) == len(done) and (reused["wall_s"] == reused["wall_s_shard"]).all()
    assert not shards.exists()

    # A new limit: every verdict is computed again, under the new limit.
    shutil.copytree(saved, shards)
    changed = execute_samples(
        "humanevalplus",
        tasks,
        samples,
        out,
        progress=False,
        checker_options={"min_time_limit": 0.05, "time_limit_factor": 1.0},
    )
    assert (changed["time_limit_s"] == 0.05).all()
    assert (changed["status"] == "timeout").all(), changed[["task_id", "status", "reason"]]
    merged = changed.merge(done[["task_id", "wall_s"]], on="task_id", suffixes=("", "_shard"))
    assert not (merged["wall_s"] == merged["wall_s_shard"]).any()


def test_changed_dataset_discards_shards(tmp_path):
    tasks = _tasks(n=2)
    samples = pd.DataFrame(
        {"task_id": ["T/0", "T/1"], "sample": 0, "completion": "    return x + 1\n"}
    )
    out = tmp_path / "ex.parquet"
    first = execute_samples("humanevalplus", tasks, samples, out, progress=False)
    shards = out.parent / f".{out.name}.shards"
    shards.mkdir()
    from attribution.execution.checker import make_checker
    from attribution.execution.engine import run_fingerprint

    checker = make_checker("humanevalplus", tasks)
    stale = first.copy()
    stale["passed"] = False  # would be merged back in if the shard were trusted
    stale.to_parquet(shards / "part-000000.parquet", index=False)
    fp = run_fingerprint(checker, tasks, None, ["T/0", "T/1"])
    (shards / "fingerprint.json").write_text(json.dumps(fp))
    changed = tasks.copy()
    changed.loc[1, "canonical_solution"] = "    return x + 2\n"  # another expected output
    again = execute_samples("humanevalplus", changed, samples, out, progress=False)
    assert list(again["passed"]) == [True, False]
    assert again["reason"].iloc[1] == "wrong answer on base input 0"


# ------------------------------------------------------------------------------------------------
# References


def test_reference_values_round_trip_and_loading_runs_no_code(tmp_path):
    values = [1, 2**20000, -0.0, float("inf"), (1, [2, (3,)]), {(1, 2): {3}}, frozenset({4}),
              b"\x00x", 1 + 2j, None, True, "s", {"k": [1.5]}]  # fmt: skip
    ref = Reference("k" * 64, [[1]], {"base": values}, {"base": [0.1] * len(values)})
    path = write_references({"T/0": ref}, tmp_path / "r.parquet", "d" * 64, "c")
    back = read_references(path)
    assert back == {"T/0": ref}
    assert [type(v) for v in back["T/0"].expected["base"]] == [type(v) for v in values]
    raw = pd.read_parquet(path)
    assert raw["dataset_sha256"].iloc[0] == "d" * 64 and raw["code"].iloc[0] == "c"
    # A file someone else wrote, whose pickle would run a command when loaded by pickle.loads.
    marker = tmp_path / "ran"
    raw.loc[0, "expected"] = pickle.dumps({"base": [Exploit(str(marker))]})
    raw.to_parquet(path)
    with pytest.raises(ReferenceError, match="damaged row.*not allowed"):
        read_references(path)
    assert not marker.exists()


class Exploit:
    """Unpickles to ``os.system("touch PATH")``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_references_file_is_used_checked_and_never_from_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tasks = _tasks(n=2)
    samples = pd.DataFrame(
        {"task_id": ["T/0", "T/1"], "sample": 0, "completion": "    return x + 1\n"}
    )
    refs = tmp_path / "refs.parquet"
    with pytest.raises(ReferenceError, match="does not exist"):
        execute_samples("humanevalplus", tasks, samples, tmp_path / "a.parquet", progress=False,
                        references=refs, references_mode="require")  # fmt: skip
    execute_samples("humanevalplus", tasks, samples, tmp_path / "a.parquet", progress=False,
                    references=refs)  # fmt: skip
    table = read_references(refs)
    assert set(table) == {"T/0", "T/1"} and len(table["T/0"].cpu_s["base"]) == 3
    assert not (tmp_path / "home").exists() and not (tmp_path / "cache").exists()
    changed = tasks.copy()
    changed.loc[1, "base_input"] = json.dumps([[7]])  # the stored row no longer matches
    with pytest.raises(ReferenceError, match=r"1 task\(s\) of this dataset \(e.g. \['T/1'\]\)"):
        execute_samples("humanevalplus", changed, samples, tmp_path / "b.parquet",
                        progress=False, references=refs, references_mode="require")  # fmt: skip


def test_references_rule_in_the_dag(tmp_path):
    from workflow_utils import dry_run, make_workspace, repo_config, rules_of

    ws = make_workspace(tmp_path / "ws", repo_config())
    jobs = dry_run(ws, "results/tiny-olmo2/humanevalplus/executions.parquet")
    assert "references" in rules_of(jobs)
    refs = [j for j in jobs if j.rule == "references"]
    assert [j.wc for j in refs] == [{"benchmark": "humanevalplus"}]
    crux = dry_run(ws, "results/tiny-olmo2/cruxeval_o/executions.parquet")
    assert "references" not in rules_of(crux)


def test_references_keep_the_dataset_order(tmp_path):
    """Long tasks run first and workers finish in any order; the file lists tasks as the dataset
    does, so two runs write the same rows."""
    from attribution.execution.reference_run import references_job

    tasks = _tasks(n=6)
    for i in range(6):  # T/5 has the most inputs, so it is scheduled first
        tasks.loc[i, "plus_input"] = json.dumps([[k] for k in range(i * 3)])
    dataset = tmp_path / "tasks.parquet"
    tasks.to_parquet(dataset)
    references_job("humanevalplus", dataset, tmp_path / "refs.parquet", workers=2)
    assert list(pd.read_parquet(tmp_path / "refs.parquet")["task_id"]) == list(tasks["task_id"])
