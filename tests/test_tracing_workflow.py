"""The trace stage in the workflow, end to end on a tiny model in a temporary copy: the
selection checkpoint, per-problem traces with the AtP* screens, summary, screen agreement and
activation norms; a forced problem list; an empty selection; what a settings change reruns."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from workflow_utils import (
    dry_run,
    job_keys,
    make_workspace,
    merged,
    repo_config,
    run_snakemake,
    write_config,
)

pytestmark = pytest.mark.slow
MODEL = "tiny-llama"
TARGETS = [
    f"results/{MODEL}/trace/summary.parquet",
    f"results/{MODEL}/trace/activation_norms.parquet",
]


def _config(**trace):
    base = repo_config()
    models = {name: None for name in base["models"] if name != MODEL}
    benchmarks = {name: None for name in base["benchmarks"] if name != "cruxeval_o"}
    override = {
        "models": {**models, MODEL: {"build": {"pretrain_steps": 5}}},
        "benchmarks": {**benchmarks, "cruxeval_o": {"max_tasks": 3, "max_new_tokens": 8}},
        "figures": {"reference_model": MODEL},
        "trace": {
            "models": [MODEL],
            "samples": 3,
            "max_problems": 2,
            "force_problems": [],
            **trace,
        },
    }
    return merged(base, override)


FORCED = {"force_problems": ["sample_2", "sample_0"], "screen": ["atp", "atp_qk", "atp_star"]}


@pytest.fixture(scope="module")
def forced_run(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("trace") / "ws", _config(**FORCED))
    run_snakemake(ws, *TARGETS)
    return ws


def test_forced_problems_are_traced(forced_run: Path):
    out = forced_run / "results" / MODEL / "trace"
    selected = pd.read_parquet(out / "selected.parquet")
    assert list(selected.task_id) == ["sample_2", "sample_0"] and set(selected.reason) == {"forced"}
    for task in ("sample_2", "sample_0"):
        cells = pd.read_parquet(out / "problems" / f"{task}.parquet")
        n_tokens, n_layers = int(cells.num_tokens.iloc[0]), 2
        assert len(cells) == 3 * n_tokens * n_layers
        assert (cells.problem == task).all() and (cells.samples == 3).all()
        assert cells.ap_score.notna().all()  # the attribution-patching screen ran
        assert cells.atp_star_magnitude.notna().all() and (cells.corruption == "noise").all()
        assert cells.sigma.iloc[0] > 0 and cells.noise.iloc[0] == pytest.approx(
            3 * cells.sigma.iloc[0]
        )
        # the span is the input literal of the final assertion, late in the prompt
        assert cells.span_start.iloc[0] > n_tokens - 12
    summary = pd.read_parquet(out / "summary.parquet")
    # every problem has a last token and a last span token; "4" is a one-token span
    assert set(summary[summary.bucket.isin(["last_token", "last_span"])].n_problems) == {2}
    assert set(summary[summary.bucket == "first_span"].n_problems) == {1}
    norms = pd.read_parquet(out / "activation_norms.parquet")
    assert set(norms.problem) == {"sample_2", "sample_0"} and (norms.mean_norm > 0).all()
    log = (forced_run / "logs/trace/select" / f"{MODEL}.log").read_text()
    assert "selected 2 problem(s) (forced)" in log
    trace_log = (forced_run / "logs/trace/problems" / MODEL / "sample_2.log").read_text()
    assert "screen atp_qk vs exact trace, hidden: Spearman" in trace_log
    screens = pd.read_parquet(out / "screens.parquet")
    assert len(screens) == 2 * 3 * 3 and set(screens.problem) == {"sample_2", "sample_0"}


def test_up_to_date_then_settings_rerun_only_traces(forced_run: Path):
    assert dry_run(forced_run, *TARGETS) == []
    config = _config(**FORCED, samples=4)
    write_config(forced_run, config)
    jobs = job_keys(dry_run(forced_run, *TARGETS))
    wc = (("model", MODEL),)
    traces = {
        ("causal_trace", (("model", MODEL), ("problem", "sample_0"))),
        ("causal_trace", (("model", MODEL), ("problem", "sample_2"))),
        ("trace_summary", wc),
    }
    assert jobs == traces  # the norms do not depend on the number of corrupted rows
    write_config(forced_run, _config(**FORCED, samples=4, noise_sigmas=2.0))
    assert job_keys(dry_run(forced_run, *TARGETS)) == traces | {("activation_norms", wc)}


def test_greedy_selection_or_empty(tmp_path):
    ws = make_workspace(tmp_path / "ws", _config())
    run_snakemake(ws, *TARGETS)
    out = ws / "results" / MODEL / "trace"
    selected = pd.read_parquet(out / "selected.parquet")
    execs = pd.read_parquet(ws / "results" / MODEL / "cruxeval_o" / "executions.parquet")
    passed = execs[(execs["sample"] == 0) & execs["passed"].astype(bool)]
    assert set(selected.task_id) == set(passed.task_id.astype(str)[:2])
    summary = pd.read_parquet(out / "summary.parquet")
    log = (ws / "logs/trace/select" / f"{MODEL}.log").read_text()
    if selected.empty:  # the tiny model answers nothing: the pipeline completes and says so
        assert summary.empty and "answers no CRUXEval-O problem correctly" in log
        assert pd.read_parquet(out / "activation_norms.parquet").empty
    else:
        assert set(summary[summary.bucket == "last_token"].n_problems) == {len(selected)}
