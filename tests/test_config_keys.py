"""Config keys are used or rejected, never accepted and then ignored: generation.gpus > 1 with
the hf backend (which runs a model on one GPU) is a config error. (datasets.*.format: see
tests/test_data_loaders.py.)"""

from __future__ import annotations

import pytest

from attribution.config import ConfigError, check_config
from attribution.generation.job import load_backend


def config(generation: dict, benchmark: dict) -> dict:
    return {
        "datasets": {"cruxeval": {"source": "local", "path": "data/samples/cruxeval.jsonl"}},
        "benchmarks": {"cruxeval_o": benchmark},
        "models": {"tiny": {"build": {"arch": "olmo2"}}},
        "generation": generation,
    }


@pytest.mark.parametrize(
    ("generation", "benchmark", "where"),
    [
        ({"backend": "hf", "gpus": 2}, {}, "generation.gpus: 2 GPUs"),
        ({}, {"gpus": 4}, "benchmarks.cruxeval_o.gpus: 4 GPUs"),
    ],
)
def test_hf_backend_with_several_gpus_is_a_config_error(repo_root, generation, benchmark, where):
    with pytest.raises(ConfigError, match=f"{where}.*hf backend runs a model on one GPU"):
        check_config(config(generation, benchmark), workdir=repo_root)


def test_one_gpu_or_vllm_is_fine(repo_root):
    check_config(config({"backend": "hf", "gpus": 1}, {"gpus": 0}), workdir=repo_root)
    check_config(config({"backend": "vllm", "gpus": 4}, {"gpus": 2}), workdir=repo_root)


def test_hf_backend_refuses_several_gpus_outside_the_workflow_too():
    with pytest.raises(ValueError, match="hf backend runs a model on one GPU, not 2"):
        load_backend("hf", "models/none", None, "auto", gpus=2)
