"""What `make demo` prints at its end (attribution.findings), from a small results tree."""

from __future__ import annotations

import pandas as pd

from attribution.findings import findings_text, headline_pass_at_1, main


def _summary_row(model, benchmark, variant, subset, value, stat="pass@k", k=1):
    metric = "/".join(p for p in (variant, f"pass@{k}") if p)
    return dict(
        model=model,
        benchmark=benchmark,
        metric=metric,
        variant=variant,
        stat=stat,
        k=k,
        subset=subset,
        value=value,
    )


def write_results(root):
    rows = [
        _summary_row("tiny", "cruxeval_o", "", "all", 0.5),
        _summary_row("tiny", "cruxeval_o", "", "train", 2 / 3),
        _summary_row("tiny", "cruxeval_o", "", "held_out", 0.0),
        _summary_row("tiny", "humanevalplus", "plus", "all", 0.25),
        _summary_row("tiny", "humanevalplus", "base", "all", 0.75),
        _summary_row("tiny", "humanevalplus", "", "all", 0.25),
        _summary_row("tiny", "cruxeval_o", "execution_only", "all", 0.9),
        _summary_row("tiny", "cruxeval_o", "", "all", 0.9, k=2),
        _summary_row("ft", "cruxeval_o", "", "all", 0.1),
    ]
    (root / "summary").mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(root / "summary" / "metrics.parquet")
    trace = root / "tiny" / "trace"
    (trace / "problems").mkdir(parents=True)
    pd.DataFrame({"task_id": ["s0", "s1"], "reason": "greedy_pass", "rank": [0, 1]}).to_parquet(
        trace / "selected.parquet"
    )
    for task, high in (("s0", 0.9), ("s1", 0.7)):
        pd.DataFrame({"high": [high, high]}).to_parquet(trace / "problems" / f"{task}.parquet")
    pd.DataFrame(
        {
            "kind": ["hidden", "hidden", "mlp"],
            "bucket": ["last_span", "last_token", "first_span"],
            "layer": [0, 1, 0],
            "aie": [0.05, 0.4, 0.1],
        }
    ).to_parquet(trace / "summary.parquet")


def test_table_counts_headline_pass_at_1_with_parts(tmp_path):
    write_results(tmp_path)
    table = headline_pass_at_1(pd.read_parquet(tmp_path / "summary" / "metrics.parquet"))
    assert list(table.columns) == ["humanevalplus", "cruxeval_o"]
    assert table.loc["tiny", "cruxeval_o"] == "66.7 / 0.0"  # trained on / held out
    assert table.loc["tiny", "humanevalplus"] == "25.0"  # base + plus tests, all tasks
    assert table.loc["ft", "humanevalplus"] == "-"


def test_text_has_scores_traces_outputs_and_the_report_command(tmp_path, capsys):
    write_results(tmp_path)
    text = findings_text(tmp_path, "make-report-cmd")
    assert "'a / b' = tasks trained on / held-out tasks" in text
    lines = text.splitlines()
    traces = lines.index(next(line for line in lines if line.startswith("traced model")))
    trace_line = next(line for line in lines[traces:] if line.startswith("tiny "))
    assert trace_line.split()[:3] == ["tiny", "2", "0.70"]  # problems, min clean p
    # strongest overall, then strongest among the corrupted span's tokens
    assert "hidden last_token L1: 0.40" in trace_line and "mlp first_span L0: 0.10" in trace_line
    assert "HTML report:    make-report-cmd" in text
    assert main(["--results", str(tmp_path / "missing")]) == 0
    assert "has not finished" in capsys.readouterr().out
