"""Fine-tuning figures: each benchmark before vs after fine-tuning, and training loss curves."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from attribution.plots.metrics import FAMILIES, pass_at_k_table
from attribution.plots.style import color_for, new_figure, plain_label

HISTORY_COLUMNS = ("step", "train_loss")


def headline_table(metrics: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame:
    """pass@k at the smallest k of each benchmark group for ``models`` (model, group, k, value)."""
    parts = []
    for family in FAMILIES:
        sub = metrics[metrics["benchmark"].isin(FAMILIES[family]) & metrics["model"].isin(models)]
        if sub.empty or not (sub["stat"] == "pass@k").any():
            continue
        table = pass_at_k_table(sub, family, models)
        table = table[table["k"] == table["k"].min()]
        parts.append(table.assign(group=table["label"]))
    if not parts:
        raise ValueError(f"summary has no pass@k rows for models {list(models)}")
    return pd.concat(parts, ignore_index=True)


def before_after_figure(metrics: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> Figure:
    """Paired bars per benchmark: the base model next to its fine-tuned model, one panel per pair.

    ``pairs`` holds ``(fine_tuned, base)`` model names. The change in percentage points is
    written above each pair.
    """
    if not pairs:
        raise ValueError("before_after_figure: no (fine-tuned, base) pairs given")
    tables = [headline_table(metrics, [base, tuned]) for tuned, base in pairs]
    n_groups = max(t["group"].nunique() for t in tables)
    fig = new_figure(figsize=(max(6.0, 1.5 + 1.25 * n_groups), 3.8 * len(pairs)))
    axes = fig.subplots(len(pairs), 1, squeeze=False)[:, 0]
    for ax, (tuned, base), table in zip(axes, pairs, tables, strict=True):
        missing = {base, tuned} - set(table["model"])
        if missing:
            raise ValueError(f"summary has no pass@k rows for model(s) {sorted(missing)}")
        wide = table.pivot_table(index=["group", "k"], columns="model", values="value", sort=False)
        labels = [f"{wrap_label(g)}\n(pass@{k})" for g, k in wide.index]
        x = np.arange(len(wide))
        for i, (model, role) in enumerate(((base, "before"), (tuned, "after"))):
            ax.bar(
                x + (i - 0.5) * 0.38,
                100.0 * wide[model].to_numpy(),
                0.38,
                color=color_for(i),
                label=f"{role}: {plain_label(model)}",
            )
        delta = 100.0 * (wide[tuned] - wide[base]).to_numpy()
        tops = 100.0 * np.fmax(wide[tuned].to_numpy(), wide[base].to_numpy())
        for xi, d, top in zip(x, delta, tops, strict=True):
            if np.isfinite(d):
                ax.annotate(
                    f"{d:+.1f} pp",
                    (xi, top),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
        top = np.nanmax(tops) if np.isfinite(tops).any() else 0.0
        ax.set_ylim(0, min(100.0, max(10.0, top * 1.25)))
        ax.set_xticks(x, labels)
        ax.set_ylabel("pass@k (% of tasks)")
        ax.set_title(f"{plain_label(tuned)} vs its base {plain_label(base)}")
        ax.grid(axis="x", visible=False)
        ax.legend(loc="upper right", frameon=False)
    fig.suptitle("Before vs after fine-tuning (change in percentage points)")
    return fig


def wrap_label(label: str, width: int = 14) -> str:
    """Benchmark name on the first line, the rest (variant, then the subset on a line of its
    own) wrapped below: narrow tick labels."""
    first, *more = label.split("\n")
    head, _, rest = first.partition(" ")
    lines = [head, *textwrap.wrap(rest, width)]
    for line in more:
        lines += textwrap.wrap(line, width)
    return "\n".join(lines)


def check_history(history: pd.DataFrame, source: str) -> None:
    missing = [c for c in HISTORY_COLUMNS if c not in history.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; has {list(history.columns)}")
    if history.empty:
        raise ValueError(f"{source}: no rows (was the fine-tuning run empty?)")


def loss_curves_figure(histories: Mapping[str, pd.DataFrame]) -> Figure:
    """Training (solid) and evaluation (dashed, markers) loss against the optimizer step.

    One colour per fine-tuned model; a second panel shows the learning-rate schedule when the
    histories record it.
    """
    if not histories:
        raise ValueError("loss_curves_figure: no histories given")
    for name, history in histories.items():
        check_history(history, f"history of {name}")
    has_lr = all("learning_rate" in h.columns for h in histories.values())
    fig = new_figure(figsize=(9.0 if has_lr else 6.0, 3.8))
    axes = fig.subplots(1, 2 if has_lr else 1, squeeze=False)[0]
    ax = axes[0]
    for i, (name, history) in enumerate(histories.items()):
        h = history.sort_values("step")
        label = plain_label(name)
        train = h.dropna(subset=["train_loss"])
        ax.plot(train["step"], train["train_loss"], color=color_for(i), label=f"{label} train")
        if "eval_loss" in h.columns and h["eval_loss"].notna().any():
            ev = h.dropna(subset=["eval_loss"])
            ax.plot(
                ev["step"],
                ev["eval_loss"],
                "--o",
                color=color_for(i),
                markersize=3,
                label=f"{label} eval",
            )
    ax.set_xlabel("optimizer step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title("Fine-tuning loss")
    ax.legend(frameon=False)
    if has_lr:
        lr_ax = axes[1]
        for i, (name, history) in enumerate(histories.items()):
            h = history.sort_values("step").dropna(subset=["learning_rate"])
            lr_ax.plot(
                h["step"],
                h["learning_rate"],
                color=color_for(i),
                label=plain_label(name),
            )
        lr_ax.set_xlabel("optimizer step")
        lr_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        lr_ax.set_ylabel("learning rate")
        lr_ax.set_title("Learning-rate schedule")
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    return fig
