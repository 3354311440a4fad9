"""What a finished run found, as a few lines of text (``python -m attribution findings``; the end
of ``make demo``): pass@1 per model x benchmark (trained-on / held-out parts where the dataset
has a held-out part), the causal traces per model (problems traced, the clean probability of the
answer token, where the average indirect effect peaks), and where the figures and the report
are. Reads only the pipeline's outputs; nothing here computes a score.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from attribution.data.splits import ALL, HELD_OUT, TRAIN
from attribution.plots.metrics import BENCHMARK_LABELS, headline_rows

BENCHMARK_ORDER = ("humanevalplus", "cruxeval_o", "cruxeval_i", "apps")
REPORT_COMMAND = "snakemake --report results/report.html"


def headline_pass_at_1(summary: pd.DataFrame) -> pd.DataFrame:
    """model x benchmark -> text cell: pass@1 in percent over all tasks, or ``trained / held
    out`` where the summary has the two parts. HumanEval+ counts base + plus tests."""
    rows = summary[(summary["stat"] == "pass@k") & (summary["k"] == 1)]
    rows = rows[headline_rows(rows)]
    # one headline variant per benchmark: the plain score, or HumanEval+'s plus tests
    rows = rows[(rows["variant"] == "") | (rows["variant"] == "plus")]
    models = list(dict.fromkeys(rows["model"].astype(str)))
    benchmarks = [b for b in BENCHMARK_ORDER if b in set(rows["benchmark"])]
    table = pd.DataFrame(index=pd.Index(models, name="model"), columns=benchmarks, dtype=object)
    for (model, bench), part in rows.groupby(["model", "benchmark"], sort=False):
        values = dict(zip(part["subset"].astype(str), part["value"].astype(float), strict=True))
        if TRAIN in values or HELD_OUT in values:
            cell = f"{_pct(values.get(TRAIN))} / {_pct(values.get(HELD_OUT))}"
        else:
            cell = _pct(values.get(ALL))
        table.loc[str(model), str(bench)] = cell
    return table.fillna("-")


def _pct(value: float | None) -> str:
    return "-" if value is None or pd.isna(value) else f"{100 * value:.1f}"


SPAN_BUCKETS = ("first_span", "middle_span", "last_span")
Peak = tuple[str, str, int, float]  # kind, token bucket, layer, AIE


@dataclass(frozen=True)
class TraceFindings:
    model: str
    selected: int
    traced: int
    min_clean_p: float
    peak: Peak | None  # the strongest AIE cell of the summary
    span_peak: Peak | None  # the strongest within the corrupted span (ROME's "early site")


def trace_findings(results: Path, model: str) -> TraceFindings | None:
    """What the trace stage of ``model`` found (None when it did not run)."""
    root = results / model / "trace"
    if not (root / "selected.parquet").exists():
        return None
    selected = pd.read_parquet(root / "selected.parquet")["task_id"].astype(str)
    highs = []
    for task in selected:
        path = root / "problems" / f"{task}.parquet"
        if path.exists():
            highs.append(float(pd.read_parquet(path, columns=["high"])["high"].iloc[0]))
    peak = span_peak = None
    if (root / "summary.parquet").exists():
        summary = pd.read_parquet(root / "summary.parquet")
        peak = _strongest(summary)
        span_peak = _strongest(summary[summary["bucket"].isin(SPAN_BUCKETS)])
    return TraceFindings(
        model=model,
        selected=len(selected),
        traced=len(highs),
        min_clean_p=min(highs) if highs else float("nan"),
        peak=peak,
        span_peak=span_peak,
    )


def _strongest(summary: pd.DataFrame) -> Peak | None:
    summary = summary.dropna(subset=["aie"])
    if summary.empty:
        return None
    best = summary.loc[summary["aie"].idxmax()]
    return str(best["kind"]), str(best["bucket"]), int(best["layer"]), float(best["aie"])


def _table(frame: pd.DataFrame) -> list[str]:
    cells = [[str(frame.index.name or ""), *map(str, frame.columns)]]
    cells += [
        [str(i), *map(str, row)] for i, row in zip(frame.index, frame.to_numpy(), strict=True)
    ]
    widths = [max(len(r[c]) for r in cells) for c in range(len(cells[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]


def findings_text(results: str | Path = "results", report_command: str = REPORT_COMMAND) -> str:
    """The lines ``make demo`` prints at its end."""
    results = Path(results)
    summary_path = results / "summary" / "metrics.parquet"
    if not summary_path.exists():
        return f"no {summary_path}: the run has not finished (run `make demo`)\n"
    summary = pd.read_parquet(summary_path)
    table = headline_pass_at_1(summary)
    split = (summary["subset"] != ALL).any()
    lines = [
        f"pass@1 in % ({summary_path})"
        + ("; 'a / b' = tasks trained on / held-out tasks" if split else ""),
        *_table(table.rename(columns=BENCHMARK_LABELS)),
        "",
    ]
    traces = [t for t in (trace_findings(results, m) for m in table.index) if t is not None]
    if traces:
        rows = pd.DataFrame(
            [
                [
                    t.selected,
                    f"{t.min_clean_p:.2f}" if t.traced else "-",
                    _peak(t.peak),
                    _peak(t.span_peak),
                ]
                for t in traces
            ],
            index=pd.Index([t.model for t in traces], name="traced model"),
            columns=["problems", "min clean p", "strongest AIE", "strongest in the span"],
        )
        lines += [
            "causal traces (results/<model>/trace/): CRUXEval-O problems answered and traced, the "
            "lowest clean p(answer token),",
            "and the strongest average indirect effect (kind, token bucket, layer: AIE), overall "
            "and among the corrupted input tokens",
            *_table(rows),
            "",
        ]
    figures = results / "figures"
    pngs = sorted(figures.rglob("*.png")) if figures.is_dir() else []
    lines += [
        "outputs",
        "  datasets      data/raw/*.parquet (+ .json provenance); prompts data/prompts/",
        "  models        models/*/ (build_spec.json lists the tasks a built model trained on)",
        f"  scores        {results}/<model>/<benchmark>/metrics.json; {summary_path}",
        f"  figures       {figures}/ ({len(pngs)} PNG, each also PDF; index.tsv lists them)",
        f"  comparison    {results / 'summary' / 'comparison.md'}",
        "  logs          logs/ (one per job; timings in benchmarks_out/)",
        f"HTML report:    {report_command}",
    ]
    return "\n".join(lines) + "\n"


def _peak(peak: Peak | None) -> str:
    if peak is None:
        return "-"
    kind, bucket, layer, aie = peak
    return f"{kind} {bucket} L{layer}: {aie:.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m attribution findings",
        description="Print what a finished run found (scores, traces) and where its outputs are.",
    )
    parser.add_argument("--results", default="results", help="the run's results folder")
    parser.add_argument(
        "--report-command", default=REPORT_COMMAND, help="the command shown for the HTML report"
    )
    args = parser.parse_args(argv)
    sys.stdout.write(findings_text(args.results, args.report_command))
    return 0
