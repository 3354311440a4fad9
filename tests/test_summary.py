"""The summary table from metrics.json files written by the real scoring code."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from attribution.execution.scoring import score_executions
from attribution.summary import SUMMARY_COLUMNS, Run, summarize


def write_metrics(path, benchmark, frame, ks):
    path.write_text(json.dumps(score_executions(benchmark, frame, ks)))
    return str(path)


@pytest.fixture()
def files(tmp_path):
    he = pd.DataFrame(
        {
            "task_id": ["a", "a", "b", "b"],
            "sample": [0, 1, 0, 1],
            "status": ["passed", "failed", "passed", "passed"],
            "base_passed": [True, False, True, True],
            "plus_passed": [True, False, False, False],
        }
    )
    apps = pd.DataFrame(
        {
            "task_id": ["p1", "p2", "p3"],
            "sample": [0, 0, 0],
            "status": ["passed", "failed", "failed"],
            "passed": [True, False, False],
            "tests_passed": [3, 1, 0],
            "tests_total": [3, 2, 4],
            "difficulty": ["introductory", "introductory", "interview"],
            "comparison": "official",
            "passed_official": [True, False, False],
            "tests_passed_official": [3, 1, 0],
            "passed_strict": [False, False, False],  # p1 passes on the lenient rule only
            "tests_passed_strict": [2, 1, 0],
        }
    )
    for name, sha in (("humanevalplus", "h" * 64), ("apps", "p" * 64)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"content_sha256": sha}))
    return {
        "he": write_metrics(tmp_path / "metrics_he.json", "humanevalplus", he, [1, 2]),
        "apps": write_metrics(tmp_path / "metrics_apps.json", "apps", apps, [1]),
        "provenance": {n: str(tmp_path / f"{n}.json") for n in ("humanevalplus", "apps")},
    }


def test_rows_per_metric_with_hashes_and_revision_fields(files):
    runs = [
        Run(
            "olmo@stage1-step1000-tokens5B",
            "olmo",
            "stage1-step1000-tokens5B",
            "humanevalplus",
            files["he"],
        ),
        Run("tiny", "tiny", None, "apps", files["apps"]),
    ]
    frame = summarize(runs, files["provenance"], "code123")
    assert list(frame.columns) == list(SUMMARY_COLUMNS)
    he = frame[frame["benchmark"] == "humanevalplus"].set_index("metric")
    assert sorted(he.index) == sorted(
        ["pass@1", "pass@2", "base/pass@1", "base/pass@2", "plus/pass@1", "plus/pass@2"]
    )
    # plus = base and plus tests: task a 1 of 2 samples, task b 0 of 2.
    assert he.loc["plus/pass@1", "value"] == pytest.approx(0.25)
    assert he.loc["pass@1", "value"] == he.loc["plus/pass@1", "value"]
    assert he.loc["base/pass@2", "value"] == pytest.approx(1.0)
    assert (
        he.loc["pass@2", "k"] == 2 and he.loc["pass@2", "n"] == 2 and he.loc["pass@2", "tasks"] == 2
    )
    assert set(he["training_step"]) == {1000} and set(he["training_tokens"]) == {5e9}
    assert set(he["model_entry"]) == {"olmo"} and set(he["dataset_sha256"]) == {"h" * 64}

    assert set(frame["subset"]) == {"all"}  # no held-out parts given
    assert (he.loc["plus/pass@2", ["variant", "stat"]] == ["plus", "pass@k"]).all()
    assert (he.loc["pass@1", ["variant", "stat"]] == ["", "pass@k"]).all()
    apps = frame[frame["benchmark"] == "apps"].set_index("metric")
    assert apps.loc["pass@1", "value"] == pytest.approx(1 / 3)
    assert apps.loc["introductory/pass@1", "value"] == pytest.approx(0.5)
    assert apps.loc["introductory/pass@1", "tasks"] == 2
    assert apps.loc["interview/strict_accuracy", "value"] == 0.0
    strict = apps.loc["interview/strict_accuracy"]
    assert strict["variant"] == "interview" and strict["stat"] == "strict_accuracy"
    assert pd.isna(apps.loc["strict_accuracy", "k"])
    assert apps.loc["test_case_pass_rate", "value"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert apps.loc["by_comparison/official/pass@1", "value"] == apps.loc["pass@1", "value"]
    assert apps.loc["by_comparison/strict/pass@1", "value"] == 0.0
    assert apps["training_step"].isna().all() and apps["revision"].isna().all()
    assert set(frame["code_version"]) == {"code123"}


def test_missing_provenance_and_wrong_benchmark_are_named(files):
    run = Run("tiny", "tiny", None, "apps", files["apps"])
    with pytest.raises(ValueError, match="tiny/apps: no provenance for dataset 'apps'"):
        summarize([run], {"humanevalplus": files["provenance"]["humanevalplus"]}, "c")
    wrong = Run("tiny", "tiny", None, "humanevalplus", files["apps"])
    with pytest.raises(ValueError, match="holds benchmark 'apps', expected 'humanevalplus'"):
        summarize([wrong], files["provenance"], "c")


def test_metric_names_of_nested_blocks():
    from attribution.summary import metric_rows

    metrics = {
        "benchmark": "apps",
        "counts": {"tasks": 3, "min_n": 1},
        "pass@1": 0.5,
        "per_task": {"t": {"pass@1": 1.0}},
        "by_difficulty": {
            "": {"pass@1": 0.0, "tasks": 1},
            "interview": {"pass@1": 1.0, "tasks": 2},
        },
    }
    rows = sorted(metric_rows(metrics))
    assert [(r.metric, r.variant, r.stat, r.k, r.value, r.tasks) for r in rows] == [
        ("interview/pass@1", "interview", "pass@k", 1, 1.0, 2),
        ("pass@1", "", "pass@k", 1, 0.5, 3),
        ("unknown_difficulty/pass@1", "unknown_difficulty", "pass@k", 1, 0.0, 1),
    ]
    # only the top-level block keeps its per-task values (scoring drops them per difficulty)
    assert rows[1].per_task == {"t": {"pass@1": 1.0}} and rows[0].per_task is None


def test_held_out_parts_get_their_own_rows(files):
    """With a split, each per-task pass@k metric gets train / held_out rows averaging the
    per-task estimates of that part; the parts' task-weighted mean is the all-tasks value."""
    from attribution.data.splits import HeldOut, task_parts

    parts = task_parts(["p1", "p2", "p3"], HeldOut(fraction=0.34, seed=0))
    held = [t for t, part in parts.items() if part == "held_out"]
    assert len(held) == 2  # ceil(0.34 * 3)
    run = Run("tiny", "tiny", None, "apps", files["apps"])
    frame = summarize([run], files["provenance"], "c", {"apps": parts})
    top = frame[frame["metric"] == "pass@1"].set_index("subset")
    assert list(top.index) == ["all", "train", "held_out"]
    passed = {"p1": 1.0, "p2": 0.0, "p3": 0.0}
    for part in ("train", "held_out"):
        ids = [t for t, p in parts.items() if p == part]
        assert top.loc[part, "value"] == pytest.approx(sum(passed[t] for t in ids) / len(ids))
        assert top.loc[part, "tasks"] == len(ids)
    weighted = (top.loc["train", "value"] * 1 + top.loc["held_out", "value"] * 2) / 3
    assert weighted == pytest.approx(top.loc["all", "value"])
    # blocks without per-task values (per difficulty, strict accuracy) stay whole
    assert set(frame.loc[frame["metric"] != "pass@1", "subset"]) == {"all"}
