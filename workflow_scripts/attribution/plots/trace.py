"""Causal-tracing figures (Meng et al. 2022, "Locating and Editing Factual Associations in GPT",
ROME, section 2.1 and figure 1): per-problem heatmaps, average indirect effect curves, norms.

A problem's trace table has one row per (kind, layer, token): ``score`` is p(answer) when the
state of that kind at that layer and token is restored into the corrupted run; ``low`` is p in
the corrupted run, ``high`` in the clean run. The indirect effect (IE) of a state is
``score - low``; the average indirect effect (AIE) is its mean over problems.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogFormatter, MaxNLocator

from attribution.plots.style import (
    KIND_CMAPS,
    KIND_LABELS,
    color_for,
    escape_label,
    figure_legend,
    new_figure,
    plain_label,
)

KIND_ORDER = ("hidden", "mlp", "attn")
PROBLEM_COLUMNS = ("kind", "layer", "token_index", "token_text", "in_span", "score", "low", "high")
SHORT_KIND_LABELS = {"hidden": "hidden state", "mlp": "MLP", "attn": "attention"}
SPAN_COLOR = "#D55E00"  # vermillion: the corrupted tokens' labels
VALUE_LABELS = {
    "p": "p(answer), state restored",
    "ie": "indirect effect (Δ p)",
}


def _require(frame: pd.DataFrame, columns: Sequence[str], source: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; has {list(frame.columns)}")
    if frame.empty:
        raise ValueError(f"{source}: no rows")


def heatmap_grids(problem: pd.DataFrame, value: str = "p") -> dict[str, np.ndarray]:
    """kind -> array [token, layer] of p (or IE when ``value='ie'``); NaN where not computed."""
    if value not in VALUE_LABELS:
        raise ValueError(f"value must be one of {list(VALUE_LABELS)}, got {value!r}")
    _require(problem, PROBLEM_COLUMNS, "trace table")
    n_tokens = int(problem["token_index"].max()) + 1
    n_layers = int(problem["layer"].max()) + 1
    in_span = problem.loc[problem["in_span"].astype(bool), "token_index"]
    span_start = int(in_span.min()) if not in_span.empty else 0
    low = 0.0 if value == "ie" else float(problem["low"].iloc[0])
    grids = {}
    for kind in [k for k in KIND_ORDER if k in set(problem["kind"])]:
        sub = problem[problem["kind"] == kind]
        grid = np.full((n_tokens, n_layers), np.nan)
        scores = sub["score"].to_numpy(float)
        if value == "ie":
            scores = scores - sub["low"].to_numpy(float)
        grid[sub["token_index"].to_numpy(int), sub["layer"].to_numpy(int)] = scores
        # States before the corrupted span are the same in the clean and corrupted runs (the
        # noise enters at the span, attention is causal), so restoring them gives p = low
        # exactly; a trace may leave those cells out and they are filled here.
        before = np.arange(n_tokens) < span_start
        grid[before] = np.where(np.isnan(grid[before]), low, grid[before])
        grids[kind] = grid
    return grids


def _tokens(problem: pd.DataFrame) -> tuple[list[str], list[bool]]:
    tokens = problem.drop_duplicates("token_index").sort_values("token_index")
    full = pd.RangeIndex(int(tokens["token_index"].max()) + 1)
    tokens = tokens.set_index("token_index").reindex(full)
    texts = [str(t) if isinstance(t, str) else "" for t in tokens["token_text"]]
    spans = [bool(s) if pd.notna(s) else False for s in tokens["in_span"]]
    return texts, spans


def trace_heatmap_figure(
    problem: pd.DataFrame, title: str = "", value: str = "p", context: int = 6
) -> Figure:
    """ROME-style heatmaps, one panel per kind: tokens on y (corrupted span marked ``*`` and
    coloured), layers on x, colour = p(answer) (or IE) with a labelled colour bar on which the
    corrupted (low) and clean (high) p are drawn as lines.

    Tokens more than ``context`` before the corrupted span are not drawn (their effect is
    exactly zero: see :func:`heatmap_grids`); the y label says how many were left out. CRUXEval
    prompts carry long few-shot examples, which would otherwise fill the figure.
    """
    grids = heatmap_grids(problem, value)
    texts, spans = _tokens(problem)
    low = float(problem["low"].iloc[0])
    high = float(problem["high"].iloc[0])
    n_tokens, n_layers = next(iter(grids.values())).shape
    first = max(0, (spans.index(True) if any(spans) else 0) - context)
    shown = range(first, n_tokens)
    labels = [escape_label(texts[t], 18) + (" *" if spans[t] else "") for t in shown]
    height = max(3.6, 2.0 + 0.17 * len(shown))
    width = 2.2 + len(grids) * max(2.8, 0.18 * n_layers + 1.8)
    fig = new_figure(figsize=(width, height))
    axes = fig.subplots(1, len(grids), sharey=True, squeeze=False)[0]
    ref = (low, high) if value == "p" else (0.0, high - low)
    for ax, (kind, grid) in zip(axes, grids.items(), strict=True):
        part = grid[first:]
        finite = part[np.isfinite(part)]
        vmin = float(min(finite.min(), *ref)) if finite.size else min(ref)
        vmax = float(max(finite.max(), *ref)) if finite.size else max(ref)
        image = ax.imshow(
            np.ma.masked_invalid(part),
            cmap=KIND_CMAPS[kind],
            vmin=vmin,
            vmax=vmax if vmax > vmin else vmin + 1e-9,
            aspect="auto",
            interpolation="nearest",
            extent=(-0.5, n_layers - 0.5, n_tokens - 0.5, first - 0.5),
        )
        ax.set_facecolor("0.85")  # cells the trace did not compute
        ax.set_title(f"restored: {SHORT_KIND_LABELS[kind]}")
        ax.set_xlabel("layer" if kind == "hidden" else "layer (window centre)")
        ax.set_xticks(_layer_ticks(n_layers))
        ax.grid(False)
        bar = fig.colorbar(image, ax=ax, fraction=0.12, shrink=min(1.0, 8.0 / height), pad=0.03)
        bar.set_label(VALUE_LABELS[value], fontsize=8)
        bar.formatter = FuncFormatter(_tick_format(vmax - vmin))
        bar.update_ticks()
        for level, name in ((ref[0], "corrupted"), (ref[1], "clean")):  # marks on the bar
            if vmin <= level <= vmax:
                style = "-" if name == "clean" else ":"
                bar.ax.axhline(level, color="black", linewidth=1.5, linestyle=style)
    axes[0].set_yticks(list(shown), labels, fontsize=7)
    for tick, t in zip(axes[0].get_yticklabels(), shown, strict=True):
        if spans[t]:
            tick.set_color(SPAN_COLOR)
            tick.set_fontweight("bold")
    axes[0].set_ylabel("input token (* = corrupted)")
    lines = []
    if "target_text" in problem.columns:
        lines.append(f"answer token: {escape_label(str(problem['target_text'].iloc[0]), 24)}")
    if value == "p":
        lines.append(
            f"p(answer): clean {high:.3g} (solid line on the colour bars), corrupted {low:.3g} "
            f"(dotted); total effect {high - low:.3g}"
        )
    else:
        lines.append(
            f"p(answer): clean {high:.3g}, corrupted {low:.3g}; total effect {high - low:.3g} "
            "(solid line on the colour bars)"
        )
    if first:
        lines.append(
            f"the {first} tokens before these are not shown (restoring them has no effect)"
        )
    heading = "\n".join(lines)
    title = plain_label(title, 100)
    fig.suptitle(f"{title}\n{heading}" if title else heading)
    return fig


def _tick_format(span: float):
    """Colour-bar tick text with enough decimals to tell ticks within ``span`` apart."""
    decimals = 3 if span <= 0 else min(12, max(3, int(np.ceil(-np.log10(span))) + 1))
    return lambda v, _pos: f"{v:.{decimals}f}"


def _layer_ticks(n_layers: int) -> list[int]:
    step = max(1, int(np.ceil(n_layers / 8)))
    return list(range(0, n_layers, step))


# ROME's token groups (attribution.tracing.frames.BUCKETS) as a reader names them.
BUCKET_LABELS = {
    "first_span": "first corrupted token",
    "middle_span": "middle corrupted tokens",
    "last_span": "last corrupted token",
    "first_after": "first token after the span",
    "further": "further tokens",
    "last_token": "last token",
}
SUMMARY_COLUMNS = ("kind", "bucket", "layer", "aie")
NORM_COLUMNS = ("kind", "layer", "mean_norm")


def aie_figure(summary: pd.DataFrame, model: str = "") -> Figure:
    """Average indirect effect against layer, one line per token bucket (shaded: +- one
    standard error over problems), one panel per kind. The ``before`` bucket is left out: its
    effect is exactly zero (see :mod:`attribution.tracing.frames`)."""
    _require(summary, SUMMARY_COLUMNS, "trace summary")
    kinds = [k for k in KIND_ORDER if k in set(summary["kind"])]
    present = set(summary["bucket"])
    buckets = [b for b in BUCKET_LABELS if b in present]
    buckets += [
        b for b in dict.fromkeys(summary["bucket"]) if b not in BUCKET_LABELS and b != "before"
    ]
    fig = new_figure(figsize=(3.6 * len(kinds) + 2.6, 3.8))
    axes = fig.subplots(1, len(kinds), sharey=True, squeeze=False)[0]
    for ax, kind in zip(axes, kinds, strict=True):
        sub = summary[summary["kind"] == kind]
        for i, bucket in enumerate(buckets):
            line = sub[sub["bucket"] == bucket].sort_values("layer")
            if line.empty:
                continue
            ax.plot(
                line["layer"],
                line["aie"],
                color=color_for(i),
                marker="o",
                markersize=3,
                label=BUCKET_LABELS.get(bucket, plain_label(str(bucket))),
            )
            if "aie_sem" in line.columns and line["aie_sem"].notna().any():
                sem = line["aie_sem"].fillna(0.0)
                ax.fill_between(
                    line["layer"],
                    line["aie"] - sem,
                    line["aie"] + sem,
                    color=color_for(i),
                    alpha=0.15,
                    linewidth=0,
                )
        ax.axhline(0, color="0.4", linewidth=0.8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"restoring {KIND_LABELS[kind]}")
        ax.set_xlabel("layer" if kind == "hidden" else "layer (centre of the restored window)")
    axes[0].set_ylabel("average indirect effect (Δ p(answer))")
    figure_legend(fig, *axes[0].get_legend_handles_labels(), title="token bucket")
    n = ""
    if "n_problems" in summary:
        count = int(summary["n_problems"].max())
        n = f" over {count} problem{'s' if count != 1 else ''}"
    model = plain_label(model, 60)
    has_sem = "aie_sem" in summary and summary["aie_sem"].notna().any()
    band = "; shaded: ±1 standard error" if has_sem else ""
    fig.suptitle(f"{model}: average indirect effect by layer{n}{band}".lstrip(": "))
    return fig


def activation_norms_figure(norms: Mapping[str, pd.DataFrame]) -> Figure:
    """Mean L2 norm per token of each kind's output per layer (averaged over the traced
    prompts), one line per model, one panel per kind; the residual-stream panel starts at the
    embedding output (layer -1) and shows the corruption noise's norm dashed. A model whose table
    is empty (it answered no selected problem, so the trace stage wrote no rows) is left out."""
    if not norms:
        raise ValueError("activation_norms_figure: no models given")
    colors = {model: color_for(i) for i, model in enumerate(norms)}  # stable per config order
    norms = {model: frame for model, frame in norms.items() if not frame.empty}
    if not norms:
        raise ValueError("activation_norms_figure: every model's activation-norm table is empty")
    for model, frame in norms.items():
        _require(frame, NORM_COLUMNS, f"activation norms of {model}")
    kinds = [k for k in KIND_ORDER if any(k in set(f["kind"]) for f in norms.values())]
    fig = new_figure(figsize=(3.6 * len(kinds) + 2.6, 3.8))
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    for ax, kind in zip(axes, kinds, strict=True):
        for model, frame in norms.items():
            wanted = ("embed", kind) if kind == "hidden" else (kind,)
            line = frame[frame["kind"].isin(wanted)].groupby("layer")["mean_norm"].mean()
            ax.plot(
                line.index,
                line.to_numpy(),
                color=colors[model],
                marker="o",
                markersize=3,
                label=plain_label(model),
            )
            if kind == "hidden" and "noise_norm" in frame and frame["noise_norm"].notna().any():
                ax.axhline(
                    float(frame["noise_norm"].dropna().iloc[0]),
                    color=colors[model],
                    linestyle="--",
                    linewidth=1,
                )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(KIND_LABELS[kind])
        ax.set_xlabel("layer (-1 = embedding output)" if kind == "hidden" else "layer")
        ax.set_ylabel("mean L2 norm per token")
        ax.set_yscale("log")
        # plain numbers (0.2, 3) rather than 3x10^0; minor ticks labelled only on short ranges
        ax.yaxis.set_major_formatter(LogFormatter())
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.5)))
    handles, labels = axes[0].get_legend_handles_labels()
    if "hidden" in kinds:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color="0.3", linestyle="--"))
        labels.append("noise norm (corruption)")
    figure_legend(fig, handles, labels, title="model")
    fig.suptitle("Activation norms per layer (clean run, traced prompts)")
    return fig
