"""Provenance records (attribution/provenance.py): what they hold, how results carry them, and
the comparison's warning when compared rows were made differently. Every stage's file is
checked on a real run in tests/test_rerun.py."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import transformers

from attribution import provenance
from attribution.comparison import BootstrapSettings, to_html, to_markdown
from attribution.data.loaders import load_dataset_file
from attribution.data.prompts import format_prompts
from attribution.generation.job import generate_job
from attribution.generation.runner import GENERATION_COLUMNS, shard_dir


def make(**changes) -> dict:
    rec = provenance.record(
        code="abc",
        backend="hf",
        device="cpu",
        dtype=torch.float32,
        batch_size=8,
        libraries=("torch", "transformers"),
    )
    return {**rec, **changes}


def test_record_holds_the_environment_and_only_used_libraries():
    rec = make()
    assert list(rec) == list(provenance.COLUMNS)
    assert rec["device"] == "cpu" and rec["gpu_name"] == "" and rec["gpu_count"] == 0
    assert rec["dtype"] == "float32" and rec["batch_size"] == 8 and rec["code"] == "abc"
    assert rec["torch_version"] == torch.__version__
    assert rec["transformers_version"] == transformers.__version__
    assert rec["nnsight_version"] == rec["vllm_version"] == ""  # not used by this job
    with pytest.raises(ValueError, match="unknown libraries"):
        provenance.record(
            code="", backend="", device=None, dtype=None, batch_size=None, libraries=["jax"]
        )


def test_columns_round_trip_and_mixed_rows(tmp_path):
    frame = provenance.with_columns(pd.DataFrame({"x": [1, 2]}), make())
    frame.to_parquet(tmp_path / "f.parquet")
    again = pd.read_parquet(tmp_path / "f.parquet")
    assert provenance.from_frame(again) == make()
    mixed = pd.concat([again, provenance.with_columns(again[["x"]], make(dtype="bfloat16"))])
    with pytest.raises(ValueError, match="different provenance"):
        provenance.from_frame(mixed, "mixed")
    joined = provenance.merged(mixed)
    assert joined["dtype"] == "bfloat16 | float32" and joined["batch_size"] == 8
    with pytest.raises(ValueError, match="no provenance columns"):
        provenance.from_frame(pd.DataFrame({"x": [1]}), "old.parquet")


def test_comparison_warns_when_compared_rows_differ():
    def rows(model: str, rec: dict) -> list[dict]:
        return [
            {"model": model, "benchmark": b, "metric": "pass@1", **rec}
            for b in ("humanevalplus", "cruxeval_o")
        ]

    summary = pd.DataFrame(
        rows("a", make())
        + rows("b", make(code="other"))  # another code hash alone is no warning
        + rows("c", make(dtype="bfloat16", gpu_name="NVIDIA H100", batch_size=32))
    )
    table = pd.DataFrame(
        [
            {"model": m, "reference": "a", "benchmark": b, "metric": "pass@1"}
            for m in ("b", "c")
            for b in ("humanevalplus", "cruxeval_o")
        ]
    )
    table["provenance_differs"] = provenance.comparison_differences(summary, table)
    assert table["provenance_differs"].tolist()[:2] == ["", ""]
    differs = table["provenance_differs"].iloc[2]
    assert "dtype: 'bfloat16' vs 'float32'" in differs and "batch_size: 32 vs 8" in differs
    assert "gpu_name" in differs and "code" not in differs
    notes = provenance.comparison_notes(table)
    assert len(notes) == 2 and notes[0].startswith("c vs a on humanevalplus: made differently")
    settings = BootstrapSettings()
    empty = table.iloc[0:0]
    assert "## Warnings" in to_markdown(empty, settings, notes) and notes[1] in to_markdown(
        empty, settings, notes
    )
    assert "<h2>Warnings</h2>" in to_html(empty, settings, notes)
    assert "Warnings" not in to_markdown(empty, settings)


def test_generate_job_records_how_it_generated(tiny_model_dir, tmp_path):
    prompts = format_prompts(
        "cruxeval_o", load_dataset_file("cruxeval", "data/samples/cruxeval.jsonl")
    ).head(3)
    prompts.to_parquet(tmp_path / "prompts.parquet")
    out = tmp_path / "generations.parquet"
    frame = generate_job(
        tmp_path / "prompts.parquet",
        out,
        model={"load_path": str(tiny_model_dir), "revision": None, "dtype": "auto"},
        benchmark={"max_new_tokens": 4, "batch_size": 2},
        seed=1,
        code="c0de",
        progress=False,
    )
    assert list(frame.columns) == [*GENERATION_COLUMNS, *provenance.COLUMNS]
    rec = provenance.from_frame(frame)
    assert (rec["backend"], rec["device"], rec["dtype"], rec["batch_size"]) == (
        "hf",
        "cpu",
        "float32",
        2,
    )
    assert rec["code"] == "c0de" and rec["torch_version"] == torch.__version__
    assert not shard_dir(out).exists()
