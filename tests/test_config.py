"""Config validation (schema + cross-entry checks) and model-entry expansion."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from attribution.config import (
    ConfigError,
    check_config,
    expand_models,
    parse_revision_step,
    parse_revision_tokens,
)

REPO = Path(__file__).resolve().parents[1]


def deep_update(base: dict, override: dict) -> dict:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def dry_run_with(tmp_path: Path, override: dict) -> subprocess.CompletedProcess[str]:
    """Dry run with config.yaml updated by ``override`` (a --configfile replaces config.yaml)."""
    config = deep_update(yaml.safe_load((REPO / "config.yaml").read_text()), override)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--nolock", "--configfile", str(cfg)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"models": {"weird": {"source": "somewhere"}}}, "models.weird: Additional properties"),
        ({"models": {"nothing": {"dtype": "bfloat16"}}}, "models.nothing"),
        (
            {"benchmarks": {"apps": {"n_samples": "two"}}},
            "benchmarks.apps.n_samples: 'two' is not of type 'integer'",
        ),
        ({"benchmarks": {"mbpp": {"n_samples": 1}}}, "'mbpp' was unexpected"),
        (
            {"datasets": {"apps": {"source": "local", "path": "data/samples/missing.jsonl"}}},
            "datasets.apps.path: data/samples/missing.jsonl does not exist",
        ),
        (
            {"models": {"ft": {"finetune": {"base": "no-such-model"}}}},
            "models.ft.finetune.base: unknown model 'no-such-model'",
        ),
        ({"models": {"a/b": {"hub": "org/name"}}}, "a/b"),
        ({"trace": {"models": ["tiny-olmo"]}}, "trace.models: 'tiny-olmo' is not a model"),
    ],
    ids=[
        "unknown-source",
        "no-source",
        "bad-type",
        "unknown-benchmark",
        "missing-path",
        "unknown-base",
        "slash-in-name",
        "trace-model-typo",
    ],
)
def test_invalid_config_fails_at_parse_time_naming_key(tmp_path, override, expected):
    result = dry_run_with(tmp_path, override)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "invalid config" in output
    assert expected in output


def test_default_config_is_valid_and_dry_run_lists_jobs(tmp_path):
    result = dry_run_with(tmp_path, {})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "build_model" in result.stdout + result.stderr


def _config(models: dict) -> dict:
    return {
        "datasets": {"cruxeval": {"source": "local", "path": "data/samples/cruxeval.jsonl"}},
        "benchmarks": {"cruxeval_o": {}, "cruxeval_i": {}},
        "models": models,
    }


def test_revisions_expand_to_name_at_revision():
    cfg = _config(
        {
            "olmo": {
                "hub": "allenai/OLMo-2-1124-7B",
                "revisions": ["stage1-step1000-tokens5B", "main"],
            },
            "tiny": {"build": {"arch": "llama"}, "benchmarks": ["cruxeval_o"]},
        }
    )
    refs = expand_models(cfg)
    assert list(refs) == ["olmo@stage1-step1000-tokens5B", "olmo@main", "tiny"]
    first = refs["olmo@stage1-step1000-tokens5B"]
    assert (first.hub_id, first.revision, first.training_step) == (
        "allenai/OLMo-2-1124-7B",
        "stage1-step1000-tokens5B",
        1000,
    )
    assert first.load_path() == "allenai/OLMo-2-1124-7B"
    assert refs["olmo@main"].training_step is None
    assert refs["tiny"].is_local and refs["tiny"].load_path() == "models/tiny"
    assert refs["tiny"].benchmarks == ("cruxeval_o",)
    assert refs["olmo@main"].benchmarks == ("cruxeval_o", "cruxeval_i")


def test_revision_parsing():
    assert parse_revision_step("stage2-ingredient1-step11931-tokens100B") == 11931
    assert parse_revision_tokens("stage1-step1000-tokens5B") == 5e9
    assert parse_revision_tokens("stage1-step1000-tokens512M") == 512e6
    assert parse_revision_tokens("main") is None
    assert parse_revision_step(None) is None


def test_check_config_rejects_finetune_of_multi_revision_model(repo_root):
    cfg = _config(
        {
            "olmo": {"hub": "org/m", "revisions": ["a", "b"]},
            "ft": {"finetune": {"base": "olmo"}},
        }
    )
    with pytest.raises(ConfigError, match="models.ft.finetune.base"):
        check_config(cfg, workdir=repo_root)


def test_check_config_requires_dataset_of_each_benchmark(repo_root):
    cfg = _config({"tiny": {"build": {"arch": "olmo2"}}})
    cfg["benchmarks"]["apps"] = {}
    with pytest.raises(ConfigError, match="benchmarks.apps: needs datasets.apps"):
        check_config(cfg, workdir=repo_root)


def _demo_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        # a typo in trace.models used to trace nothing, silently
        ({"trace": {"models": ["tiny-olmo"]}}, r"trace.models: 'tiny-olmo' is not a model"),
        (
            {
                "models": {"tiny-llama": {"benchmarks": ["apps"]}},
                "trace": {"models": ["tiny-llama"]},
            },
            r"trace.models: 'tiny-llama' does not run cruxeval_o",
        ),
        (
            {"trace": {"force_problems": ["sample_1", "sample_99"]}},
            r"trace.force_problems: \['sample_99'\] are not task ids of datasets.cruxeval",
        ),
        # ks above n_samples used to be dropped from the scores, silently
        (
            {"benchmarks": {"apps": {"n_samples": 2, "ks": [1, 2, 5]}}},
            r"benchmarks.apps.ks: \[5\] exceed n_samples \(2\)",
        ),
        (
            {"models": {"tiny-olmo2-apps": {"finetune": {"eval_fraction": 0.1}}}},
            r"models.tiny-olmo2-apps.finetune.eval_fraction: 0.1 differs from "
            r"datasets.apps.held_out.fraction",
        ),
        (
            {"models": {"tiny-olmo2-apps": {"finetune": {"seed": 3}}}},
            r"finetune.seed: 3 differs from datasets.apps.held_out.seed",
        ),
        (
            {"models": {"tiny-llama": {"build": {"train_on": ["apps"]}}}, "datasets": "no-apps"},
            r"models.tiny-llama.build.train_on: apps needs datasets.apps",
        ),
    ],
    ids=[
        "trace-model-typo",
        "trace-model-without-cruxeval",
        "unknown-forced-problem",
        "k-above-n",
        "finetune-trains-on-held-out",
        "finetune-split-seed",
        "train-on-without-dataset",
    ],
)
def test_semantic_config_errors(repo_root, override, expected):
    config = _demo_config()
    if override.pop("datasets", None) == "no-apps":
        del config["datasets"]["apps"], config["benchmarks"]["apps"]
        del config["models"]["tiny-olmo2-apps"]
    deep_update(config, override)
    with pytest.raises(ConfigError, match=expected):
        check_config(config, workdir=repo_root)


def test_trace_models_accept_entries_and_revisions(repo_root):
    config = _demo_config()
    config["models"]["olmo"] = {"hub": "org/m", "revisions": ["step1", "step2"]}
    config["trace"]["models"] = ["olmo", "olmo@step2", "tiny-llama"]
    check_config(config, workdir=repo_root)
    config["trace"]["force_problems"] = ["sample_3"]  # a real id of the local dataset
    check_config(config, workdir=repo_root)
