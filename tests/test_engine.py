"""The execution engine: resume from shards, malformed samples, identical verdicts across
repeated runs, worker counts and a saturated machine."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from attribution.data.records import COLUMNS
from attribution.execution.engine import execute_samples
from attribution.execution.scoring import score_executions

pytestmark = pytest.mark.timeout(300)


def _tasks() -> pd.DataFrame:
    rows = [
        {
            "task_id": f"T/{i}",
            "prompt": f'def f{i}(a, b):\n    """Return a * b + {i}."""\n',
            "entry_point": f"f{i}",
            "canonical_solution": f"    return a * b + {i}\n",
            "test": "",
            "contract": "",
            "base_input": json.dumps([[1, 2], [3, 4]]),
            "plus_input": json.dumps([[k, k + 1] for k in range(20)]),
            "atol": 0.0,
        }
        for i in range(3)
    ]
    return pd.DataFrame(rows, columns=list(COLUMNS["humanevalplus"]))


def _samples() -> pd.DataFrame:
    rows = []
    for i in range(3):
        rows += [
            (f"T/{i}", 0, f"    return a * b + {i}\n"),
            (f"T/{i}", 1, "    return a * b\n" if i else "    return a * b + 0\n"),
            (f"T/{i}", 2, f"    return a * b + {i} if a < 10 else 0\n"),  # fails plus only
        ]
    return pd.DataFrame(rows, columns=["task_id", "sample", "completion"])


def _fingerprint(refs) -> dict:
    from attribution.execution.checker import make_checker
    from attribution.execution.engine import run_fingerprint
    from attribution.execution.references import read_references

    checker = make_checker("humanevalplus", _tasks())
    checker.import_references(read_references(refs))
    return run_fingerprint(checker, _tasks(), None, [f"T/{i}" for i in range(3)])


def test_scores_and_resumes_from_shards(tmp_path):
    out = tmp_path / "ex.parquet"
    refs = tmp_path / "references.parquet"
    full = execute_samples(
        "humanevalplus", _tasks(), _samples(), out, progress=False, references=refs
    )
    assert list(full["passed"]) == [True, True, False] + [True, False, False] * 2
    assert list(full["base_passed"]) == [True, True, True] + [True, False, True] * 2
    m = score_executions("humanevalplus", full, [1, 3])
    assert m["base"]["pass@1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert m["plus"]["pass@1"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 3) / 3)
    assert m["plus"]["pass@3"] == 1.0

    assert refs.exists()  # written by the first run, reused by the next ones

    # A run killed after its first shard: those rows are reused, unless the completion changed.
    out2 = tmp_path / "again.parquet"
    shards = tmp_path / ".again.parquet.shards"
    shards.mkdir()
    fingerprint = _fingerprint(refs)
    (shards / "fingerprint.json").write_text(json.dumps(fingerprint))
    partial = full.iloc[:3].copy()
    partial["error"] = "from-shard"
    partial.to_parquet(shards / "part-000000.parquet", index=False)
    (shards / "part-000001.parquet").write_bytes(b"PAR1 cut short by a kill")
    samples = _samples()
    samples.loc[2, "completion"] = "    return -1\n"  # changed since the shard was written
    again = execute_samples(
        "humanevalplus", _tasks(), samples, out2, progress=False, references=refs
    )
    assert list(again["error"].iloc[:2]) == ["from-shard", "from-shard"]
    assert again["error"].iloc[2] == "" and not again["passed"].iloc[2]
    assert again["status"].iloc[2] == "wrong_answer"
    assert list(again["passed"].iloc[3:]) == list(full["passed"].iloc[3:])
    assert not shards.exists() and out2.exists()
    assert pd.read_parquet(out2).shape == again.shape


def test_malformed_samples_get_their_own_status(tmp_path):
    samples = pd.DataFrame(
        [
            ("T/0", 0, "    return a + b\n", ""),
            (None, 0, "    return 1\n", ""),
            ("T/9", 0, "    return 1\n", ""),
            ("T/0", 1, "   \n", ""),
            ("T/0", 2, None, ""),
            ("", 0, "", "samples.jsonl:7: not valid UTF-8"),
        ],
        columns=["task_id", "sample", "completion", "error"],
    )
    ex = execute_samples(
        "humanevalplus",
        _tasks(),
        samples,
        tmp_path / "ex.parquet",
        progress=False,
    )
    status = dict(zip(zip(ex["task_id"], ex["sample"], strict=True), ex["status"], strict=True))
    assert status[("T/9", 0)] == "unknown_task"
    assert status[("T/0", 1)] == "empty_completion"
    assert status[("T/0", 2)] == "malformed"
    assert sorted(ex.loc[ex["task_id"] == "", "status"]) == ["malformed", "malformed"]
    assert status[("T/0", 0)] == "wrong_answer"
    assert not ex.loc[ex["status"] != "pass", "passed"].any()
    assert "not valid UTF-8" in " ".join(ex["error"])
    m = score_executions("humanevalplus", ex)
    assert m["counts"]["without_task_id"] == 2 and m["counts"]["status"]["malformed"] == 3


def test_bad_samples_frame_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="completion"):
        execute_samples(
            "humanevalplus",
            _tasks(),
            pd.DataFrame({"task_id": ["T/0"], "sample": [0]}),
            tmp_path / "x.parquet",
        )


def _verdicts(frame: pd.DataFrame) -> list[tuple]:
    cols = ["task_id", "sample", "status", "passed", "base_passed", "plus_passed", "details"]
    return [tuple(r) for r in frame[cols].itertuples(index=False)]


@pytest.mark.shared
def test_identical_verdicts_across_runs_workers_and_load(shared_benchmarks, tmp_path):
    from attribution.data.loaders import load_dataset_file

    tasks = load_dataset_file(
        "humanevalplus", shared_benchmarks / "humanevalplus/HumanEvalPlus-v0.1.10.jsonl.gz"
    )
    heavy = {"HumanEval/139", "HumanEval/15", "HumanEval/59", "HumanEval/36", "HumanEval/130"}
    tasks = tasks[~tasks["task_id"].isin(heavy)].iloc[:15].reset_index(drop=True)
    model = {
        r["task_id"]: r["completion"]
        for r in map(
            json.loads,
            (
                shared_benchmarks
                / "samples/mapcoder/GPT4__HumanEvalPlus__GPT-4-Reflexion-Human-Python3-0-1.jsonl"
            )
            .read_text()
            .splitlines(),
        )
    }
    rows = []
    for t, canon in zip(tasks["task_id"], tasks["canonical_solution"], strict=True):
        rows += [(t, 0, canon), (t, 1, model.get(t, "    pass\n")), (t, 2, "    return None\n")]
    samples = pd.DataFrame(rows, columns=["task_id", "sample", "completion"])

    def run(i: int, workers: int) -> list[tuple]:
        out = tmp_path / f"run{i}.parquet"
        # No reference cache: every run measures the canonical times (and limits) anew.
        ex = execute_samples("humanevalplus", tasks, samples, out, workers, progress=False)
        return _verdicts(ex)

    first = run(0, 2)
    assert sum(v[3] for v in first) >= 15  # the canonical solutions at least
    assert run(1, 1) == first
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert run(2, 2) == first
        assert run(3, 1) == first
    finally:
        hog.kill()
        hog.wait()
    assert run(4, 2) == first


def test_apps_samples_that_never_ran_keep_their_difficulty(tmp_path):
    from pathlib import Path

    from attribution.data.loaders import load_dataset_file

    samples_dir = Path(__file__).resolve().parents[1] / "data" / "samples"
    tasks = load_dataset_file("apps", samples_dir / "apps.jsonl")
    first = tasks.iloc[0]
    samples = pd.DataFrame({"task_id": [first.problem_id], "sample": [0], "completion": ["   "]})
    out = execute_samples("apps", tasks, samples, tmp_path / "e.parquet", workers=1, progress=False)
    row = out.iloc[0]
    assert row.status == "empty_completion" and not row.passed
    assert row.difficulty == first.difficulty
    assert row.tests_total == len(json.loads(first.input_output)["inputs"])
    by_difficulty = score_executions("apps", out)["by_difficulty"]
    assert list(by_difficulty) == [first.difficulty]
