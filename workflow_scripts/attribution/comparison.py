"""Model comparison tables (the seed's analyses 03-05): each model's pass@k next to a reference
model's, the difference, and percentile-bootstrap confidence intervals over tasks.

Values are the summary's (results/summary/metrics.parquet). Confidence intervals resample tasks
with replacement (Efron & Tibshirani 1993, "An Introduction to the Bootstrap", chapter 13,
percentile interval) from the per-task pass@k of executions.parquet (Chen et al. 2021, section
2.1, unbiased estimator per task); a difference is bootstrapped paired, over the tasks both
models ran, so that task difficulty cancels. Each row's resampling is seeded from the base seed
and the row's identity, so adding a model to the config changes no other row.
"""

from __future__ import annotations

import html
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from attribution.execution.passk import pass_at_k
from attribution.plots.metrics import (
    BENCHMARK_LABELS,
    UNRECORDED,
    VARIANT_LABELS,
    check_summary,
    headline_rows,
    parse_metric,
)

# Which verdict column a summary metric variant is computed from (see execution.engine).
VERDICT_COLUMNS = {
    ("humanevalplus", "base"): "base_passed",
    ("humanevalplus", "plus"): "plus_passed",
    ("humanevalplus", ""): "plus_passed",  # the HumanEval+ number: base and plus tests
}
APPS_DIFFICULTY_COLUMN = "difficulty"
COLUMNS = [
    "benchmark",
    "metric",
    "k",
    "model",
    "reference",
    "value",
    "ci_low",
    "ci_high",
    "reference_value",
    "reference_ci_low",
    "reference_ci_high",
    "delta",
    "delta_ci_low",
    "delta_ci_high",
    "n_tasks",
    "n_paired_tasks",
]


@dataclass(frozen=True)
class Pair:
    """Compare ``model`` against ``reference``."""

    model: str
    reference: str


@dataclass(frozen=True)
class BootstrapSettings:
    samples: int = 2000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples < 100:
            raise ValueError(f"bootstrap samples must be >= 100, got {self.samples}")
        if not 0.5 <= self.confidence < 1:
            raise ValueError(f"confidence must be in [0.5, 1), got {self.confidence}")


def comparison_pairs(
    models: Sequence[str],
    reference: str | None = None,
    extra: Iterable[tuple[str, str]] = (),
) -> list[Pair]:
    """Every model against ``reference`` (default: the first model), then the ``extra``
    (model, reference) pairs (e.g. fine-tuned vs base), without duplicates."""
    if not models:
        raise ValueError("no models to compare")
    reference = reference or models[0]
    if reference not in models:
        raise ValueError(
            f"reference model {reference!r} is not a model of this run: {list(models)}"
        )
    pairs = [Pair(m, reference) for m in models if m != reference]
    for model, ref in extra:
        for name in (model, ref):
            if name not in models:
                raise ValueError(f"comparison pair ({model}, {ref}): unknown model {name!r}")
        pairs.append(Pair(model, ref))
    return list(dict.fromkeys(pairs))


def per_task_scores(executions: pd.DataFrame, benchmark: str, variant: str, k: int) -> pd.Series:
    """pass@k of each task (index task_id) for one summary metric variant, from the verdicts."""
    column = VERDICT_COLUMNS.get((benchmark, variant), "passed")
    frame = executions
    if benchmark == "apps" and variant:
        difficulty = "" if variant == UNRECORDED else variant
        frame = frame[frame[APPS_DIFFICULTY_COLUMN].astype(str) == difficulty]
    elif (benchmark, variant) not in VERDICT_COLUMNS and variant:
        raise ValueError(f"{benchmark}: no per-task verdicts for metric variant {variant!r}")
    if column not in frame.columns:
        raise ValueError(
            f"{benchmark} executions: no {column!r} column (has {list(frame.columns)})"
        )
    grouped = frame.groupby(frame["task_id"].astype(str), sort=True)[column]
    n = grouped.size()
    c = grouped.sum().astype(int)
    short = n[n < k]
    if not short.empty:
        raise ValueError(
            f"{benchmark}: pass@{k} needs >= {k} samples per task; task {short.index[0]} has "
            f"{int(short.iloc[0])}"
        )
    return pd.Series(
        [pass_at_k(int(n[t]), int(c[t]), k) for t in n.index], index=n.index, dtype=float
    )


def bootstrap_interval(
    values: np.ndarray, rng: np.random.Generator, settings: BootstrapSettings
) -> tuple[float, float]:
    """Percentile interval of the mean of ``values`` (one entry per task)."""
    if values.size == 0:
        return (np.nan, np.nan)
    means = np.empty(settings.samples)
    block = max(1, 4_000_000 // values.size)  # resamples per draw: bounded memory on big sets
    for start in range(0, settings.samples, block):
        stop = min(settings.samples, start + block)
        idx = rng.integers(0, values.size, size=(stop - start, values.size))
        means[start:stop] = values[idx].mean(axis=1)
    tail = (1 - settings.confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def _rng(settings: BootstrapSettings, *identity: str) -> np.random.Generator:
    return np.random.default_rng([settings.seed, zlib.crc32("\0".join(identity).encode())])


def compare(
    summary: pd.DataFrame,
    executions: Mapping[tuple[str, str], pd.DataFrame],
    pairs: Sequence[Pair],
    settings: BootstrapSettings = BootstrapSettings(),
    tolerance: float = 1e-6,
) -> pd.DataFrame:
    """One row per (pair, benchmark, headline pass@k metric) in both models' summaries (see
    :func:`attribution.plots.metrics.headline_rows`); columns COLUMNS.

    ``executions`` maps (model, benchmark) to that job's executions frame. The per-task mean must
    reproduce the summary value (within ``tolerance``), so that the intervals belong to the
    numbers shown; a mismatch raises naming the row.
    """
    check_summary(summary, "summary")
    rows = summary[summary["metric"].str.contains("pass@", regex=False)]
    rows = rows[
        headline_rows(rows.assign(variant=rows["metric"].map(lambda m: parse_metric(m).variant)))
    ]
    rows = rows.astype({"model": str, "benchmark": str, "metric": str})
    cache: dict[tuple[str, str, str], pd.Series] = {}

    def scores(model: str, benchmark: str, metric: str) -> pd.Series:
        key = (model, benchmark, metric)
        if key not in cache:
            if (model, benchmark) not in executions:
                raise ValueError(f"no executions for model {model!r}, benchmark {benchmark!r}")
            parsed = parse_metric(metric)
            cache[key] = per_task_scores(
                executions[(model, benchmark)], benchmark, parsed.variant, int(parsed.k)
            )
        return cache[key]

    values = rows.set_index(["model", "benchmark", "metric"])["value"]
    if values.index.has_duplicates:
        dup = values.index[values.index.duplicated()][0]
        raise ValueError(f"summary has several rows for model/benchmark/metric {dup}")
    out = []
    for pair in pairs:
        mine = rows[rows["model"] == pair.model]
        for benchmark, metric in zip(mine["benchmark"], mine["metric"], strict=True):
            if (pair.reference, benchmark, metric) not in values.index:
                continue
            a = scores(pair.model, benchmark, metric)
            b = scores(pair.reference, benchmark, metric)
            for model, series in ((pair.model, a), (pair.reference, b)):
                stated = float(values[(model, benchmark, metric)])
                if abs(series.mean() - stated) > tolerance:
                    raise ValueError(
                        f"{model} {benchmark} {metric}: summary says {stated:.6f} but the "
                        f"per-task pass@k of its executions average {series.mean():.6f}"
                    )
            common = a.index.intersection(b.index)
            if common.empty:
                raise ValueError(f"{pair.model} and {pair.reference} share no {benchmark} tasks")
            diff = (a[common] - b[common]).to_numpy()
            identity = (pair.model, pair.reference, benchmark, metric)
            ci = bootstrap_interval(
                a.to_numpy(), _rng(settings, pair.model, benchmark, metric), settings
            )
            rci = bootstrap_interval(
                b.to_numpy(), _rng(settings, pair.reference, benchmark, metric), settings
            )
            dci = bootstrap_interval(diff, _rng(settings, *identity), settings)
            value = float(values[(pair.model, benchmark, metric)])
            ref_value = float(values[(pair.reference, benchmark, metric)])
            out.append(
                {
                    "benchmark": benchmark,
                    "metric": metric,
                    "k": int(parse_metric(metric).k),
                    "model": pair.model,
                    "reference": pair.reference,
                    "value": value,
                    "ci_low": ci[0],
                    "ci_high": ci[1],
                    "reference_value": ref_value,
                    "reference_ci_low": rci[0],
                    "reference_ci_high": rci[1],
                    "delta": value - ref_value,
                    "delta_ci_low": dci[0],
                    "delta_ci_high": dci[1],
                    "n_tasks": int(a.size),
                    "n_paired_tasks": int(common.size),
                }
            )
    return pd.DataFrame(out, columns=COLUMNS)


def metric_label(benchmark: str, metric: str) -> str:
    parsed = parse_metric(metric)
    name = BENCHMARK_LABELS.get(benchmark, benchmark)
    variant = VARIANT_LABELS.get(parsed.variant, parsed.variant) if parsed.variant else ""
    return f"{name} {variant} pass@{parsed.k}".replace("  ", " ")


def wide_tables(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """reference -> wide table: one row per benchmark metric; the reference's value, then each
    model's value and its difference, each with its interval, in percent."""
    tables = {}
    for reference, part in table.groupby("reference", sort=False):
        keys = list(dict.fromkeys(zip(part["benchmark"], part["metric"], strict=True)))
        first = part.drop_duplicates(["benchmark", "metric"]).set_index(["benchmark", "metric"])
        wide = pd.DataFrame(index=pd.Index([metric_label(b, m) for b, m in keys], name="metric"))
        wide["tasks"] = [int(first.loc[key, "n_tasks"]) for key in keys]
        wide[str(reference)] = [
            _cell(*first.loc[key, ["reference_value", "reference_ci_low", "reference_ci_high"]])
            for key in keys
        ]
        for model, rows in part.groupby("model", sort=False):
            rows = rows.set_index(["benchmark", "metric"])
            wide[str(model)] = [
                _cell(*rows.loc[key, ["value", "ci_low", "ci_high"]]) if key in rows.index else ""
                for key in keys
            ]
            wide[f"Δ {model}"] = [
                _cell(*rows.loc[key, ["delta", "delta_ci_low", "delta_ci_high"]], sign=True)
                if key in rows.index
                else ""
                for key in keys
            ]
        tables[str(reference)] = wide
    return tables


def _cell(value: float, low: float, high: float, sign: bool = False) -> str:
    fmt = "{:+.1f}" if sign else "{:.1f}"
    return f"{fmt.format(100 * value)} [{fmt.format(100 * low)}, {fmt.format(100 * high)}]"


def _intro(settings: BootstrapSettings) -> str:
    return (
        f"pass@k in percent; [low, high] = {settings.confidence:.0%} percentile-bootstrap "
        f"interval over tasks ({settings.samples} resamples, seed {settings.seed}); "
        "Δ = model minus reference (percentage points), paired over shared tasks."
    )


def to_markdown(
    table: pd.DataFrame, settings: BootstrapSettings, warnings: Sequence[str] = ()
) -> str:
    """The comparison as Markdown: ``warnings`` first, then one table per reference model."""
    parts = ["# Model comparison", "", _intro(settings), ""]
    if warnings:
        parts += ["## Warnings", "", *(f"- {w}" for w in warnings), ""]
    if table.empty:
        parts.append("No model pairs share a pass@k metric.")
    for reference, wide in wide_tables(table).items():
        parts += [f"## Reference: {reference}", "", _markdown_table(wide), ""]
    return "\n".join(parts).rstrip() + "\n"


def _markdown_table(wide: pd.DataFrame) -> str:
    header = [wide.index.name, *wide.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] * len(header)) + "|"]
    for label, row in wide.iterrows():
        cells = [str(label), *(str(v) for v in row)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def to_html(table: pd.DataFrame, settings: BootstrapSettings, warnings: Sequence[str] = ()) -> str:
    """The comparison as a standalone HTML page (for the Snakemake report)."""
    body = ["<h1>Model comparison</h1>", f"<p>{html.escape(_intro(settings))}</p>"]
    if warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
        body.append(f"<h2>Warnings</h2><ul class='warnings'>{items}</ul>")
    if table.empty:
        body.append("<p>No model pairs share a pass@k metric.</p>")
    for reference, wide in wide_tables(table).items():
        body.append(f"<h2>Reference: {html.escape(reference)}</h2>")
        body.append(wide.to_html(escape=True, border=0, classes="comparison"))
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{padding:4px 10px;border-bottom:1px solid #ccc;text-align:right}"
        "th:first-child,td:first-child{text-align:left}"
    )
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Model comparison</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
