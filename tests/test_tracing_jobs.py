"""The trace job end to end on the tiny Llama and the project's CRUXEval sample: symmetric token
replacement (Zhang & Nanda 2023) and the AtP* screens, through the summary's screen table."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from attribution.data.prompts import cruxeval_output_row
from attribution.data.records import CruxEvalTask
from attribution.tracing.agreement import AGREEMENT_COLUMNS
from attribution.tracing.jobs import (
    cruxeval_replacement,
    read_cruxeval_prompts,
    run_causal_trace,
    run_trace_summary,
    screen_list,
    trace_input,
)

TASK = "sample_3"  # input [7, 8, 9]: other list literals tokenize alike


@pytest.fixture(scope="module")
def prompts(repo_root, tmp_path_factory):
    rows = []
    for line in (repo_root / "data/samples/cruxeval.jsonl").read_text().splitlines():
        record = json.loads(line)
        task = CruxEvalTask(
            id=record["id"], code=record["code"], input=record["input"], output=record["output"]
        )
        row = cruxeval_output_row(task)
        rows.append({**row, "reference": json.dumps(row["reference"])})
    path = tmp_path_factory.mktemp("prompts") / "cruxeval_o.parquet"
    pd.DataFrame(rows)[["task_id", "prompt", "answer_prefix", "reference"]].to_parquet(path)
    return path


SETTINGS = {
    "kinds": ["hidden", "mlp", "attn"],
    "samples": 3,
    "window": 2,
    "seed": 1,
    "span": "input",
    "corruption": "replace",
    "screen": ["atp", "atp_qk", "atp_star"],
}


def test_replace_and_atp_star_end_to_end(tiny_llama_dir, prompts, tmp_path, caplog):
    out = tmp_path / f"{TASK}.parquet"
    with caplog.at_level(logging.INFO, logger="attribution.tracing"):
        frame = run_causal_trace(
            str(tiny_llama_dir), str(prompts), TASK, str(out), SETTINGS, dtype="float32"
        )
    assert out.is_file() and (frame.corruption == "replace").all()
    sources = frame.corruption_sources.iloc[0].split(",")
    assert len(sources) == frame.samples.iloc[0] >= 1 and TASK not in sources
    assert frame.noise.isna().all() and frame.sigma.isna().all()
    computed = frame[frame.computed]
    for column in ("ap_score", "atp_qk_score", "atp_star_magnitude"):
        assert computed[column].notna().all()
    assert (computed.atp_star_magnitude >= 0).all()
    assert computed.high.iloc[0] != computed.low.iloc[0]
    for screen in ("atp", "atp_qk", "atp_star"):
        assert f"screen {screen} vs exact trace, hidden: Spearman" in caplog.text
    # the summary stage's screen table: one row per screen and kind of the problem
    summary_out, screens_out = tmp_path / "summary.parquet", tmp_path / "screens.parquet"
    run_trace_summary([str(out)], str(summary_out), str(screens_out))
    table = pd.read_parquet(screens_out)
    assert list(table.columns)[:8] == ["problem", *AGREEMENT_COLUMNS]  # then provenance
    assert len(table) == 9 and set(table.screen) == {"atp", "atp_qk", "atp_star"}
    assert table.false_negative_rate.between(0, 1).all()
    assert table[table.screen != "atp_star"].spearman.between(-1, 1).all()
    assert not pd.read_parquet(summary_out).empty


def test_replacements_are_other_inputs_in_place(tiny_llama_dir, prompts):
    from attribution.models.loading import load_model_and_tokenizer

    tokenizer = load_model_and_tokenizer(tiny_llama_dir, dtype="float32", device="cpu").tokenizer
    rows = read_cruxeval_prompts(prompts)
    inp = trace_input(tokenizer, rows[TASK], "input")
    corruption = cruxeval_replacement(tokenizer, rows, TASK, inp, 5, 1)
    start, end = inp.span
    # the span's tokens cover the literal (and what a boundary token merges with it, e.g. ")")
    clean = tokenizer.decode(inp.prompt.input_ids[start:end])
    assert rows[TASK].input in clean
    for i, source in enumerate(corruption.sources):
        text = tokenizer.decode(corruption.ids[i, start:end].tolist())
        assert text == clean.replace(rows[TASK].input, rows[source].input) != clean
        # everything outside the span is the clean prompt
        assert corruption.ids[i, :start].tolist() == inp.prompt.input_ids[:start]
        assert corruption.ids[i, end:].tolist() == inp.prompt.input_ids[end:]
    # the draw is a seeded permutation: same seed, same rows
    again = cruxeval_replacement(tokenizer, rows, TASK, inp, 5, 1)
    assert again.sources == corruption.sources
    with pytest.raises(ValueError, match="every CRUXEval function is named f"):
        cruxeval_replacement(
            tokenizer, rows, TASK, trace_input(tokenizer, rows[TASK], "function_name"), 3, 1
        )


def test_screen_setting():
    assert screen_list(True) == ("atp",) and screen_list(False) == ()
    assert screen_list(["atp_star", "atp"]) == ("atp_star", "atp")
    with pytest.raises(ValueError, match="not screens"):
        screen_list(["acdc"])
