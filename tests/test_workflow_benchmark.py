"""The benchmark stage in the real DAG: a tiny end-to-end run, then dry runs showing that a
change reruns exactly the jobs it touches.

Two hub-format models (the tiny test model in a local Hugging Face cache, so the hub loading
path runs offline): hub-a runs both benchmarks, hub-b only humanevalplus (a model's own
benchmark list); three tasks each, a few tokens.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from workflow_utils import (
    Job,
    dry_run,
    fake_hub_model,
    job_keys,
    make_workspace,
    merged,
    repo_config,
    run_snakemake,
    write_config,
)

pytestmark = pytest.mark.slow

SUMMARY = "results/summary/metrics.parquet"
PAIRS = {("hub-a", "humanevalplus"), ("hub-a", "cruxeval_o"), ("hub-b", "humanevalplus")}
REVISION_A = "stage1-step100-tokens1B"


def tiny_config() -> dict:
    config = repo_config()
    config["datasets"] = {
        k: v for k, v in config["datasets"].items() if k in ("humanevalplus", "cruxeval")
    }
    config["benchmarks"] = {
        "humanevalplus": {
            "n_samples": 1,
            "temperature": 0.0,
            "max_new_tokens": 8,
            "max_tasks": 3,
            "batch_size": 4,
            "ks": [1],
        },
        "cruxeval_o": {
            "n_samples": 2,
            "temperature": 0.7,
            "top_p": 0.95,
            "max_new_tokens": 8,
            "max_tasks": 3,
            "batch_size": 4,
            "ks": [1, 2],
        },
    }
    config["models"] = {
        "hub-a": {"hub": "test-org/tiny", "revision": REVISION_A},
        "hub-b": {"hub": "test-org/tiny", "revision": "main", "benchmarks": ["humanevalplus"]},
    }
    config["execution"] = {"workers": 2}
    config["trace"]["models"] = "all"
    if "figures" in config:
        config["figures"]["reference_model"] = "hub-a"
    return config


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir) -> tuple[Path, Path]:
    """A workspace where the summary and everything before it has been built once."""
    root = tmp_path_factory.mktemp("workflow_benchmark")
    hf_home = root / "hf"
    fake_hub_model(
        hf_home, tiny_model_dir, "test-org/tiny", [REVISION_A, "main", "stage1-step200-tokens2B"]
    )
    ws = make_workspace(root / "ws", tiny_config())
    run_snakemake(ws, SUMMARY, env={"HF_HOME": str(hf_home)})
    return ws, hf_home


@pytest.fixture()
def ws(finished, tmp_path) -> Path:
    """A private copy of the finished workspace (file times and Snakemake metadata kept)."""
    copy = tmp_path / "ws"
    shutil.copytree(finished[0], copy, symlinks=True)
    return copy


def expected(rules, models=None, benchmarks=None, summary=True):
    """{(rule, wildcards)} for ``rules`` over the model x benchmark pairs (optionally only some
    models / benchmarks), plus the summary."""
    keys = {
        (rule, (("benchmark", b), ("model", m)))
        for rule in rules
        for m, b in PAIRS
        if (models is None or m in models) and (benchmarks is None or b in benchmarks)
    }
    if summary:
        keys.add(("summarize", ()))
    return keys


def edit_config(ws: Path, change: dict) -> None:
    import yaml

    write_config(ws, merged(yaml.safe_load((ws / "config.yaml").read_text()), change))


def test_end_to_end_outputs_and_nothing_left_to_do(finished):
    ws, _ = finished
    gens = pd.read_parquet(ws / "results/hub-a/cruxeval_o/generations.parquet")
    assert len(gens) == 6 and set(gens["sample"]) == {0, 1}
    assert gens["prompt_text"].str.contains(r"\[PYTHON\]").all()
    executions = pd.read_parquet(ws / "results/hub-a/cruxeval_o/executions.parquet")
    assert len(executions) == 6
    metrics = json.loads((ws / "results/hub-b/humanevalplus/metrics.json").read_text())
    assert metrics["counts"]["tasks"] == 3
    summary = pd.read_parquet(ws / SUMMARY)
    assert set(zip(summary["model"], summary["benchmark"], strict=True)) == PAIRS
    a = summary[summary["model"] == "hub-a"]
    assert set(a["training_step"]) == {100} and set(a["training_tokens"]) == {1e9}
    provenance = json.loads((ws / "data/raw/cruxeval.json").read_text())
    assert set(summary.loc[summary["dataset"] == "cruxeval", "dataset_sha256"]) == {
        provenance["content_sha256"]
    }
    assert (ws / "logs/generate/hub-a/cruxeval_o.log").is_file()
    assert (ws / "benchmarks_out/generate/hub-a/cruxeval_o.tsv").is_file()
    assert dry_run(ws, SUMMARY) == []


def test_temperature_of_one_benchmark_reruns_only_its_jobs(ws):
    edit_config(ws, {"benchmarks": {"humanevalplus": {"temperature": 0.5}}})
    jobs = dry_run(ws, SUMMARY)
    # Both models' humanevalplus jobs, nothing of cruxeval_o.
    assert job_keys(jobs) == expected(
        ["generate", "execute", "score"], benchmarks=["humanevalplus"]
    )
    assert all("params" in j.reason.lower() for j in jobs if j.rule == "generate")


def test_ks_of_one_benchmark_reruns_only_its_scores(ws):
    edit_config(ws, {"benchmarks": {"cruxeval_o": {"ks": [1]}}})
    assert job_keys(dry_run(ws, SUMMARY)) == expected(["score"], benchmarks=["cruxeval_o"])


def test_revision_of_one_model_reruns_only_its_jobs(ws):
    edit_config(ws, {"models": {"hub-a": {"revision": "stage1-step200-tokens2B"}}})
    jobs = dry_run(ws, SUMMARY)
    assert job_keys(jobs) == expected(["generate", "execute", "score"], models=["hub-a"])


def test_scoring_module_edit_reruns_its_importers_not_generation(ws):
    # passk.py is scoring only (attribution.execution.scoring): execute never imports it
    passk = ws / "workflow_scripts/attribution/execution/passk.py"
    passk.write_text(passk.read_text() + "\n# an edit that changes the file's content\n")
    assert job_keys(dry_run(ws, SUMMARY)) == expected(["score"])


def test_scoring_edit_never_reruns_execution(ws):
    scoring = ws / "workflow_scripts/attribution/execution/scoring.py"
    scoring.write_text(scoring.read_text() + "\n# an edit that changes the file's content\n")
    assert job_keys(dry_run(ws, SUMMARY)) == expected(["score"])


def test_engine_edit_reruns_execution_not_references(ws):
    engine = ws / "workflow_scripts/attribution/execution/engine.py"
    engine.write_text(engine.read_text() + "\n# changed\n")
    assert job_keys(dry_run(ws, SUMMARY)) == expected(["execute", "score"])


def test_new_time_limit_reruns_exactly_the_executions_it_applies_to(ws):
    edit_config(ws, {"execution": {"min_time_limit_s": 2.0}})
    jobs = dry_run(ws, SUMMARY)
    assert job_keys(jobs) == expected(["execute", "score"], benchmarks=["humanevalplus"])
    assert all("params" in j.reason for j in jobs if j.rule == "execute")


def test_humanevalplus_checker_edit_reruns_its_references(ws):
    checker = ws / "workflow_scripts/attribution/execution/humanevalplus.py"
    checker.write_text(checker.read_text() + "\n# changed\n")
    jobs = dry_run(ws, SUMMARY)
    assert ("references", (("benchmark", "humanevalplus"),)) in job_keys(jobs)
    assert job_keys(jobs) - {("references", (("benchmark", "humanevalplus"),))} == expected(
        ["execute", "score"]
    )


def test_generation_module_edit_reruns_generation_and_everything_after(ws):
    hf = ws / "workflow_scripts/attribution/generation/postprocess.py"
    hf.write_text(hf.read_text() + "\n# changed\n")
    assert job_keys(dry_run(ws, SUMMARY)) == expected(["generate", "execute", "score"])


def test_touching_code_and_config_without_changes_reruns_nothing(ws):
    for folder in ("workflow_scripts", "rules"):
        for path in (ws / folder).rglob("*"):
            if path.is_file():
                path.write_bytes(path.read_bytes())  # new mtime, same content (like a checkout)
    for name in ("Snakefile", "config.yaml"):
        (ws / name).write_bytes((ws / name).read_bytes())
    assert dry_run(ws, SUMMARY) == []


def test_unknown_hub_model_fails_its_job_with_a_clear_message(ws, finished):
    edit_config(ws, {"models": {"ghost": {"hub": "nobody/ghost-model", "revision": "v1"}}})
    target = "results/ghost/humanevalplus/generations.parquet"
    proc = run_snakemake(ws, target, check=False, env={"HF_HOME": str(finished[1])})
    assert proc.returncode != 0
    log = (ws / "logs/generate/ghost/humanevalplus.log").read_text()
    assert "'nobody/ghost-model' at revision 'v1'" in log
    assert "HF_HOME" in log and "Pre-download" in log
    assert "Traceback" not in log and "Traceback" not in proc.stderr
    assert not (ws / target).exists()


def test_dry_run_parser_reads_rule_blocks():
    text = (
        "rule generate:\n    input: a\n    output: b\n    reason: Params have changed\n"
        "    wildcards: model=m@rev-1, benchmark=apps\n    resources: gpu=1\n\n"
        "localrule summarize:\n    input: x\n\nJob stats:\n"
    )
    from workflow_utils import parse_dry_run

    assert parse_dry_run(text) == [
        Job("generate", (("benchmark", "apps"), ("model", "m@rev-1")), "Params have changed"),
        Job("summarize", (), ""),
    ]
