"""The finetune rule in the DAG: default config, the OLMo-2 preset (revisions sweep), a real run."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pandas as pd
import pytest
import yaml

from attribution import provenance
from attribution.finetune.history import HISTORY_COLUMNS
from workflow_utils import dry_run, make_workspace, merged, repo_config, run_snakemake

REPO = Path(__file__).resolve().parents[1]


def test_preset_dry_run_has_one_job_set_per_revision(tmp_path):
    ws = make_workspace(tmp_path / "ws", extra=("presets",))
    preset = yaml.safe_load((REPO / "presets" / "olmo2-7b.yaml").read_text())
    jobs = dry_run(ws, "--configfile", "presets/olmo2-7b.yaml")
    revisions = preset["models"]["olmo2-7b-ckpt"]["revisions"]
    assert len(revisions) >= 3
    benchmarks = set(preset["benchmarks"])
    generated = {(j.wc["model"], j.wc["benchmark"]) for j in jobs if j.rule == "generate"}
    for rev in revisions:
        assert {(f"olmo2-7b-ckpt@{rev}", b) for b in benchmarks} <= generated
    # The preset replaces the embedded default: no tiny model joins the study.
    models = {m for m, _ in generated}
    assert not any(m.startswith("tiny") for m in models)
    assert {"olmo2-7b", "olmo2-7b-sft", "olmo2-7b-dpo", "olmo2-7b-instruct"} <= models
    # Before and after: the fine-tuned model is benchmarked by the same jobs as its base.
    assert {("olmo2-7b-apps-lora", b) for b in benchmarks} <= generated
    finetunes = [j for j in jobs if j.rule == "finetune"]
    assert [j.wc["model"] for j in finetunes] == ["olmo2-7b-apps-lora"]
    downloads = {j.wc["dataset"] for j in jobs if j.rule == "download_dataset"}
    assert downloads == {"humanevalplus", "cruxeval", "apps", "apps_train"}


def test_default_dag_fine_tunes_the_tiny_base(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    jobs = dry_run(ws)
    built = {j.wc["model"] for j in jobs if j.rule == "build_model"}
    tuned = {j.wc["model"] for j in jobs if j.rule == "finetune"}
    assert tuned == {"tiny-olmo2-apps"} and "tiny-olmo2-apps" not in built
    assert "tiny-olmo2" in built
    generated = {j.wc["model"] for j in jobs if j.rule == "generate"}
    assert {"tiny-olmo2", "tiny-olmo2-apps"} <= generated


def test_finetune_dataset_must_be_apps_kind(tmp_path):
    config = merged(
        repo_config(), {"models": {"tiny-olmo2-apps": {"finetune": {"dataset": "cruxeval"}}}}
    )
    ws = make_workspace(tmp_path / "ws", config=config)
    proc = run_snakemake(ws, "--dry-run", check=False)
    assert proc.returncode != 0
    assert (
        "models.tiny-olmo2-apps.finetune.dataset: 'cruxeval' is not a datasets entry of kind apps"
        in (proc.stdout + proc.stderr)
    )


def test_unknown_finetune_key_is_named(tmp_path):
    config = merged(repo_config(), {"models": {"tiny-olmo2-apps": {"finetune": {"lrr": 1}}}})
    ws = make_workspace(tmp_path / "ws", config=config)
    proc = run_snakemake(ws, "--dry-run", check=False)
    assert proc.returncode != 0 and "lrr" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_finetune_rule_runs_on_a_train_split_dataset(tmp_path):
    """A real run: a separate APPS dataset entry (kind apps) feeds the fine-tune; the model
    folder is complete and write-protected; a rerun has nothing to do."""
    config = merged(
        repo_config(),
        {
            "datasets": {
                "apps_train": {"kind": "apps", "source": "local", "path": "data/samples/apps.jsonl"}
            },
            "models": {
                "tiny-llama": None,
                "tiny-olmo2": {"build": {"pretrain_steps": 0, "vocab_size": 1024}},
                "tiny-olmo2-apps": {
                    "finetune": {
                        "dataset": "apps_train",
                        "max_steps": 4,
                        "batch_size": 2,
                        "max_length": 512,
                        "logging_steps": 1,
                        "save_steps": 2,
                    }
                },
            },
        },
    )
    ws = make_workspace(tmp_path / "ws", config=config)
    target = "results/finetune/tiny-olmo2-apps/history.parquet"
    run_snakemake(ws, target)
    history = pd.read_parquet(ws / target)
    assert list(history.columns) == [*HISTORY_COLUMNS, *provenance.COLUMNS]
    assert history["step"].max() == 4 and set(history["backend"]) == {"trainer"}
    model_config = ws / "models" / "tiny-olmo2-apps" / "config.json"
    assert model_config.exists() and (ws / "models/tiny-olmo2-apps/model.safetensors").exists()
    assert not os.stat(model_config).st_mode & stat.S_IWUSR  # protected()
    assert (ws / "data" / "raw" / "apps_train.parquet").exists()
    assert (ws / "logs" / "finetune" / "tiny-olmo2-apps.log").read_text().strip()
    assert dry_run(ws, target) == []
