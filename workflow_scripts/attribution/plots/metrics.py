"""pass@k per model x benchmark: grouped bars read from results/summary/metrics.parquet.

pass@k is the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained
on Code", section 2.1), computed by the scoring stage; this module only reads and draws it.
One figure per benchmark family: HumanEval+ (base and plus tests side by side), CRUXEval (-O and
-I side by side), APPS (one group per difficulty). A benchmark whose dataset has a held-out part
(summary ``subset`` rows ``train`` / ``held_out``) gets one group per part instead of one for all
tasks, so what the models trained on and what they did not are told apart.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from attribution.data.splits import ALL, PARTS
from attribution.plots.style import (
    color_for,
    figure_legend,
    hatch_for,
    new_figure,
    ordered,
    plain_label,
)

FAMILIES: dict[str, tuple[str, ...]] = {
    "humanevalplus": ("humanevalplus",),
    "cruxeval": ("cruxeval_o", "cruxeval_i"),
    "apps": ("apps",),
}
BENCHMARK_LABELS = {
    "humanevalplus": "HumanEval+",
    "cruxeval_o": "CRUXEval-O",
    "cruxeval_i": "CRUXEval-I",
    "apps": "APPS",
}
VARIANT_LABELS = {
    "base": "base tests",
    "plus": "base + plus tests",
    "introductory": "introductory",
    "interview": "interview",
    "competition": "competition",
    "": "all tasks",
    "unknown_difficulty": "difficulty not recorded",
}
# attribution.summary's name for APPS rows without a difficulty
UNRECORDED = "unknown_difficulty"
ALL_LABELS = {"apps": "all difficulties"}
VARIANT_ORDER = ("base", "plus", "introductory", "interview", "competition", UNRECORDED, "")
SUBSET_ORDER = (ALL, *PARTS)
SUBSET_LABELS = {ALL: "", "train": "trained on", "held_out": "held out"}
# Columns of the summary's long format a figure reads (see attribution.summary).
SUMMARY_COLUMNS = ("model", "benchmark", "metric", "variant", "stat", "k", "subset", "value")


def headline_rows(rows: pd.DataFrame) -> pd.Series:
    """Which pass@k rows are a benchmark's headline numbers: the plain score, HumanEval+ base
    and plus tests, APPS per difficulty; not the secondary blocks (e.g. CRUXEval's
    ``execution_only``) nor HumanEval+'s plain ``pass@k``, a copy of ``plus`` when that exists.
    ``rows`` needs columns benchmark and variant."""
    keep = rows["variant"].isin(VARIANT_ORDER)
    has_plus = set(rows.loc[rows["variant"] == "plus", "benchmark"])
    copy_of_plus = rows["benchmark"].isin(has_plus) & (rows["variant"] == "")
    return keep & ~copy_of_plus


def check_summary(metrics: pd.DataFrame, source: str = "metrics table") -> None:
    """Raise naming the missing columns when ``metrics`` is not the summary's long format."""
    missing = [c for c in SUMMARY_COLUMNS if c not in metrics.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; has {list(metrics.columns)}")


def families_present(metrics: pd.DataFrame) -> list[str]:
    """Benchmark families with at least one pass@k row in the summary."""
    present = set(metrics.loc[metrics["stat"] == "pass@k", "benchmark"])
    return [f for f, benches in FAMILIES.items() if present.intersection(benches)]


def pass_at_k_table(
    metrics: pd.DataFrame, family: str, models: Sequence[str] | None = None
) -> pd.DataFrame:
    """The rows a pass@k figure draws: model, benchmark, variant, subset, group, label, k,
    value, n, tasks (see :func:`split_subsets` for which subsets).

    ``group`` is the x-axis label within the family's figure, ``label`` the same with the
    benchmark named (for figures mixing families); rows come in plotting order.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown benchmark family {family!r} (known: {list(FAMILIES)})")
    check_summary(metrics)
    rows = metrics[metrics["benchmark"].isin(FAMILIES[family])]
    rows = rows[rows["stat"] == "pass@k"]
    rows = split_subsets(rows[headline_rows(rows)]).copy()
    if rows.empty:
        raise ValueError(f"no pass@k rows for {family} ({'/'.join(FAMILIES[family])}) in summary")
    for column in ("n", "tasks"):  # samples per task; tasks scored (optional columns)
        if column not in rows:
            rows[column] = np.nan
    rows["k"] = rows["k"].astype(int)
    rows["variant"] = rows["variant"].astype(str)
    rows["subset"] = rows["subset"].astype(str)
    multi = len(FAMILIES[family]) > 1
    keys = list(zip(rows["benchmark"], rows["variant"], rows["subset"], strict=True))
    rows["group"] = [_group_label(bench, variant, multi, sub) for bench, variant, sub in keys]
    rows["label"] = [_group_label(bench, variant, True, sub) for bench, variant, sub in keys]
    bench_rank = {b: i for i, b in enumerate(FAMILIES[family])}
    variant_rank = {v: i for i, v in enumerate(VARIANT_ORDER)}
    subset_rank = {v: i for i, v in enumerate(SUBSET_ORDER)}
    model_order = ordered(rows["model"], models)
    model_rank = {m: i for i, m in enumerate(model_order)}
    rows["_order"] = [
        (bench_rank[b], variant_rank.get(v, len(VARIANT_ORDER)), v, subset_rank[s], model_rank[m])
        for b, v, s, m in zip(
            rows["benchmark"], rows["variant"], rows["subset"], rows["model"], strict=True
        )
    ]
    rows = rows.sort_values(["k", "_order"], kind="stable")
    dupes = rows.duplicated(["model", "benchmark", "variant", "subset", "k"], keep=False)
    if dupes.any():
        first = rows[dupes].iloc[0]
        raise ValueError(
            f"summary has several rows for model={first['model']} benchmark={first['benchmark']} "
            f"metric={first['metric']} subset={first['subset']}"
        )
    cols = ["model", "benchmark", "variant", "subset", "group", "label", "k", "value", "n", "tasks"]
    return rows[cols].reset_index(drop=True)


def split_subsets(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (model, benchmark, variant, k): the ``train`` and ``held_out`` rows where the summary
    has them, else the ``all`` row."""
    key = ["model", "benchmark", "variant", "k"]
    parts = rows[rows["subset"].isin(PARTS)]
    split = set(map(tuple, parts[key].astype(str).to_numpy()))
    whole = rows[rows["subset"] == ALL]
    whole = whole[[tuple(r) not in split for r in whole[key].astype(str).to_numpy()]]
    return pd.concat([whole, parts]).sort_index(kind="stable")


def _group_label(benchmark: str, variant: str, multi: bool, subset: str = ALL) -> str:
    label = VARIANT_LABELS.get(variant, variant)
    if not variant:
        if multi:
            text = BENCHMARK_LABELS.get(benchmark, benchmark) + (
                f" {ALL_LABELS[benchmark]}" if benchmark in ALL_LABELS else ""
            )
        else:
            text = ALL_LABELS.get(benchmark, BENCHMARK_LABELS.get(benchmark, benchmark))
    else:
        text = f"{BENCHMARK_LABELS.get(benchmark, benchmark)} {label}" if multi else label
    part = SUBSET_LABELS.get(subset, subset)
    return f"{text}\n{part}" if part else text


def pass_at_k_figure(
    metrics: pd.DataFrame, family: str, models: Sequence[str] | None = None
) -> Figure:
    """Grouped bars: one panel per k, one bar group per benchmark/variant, one bar per model.

    Bar heights are pass@k in percent, written above each bar while they fit; the panel title
    carries the number of samples per task (``n``) the estimate used (per group when it differs).
    """
    table = pass_at_k_table(metrics, family, models)
    model_order = ordered(table["model"], models)
    ks = sorted(table["k"].unique())
    groups = list(dict.fromkeys(table["group"]))
    width = 0.8 / len(model_order)
    fig = new_figure(
        figsize=(max(5.5, 1.2 + len(groups) * (0.35 + 0.22 * len(model_order))) * len(ks), 3.8)
    )
    axes = fig.subplots(1, len(ks), sharey=True, squeeze=False)[0]
    for ax, k in zip(axes, ks, strict=True):
        sub = table[table["k"] == k]
        x = np.arange(len(groups))
        for i, model in enumerate(model_order):
            vals = sub[sub["model"] == model].set_index("group")["value"]
            heights = [100.0 * vals.get(g, np.nan) for g in groups]
            bars = ax.bar(
                x + (i - (len(model_order) - 1) / 2) * width,
                heights,
                width,
                label=plain_label(model),
                color=color_for(i),
                hatch=hatch_for(i),
                edgecolor="white" if not hatch_for(i) else "0.2",
                linewidth=0.5,
            )
            if len(groups) * len(model_order) <= 16:
                ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
        ns = sorted({int(v) for v in sub["n"].dropna()})
        per_group = len(ns) > 1
        ax.set_xticks(x, [_tick(g, sub[sub["group"] == g], per_group) for g in groups])
        top = float(np.nanmax(sub["value"])) * 100 if sub["value"].notna().any() else 0.0
        ax.set_ylim(0, min(100.0, max(10.0, top * 1.2)))
        per_task = f"  (n = {ns[0]} sample{'s' if ns[0] != 1 else ''}/task)" if len(ns) == 1 else ""
        ax.set_title(f"pass@{k}{per_task}")
        ax.grid(axis="x", visible=False)
    axes[0].set_ylabel("pass@k (% of tasks)")
    title = " / ".join(
        BENCHMARK_LABELS[b] for b in FAMILIES[family] if b in set(table["benchmark"])
    )
    fig.suptitle(f"{title}: pass@k per model")
    figure_legend(fig, *axes[0].get_legend_handles_labels(), title="model")
    return fig


def _span(values: pd.Series) -> str:
    found = sorted({int(v) for v in values.dropna()})
    if not found:
        return ""
    return str(found[0]) if len(found) == 1 else f"{found[0]}-{found[-1]}"


def _tick(group: str, rows: pd.DataFrame, with_n: bool) -> str:
    """Group label, the number of tasks it averages over, and n when it differs by group."""
    lines = [group]
    tasks = _span(rows["tasks"])
    if tasks:
        lines.append(f"{tasks} task{'' if tasks == '1' else 's'}")
    if with_n and _span(rows["n"]):
        lines.append(f"n={_span(rows['n'])}")
    return "\n".join(lines)
