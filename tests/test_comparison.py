"""Comparison tables: values from the summary, deltas, seeded paired bootstrap over tasks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from attribution.comparison import (
    BootstrapSettings,
    Pair,
    bootstrap_interval,
    compare,
    comparison_pairs,
    per_task_scores,
    to_html,
    to_markdown,
)
from attribution.execution.passk import pass_at_k

SETTINGS = BootstrapSettings(samples=400, seed=7)


def executions(pass_matrix: np.ndarray, difficulties: list[str] | None = None) -> pd.DataFrame:
    """pass_matrix[task, sample] -> an executions frame (all verdict columns alike)."""
    rows = []
    for t, samples in enumerate(pass_matrix):
        for s, ok in enumerate(samples):
            row = dict(task_id=f"T/{t}", sample=s, passed=bool(ok), base_passed=True)
            row["plus_passed"] = bool(ok)
            if difficulties:
                row["difficulty"] = difficulties[t]
            rows.append(row)
    return pd.DataFrame(rows)


def summary_of(model: str, benchmark: str, frame: pd.DataFrame, ks=(1, 2)) -> list[dict]:
    rows = []
    for k in ks:
        counts = frame.groupby("task_id")["passed"].agg(["size", "sum"])
        value = np.mean([pass_at_k(int(n), int(c), k) for n, c in counts.to_numpy()])
        rows.append(
            dict(
                model=model,
                benchmark=benchmark,
                metric=f"pass@{k}",
                variant="",
                stat="pass@k",
                k=k,
                subset="all",
                value=value,
            )
        )
    return rows


@pytest.fixture
def two_models():
    rng = np.random.default_rng(0)
    ref = rng.random((30, 4)) < 0.3
    better = ref | (rng.random((30, 4)) < 0.5)  # passes everything ref passes, and more
    ex = {("ref", "cruxeval_o"): executions(ref), ("new", "cruxeval_o"): executions(better)}
    summary = pd.DataFrame(
        summary_of("ref", "cruxeval_o", ex[("ref", "cruxeval_o")])
        + summary_of("new", "cruxeval_o", ex[("new", "cruxeval_o")])
    )
    return summary, ex


def test_per_task_scores_use_the_unbiased_estimator():
    frame = executions(np.array([[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]))
    scores = per_task_scores(frame, "cruxeval_o", "", 2)
    assert list(scores) == pytest.approx([pass_at_k(4, 1, 2), 1.0, 0.0])
    assert list(per_task_scores(frame, "humanevalplus", "base", 1)) == [1.0, 1.0, 1.0]
    apps = executions(np.array([[1], [0], [1]]), ["introductory", "interview", "introductory"])
    assert list(per_task_scores(apps, "apps", "introductory", 1).index) == ["T/0", "T/2"]
    with pytest.raises(ValueError, match="pass@5 needs >= 5 samples per task; task T/0 has 4"):
        per_task_scores(frame, "cruxeval_o", "", 5)


def test_compare_values_deltas_and_intervals(two_models):
    summary, ex = two_models
    table = compare(summary, ex, [Pair("new", "ref")], SETTINGS)
    assert list(table["metric"]) == ["pass@1", "pass@2"]
    stated = summary.set_index(["model", "metric"])["value"]
    for row in table.itertuples():
        assert row.value == stated[("new", row.metric)]
        assert row.reference_value == stated[("ref", row.metric)]
        assert row.delta == pytest.approx(row.value - row.reference_value)
        assert row.ci_low <= row.value <= row.ci_high
        assert row.reference_ci_low <= row.reference_value <= row.reference_ci_high
        assert row.delta_ci_low <= row.delta <= row.delta_ci_high
        # new passes a superset of ref's samples on every task: every paired resample is >= 0
        assert row.delta_ci_low >= 0
        assert row.n_tasks == row.n_paired_tasks == 30
    again = compare(summary, ex, [Pair("new", "ref")], SETTINGS)
    pd.testing.assert_frame_equal(table, again)  # seeded
    other = compare(summary, ex, [Pair("new", "ref")], BootstrapSettings(samples=400, seed=8))
    assert not np.allclose(table["ci_low"], other["ci_low"])


def test_paired_interval_is_narrower_than_unpaired():
    rng = np.random.default_rng(1)
    hard = rng.random(200)  # task difficulty dominates; the models differ by a little
    a, b = np.clip(hard + 0.05, 0, 1), hard
    paired = bootstrap_interval(a - b, np.random.default_rng(0), SETTINGS)
    low_a, high_a = bootstrap_interval(a, np.random.default_rng(0), SETTINGS)
    assert paired[1] - paired[0] < (high_a - low_a) / 5
    assert bootstrap_interval(np.full(10, 0.5), np.random.default_rng(0), SETTINGS) == (0.5, 0.5)


def test_summary_mismatch_and_missing_inputs_raise(two_models):
    summary, ex = two_models
    bad = summary.copy()
    bad.loc[0, "value"] += 0.01
    with pytest.raises(ValueError, match="ref cruxeval_o pass@1: summary says"):
        compare(bad, ex, [Pair("new", "ref")], SETTINGS)
    with pytest.raises(ValueError, match="no executions for model 'new'"):
        compare(summary, {("ref", "cruxeval_o"): ex[("ref", "cruxeval_o")]}, [Pair("new", "ref")])


def test_comparison_pairs():
    assert comparison_pairs(["a", "b", "c"]) == [Pair("b", "a"), Pair("c", "a")]
    assert comparison_pairs(["a", "b", "c"], "b", [("c", "a"), ("c", "b")]) == [
        Pair("a", "b"),
        Pair("c", "b"),
        Pair("c", "a"),
    ]
    with pytest.raises(ValueError, match="reference model 'z' is not a model"):
        comparison_pairs(["a"], "z")
    with pytest.raises(ValueError, match="unknown model 'q'"):
        comparison_pairs(["a", "b"], extra=[("q", "a")])
    with pytest.raises(ValueError, match="bootstrap samples"):
        BootstrapSettings(samples=5)


def test_markdown_and_html_tables(two_models):
    summary, ex = two_models
    table = compare(summary, ex, [Pair("new", "ref")], SETTINGS)
    md = to_markdown(table, SETTINGS)
    first = table.iloc[0]
    assert "## Reference: ref" in md
    row = next(line for line in md.splitlines() if line.startswith("| CRUXEval-O pass@1"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "30"
    assert (
        cells[3] == f"{100 * first.value:.1f} [{100 * first.ci_low:.1f}, {100 * first.ci_high:.1f}]"
    )
    assert cells[4].startswith(f"{100 * first.delta:+.1f} [")
    page = to_html(table, SETTINGS)
    assert page.startswith("<!DOCTYPE html>") and "Δ new" in page and "<table" in page


def test_real_summary_format_end_to_end(tmp_path):
    """executions -> the scoring stage's metrics.json -> the summary table -> comparison and
    pass@k figure: the numbers drawn are the scorer's, and the intervals belong to them."""
    import json

    from attribution.execution.scoring import score_executions
    from attribution.plots.metrics import pass_at_k_figure, pass_at_k_table
    from attribution.summary import Run, summarize

    rng = np.random.default_rng(3)
    frames, runs = {}, []
    for model in ("a", "b"):
        for benchmark in ("humanevalplus", "cruxeval_o", "apps"):
            passed = rng.random((9, 3)) < 0.5
            frame = executions(passed, ["introductory", "interview", "competition"] * 3)
            frame["status"] = "ok"
            frame["base_passed"] = frame["passed"] | (rng.random(len(frame)) < 0.3)
            frame["passed_execution"] = frame["passed"]
            frame["official_skip"] = False
            frame["tests_passed"] = frame["passed"].astype(int)
            frame["tests_total"] = 1
            if benchmark == "apps":  # an executions row without a difficulty stays visible
                frame.loc[0, "difficulty"] = ""
            frames[(model, benchmark)] = frame
            path = tmp_path / f"{model}_{benchmark}.json"
            path.write_text(json.dumps(score_executions(benchmark, frame, [1, 2])))
            runs.append(Run(model, model, None, benchmark, str(path)))
    provenance = {}
    for dataset in ("humanevalplus", "cruxeval", "apps"):
        provenance[dataset] = tmp_path / f"{dataset}.prov.json"
        provenance[dataset].write_text(json.dumps({"content_sha256": "0" * 64}))
    # a held-out part of CRUXEval: its train / held_out rows stay out of the comparison
    parts = {"cruxeval": {f"T/{t}": "held_out" if t < 3 else "train" for t in range(9)}}
    summary = summarize(runs, provenance, "test", parts)
    assert set(summary.loc[summary["benchmark"] == "cruxeval_o", "subset"]) == {
        "all",
        "train",
        "held_out",
    }
    table = compare(summary, frames, [Pair("b", "a")], SETTINGS)
    assert set(table["metric"]) == {
        "base/pass@1",
        "plus/pass@1",
        "base/pass@2",
        "plus/pass@2",
        "pass@1",
        "pass@2",
        *(
            f"{d}/pass@{k}"
            for d in ("introductory", "interview", "competition", "unknown_difficulty")
            for k in (1,)
        ),
        *(f"{d}/pass@2" for d in ("introductory", "interview", "competition")),
    }
    assert not (table["benchmark"].eq("humanevalplus") & table["metric"].eq("pass@1")).any()
    plus = summary[(summary["model"] == "b") & (summary["metric"] == "plus/pass@1")]
    row = table[(table["benchmark"] == "humanevalplus") & (table["metric"] == "plus/pass@1")]
    assert row["value"].item() == plus["value"].item()
    drawn = pass_at_k_table(summary, "humanevalplus", ["a", "b"])
    assert list(drawn["group"].unique()) == ["base tests", "base + plus tests"]
    fig = pass_at_k_figure(summary, "apps", ["a", "b"])
    apps = summary[(summary["benchmark"] == "apps") & (summary["k"] == 1)]
    apps = apps[apps["stat"] == "pass@k"]
    heights = sorted(p.get_height() for p in fig.axes[0].patches)
    assert heights == pytest.approx(sorted(100 * apps["value"]))
