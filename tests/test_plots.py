"""The plots library: figures draw exactly the numbers of their input tables, and render."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.image import AxesImage

from attribution.plots.checkpoints import checkpoint_figure, checkpoint_table, human_count
from attribution.plots.finetune import before_after_figure, loss_curves_figure
from attribution.plots.metrics import (
    families_present,
    pass_at_k_figure,
    pass_at_k_table,
)
from attribution.plots.style import OKABE_ITO, escape_label, save_figure
from attribution.plots.trace import (
    SPAN_COLOR,
    activation_norms_figure,
    aie_figure,
    heatmap_grids,
    trace_heatmap_figure,
)

MODELS = ["tiny-olmo2", "tiny-llama", "tiny-olmo2-ft"]


def _row(model, benchmark, variant, stat, k, value, subset="all"):
    metric = "/".join(p for p in (variant, "pass@" + str(k) if stat == "pass@k" else stat) if p)
    return dict(
        model=model,
        benchmark=benchmark,
        metric=metric,
        variant=variant,
        stat=stat,
        k=k if stat == "pass@k" else None,
        subset=subset,
        value=value,
        n=5,
    )


def summary_frame() -> pd.DataFrame:
    """A summary in attribution.summary's long format with distinct, known values per row,
    including the rows the figures leave out (HumanEval+'s plain pass@k, a copy of plus;
    CRUXEval's execution_only block; non-pass@k scores)."""
    rows = []
    value = 0.01
    for model in MODELS:
        for k in (1, 2):
            metrics = [
                ("humanevalplus", "base"),
                ("humanevalplus", "plus"),
                ("cruxeval_o", ""),
                ("cruxeval_i", ""),
                ("apps", ""),
                ("apps", "introductory"),
                ("apps", "interview"),
                ("apps", "competition"),
            ]
            for benchmark, variant in metrics:
                rows.append(_row(model, benchmark, variant, "pass@k", k, value))
                value += 0.01
            plus = rows[-7]["value"]
            rows.append(_row(model, "humanevalplus", "", "pass@k", k, plus))
            for bench in ("cruxeval_o", "cruxeval_i"):
                rows.append(_row(model, bench, "execution_only", "pass@k", k, 0.99))
        for variant in ("", "introductory"):
            rows.append(_row(model, "apps", variant, "strict_accuracy", None, 0.5))
    frame = pd.DataFrame(rows)
    return frame.astype({"model": "string", "metric": "string", "k": "Int64"})


SHOWN = ~summary_frame()["metric"].str.contains("execution_only|strict") & ~(
    (summary_frame()["benchmark"] == "humanevalplus")
    & summary_frame()["metric"].str.startswith("pass@")
)


def bar_heights(ax) -> list[float]:
    return [p.get_height() for p in ax.patches]


def test_held_out_parts_replace_the_all_tasks_group():
    """Where the summary has train / held_out rows for a benchmark, its figure draws one group
    per part (the all-tasks row is left out), labelled and in that order."""
    summary = summary_frame()
    crux = summary[(summary["benchmark"] == "cruxeval_o") & (summary["variant"] == "")]
    parts = pd.concat(
        [crux.assign(subset="train", value=0.75), crux.assign(subset="held_out", value=0.0)]
    )
    table = pass_at_k_table(pd.concat([summary, parts]), "cruxeval", MODELS)
    assert list(dict.fromkeys(table["group"])) == [
        "CRUXEval-O\ntrained on",
        "CRUXEval-O\nheld out",
        "CRUXEval-I",
    ]
    o = table[table["benchmark"] == "cruxeval_o"]
    assert set(o["subset"]) == {"train", "held_out"} and len(o) == 2 * 2 * len(MODELS)
    assert set(o.loc[o["subset"] == "train", "value"]) == {0.75}
    assert set(table.loc[table["benchmark"] == "cruxeval_i", "subset"]) == {"all"}
    with pytest.raises(ValueError, match="missing column"):
        pass_at_k_table(summary.drop(columns="subset"), "cruxeval", MODELS)


@pytest.mark.parametrize("family", ["humanevalplus", "cruxeval", "apps"])
def test_pass_at_k_bars_are_the_summary_values(family):
    summary = summary_frame()
    table = pass_at_k_table(summary, family, MODELS)
    fig = pass_at_k_figure(summary, family, MODELS)
    axes = fig.axes
    assert [ax.get_title().split()[0] for ax in axes] == ["pass@1", "pass@2"]
    for ax, k in zip(axes, (1, 2), strict=True):
        sub = table[table["k"] == k]
        groups = list(dict.fromkeys(sub["group"]))
        # bars are drawn model by model, each over all groups
        expected = [
            100 * sub[(sub["model"] == m) & (sub["group"] == g)]["value"].item()
            for m in MODELS
            for g in groups
        ]
        assert bar_heights(ax) == pytest.approx(expected)
        # every expected value is a summary row of this family
        fam_rows = summary[SHOWN & (summary["k"] == k)]
        assert sorted(expected) == pytest.approx(
            sorted(100 * fam_rows[fam_rows["benchmark"].isin(sub["benchmark"])]["value"])
        )
        assert "n = 5 samples/task" in ax.get_title()
        assert [t.get_text() for t in ax.get_xticklabels()] == groups  # no tasks column here
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == MODELS
    colors = {to_hex(p.get_facecolor()) for p in axes[0].patches}
    assert colors == {c.lower() for c in OKABE_ITO[:3]}


def test_pass_at_k_ticks_count_tasks():
    summary = summary_frame()
    summary["tasks"] = np.where(summary["metric"].str.contains("introductory"), 4, 12)
    fig = pass_at_k_figure(summary, "apps", MODELS)
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks[0] == "introductory\n4 tasks" and ticks[-1] == "all difficulties\n12 tasks"


def test_pass_at_k_groups_and_order():
    table = pass_at_k_table(summary_frame(), "humanevalplus", MODELS)
    assert list(dict.fromkeys(table["group"])) == ["base tests", "base + plus tests"]
    apps = pass_at_k_table(summary_frame(), "apps", MODELS)
    assert list(dict.fromkeys(apps["group"])) == [
        "introductory",
        "interview",
        "competition",
        "all difficulties",
    ]
    crux = pass_at_k_table(summary_frame(), "cruxeval", ["tiny-llama"])
    assert list(dict.fromkeys(crux["model"]))[0] == "tiny-llama"  # preferred order first
    assert list(dict.fromkeys(crux["group"])) == ["CRUXEval-O", "CRUXEval-I"]


def test_pass_at_k_errors_name_the_problem():
    summary = summary_frame()
    with pytest.raises(ValueError, match="missing column.*'value'"):
        pass_at_k_table(summary.drop(columns="value"), "apps")
    with pytest.raises(ValueError, match="no pass@k rows for cruxeval"):
        pass_at_k_table(summary[summary["benchmark"] == "apps"], "cruxeval")
    with pytest.raises(ValueError, match="several rows for model=tiny-llama"):
        pass_at_k_table(pd.concat([summary, summary[summary["model"] == "tiny-llama"]]), "apps")
    assert families_present(summary[summary["benchmark"] != "apps"]) == [
        "humanevalplus",
        "cruxeval",
    ]


def test_files_are_valid_png_and_pdf(tmp_path):
    fig = pass_at_k_figure(summary_frame(), "apps", MODELS)
    png, pdf = save_figure(fig, [tmp_path / "f.png", tmp_path / "f.pdf"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert 10_000 < png.stat().st_size < 2_000_000
    assert 5_000 < pdf.stat().st_size < 2_000_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png"]  # no temp files left


def test_escape_label_keeps_mathtext_out():
    from matplotlib.text import Text

    label = escape_label(" $x$ + y\n", 40)
    assert label == "\u2423\\$x\\$\u2423+\u2423y\\n"
    # matplotlib would not parse it as math: the escaped dollars render as literal dollars
    assert Text(text=label)._preprocess_math(label)[1] is False
    assert escape_label("a" * 50, 10) == "a" * 9 + "\u2026"


def test_before_after_pairs_and_deltas():
    summary = summary_frame()
    fig = before_after_figure(summary, [("tiny-olmo2-ft", "tiny-olmo2")])
    (ax,) = fig.axes
    k1 = summary[SHOWN & (summary["k"] == 1)]
    before = k1[k1["model"] == "tiny-olmo2"]
    after = k1[k1["model"] == "tiny-olmo2-ft"]
    heights = bar_heights(ax)
    half = len(heights) // 2
    assert half == 8  # 2 HumanEval+ + 2 CRUXEval + 4 APPS groups at k=1
    assert sorted(heights[:half]) == pytest.approx(sorted(100 * before["value"]))
    assert sorted(heights[half:]) == pytest.approx(sorted(100 * after["value"]))
    deltas = [t.get_text() for t in ax.texts]
    expected = [f"{a - b:+.1f} pp" for b, a in zip(heights[:half], heights[half:], strict=True)]
    assert deltas == expected


def test_loss_curves_draw_the_history():
    history = pd.DataFrame(
        {
            "step": [0, 1, 2, 3, 4],
            "train_loss": [3.0, 2.5, 2.2, 2.0, 1.9],
            "eval_loss": [np.nan, np.nan, 2.4, np.nan, 2.1],
            "learning_rate": [1e-4, 8e-5, 6e-5, 4e-5, 2e-5],
        }
    )
    fig = loss_curves_figure({"tiny-olmo2-ft": history})
    loss_ax, lr_ax = fig.axes
    train, ev = loss_ax.get_lines()
    assert list(train.get_xdata()) == [0, 1, 2, 3, 4]
    assert list(train.get_ydata()) == [3.0, 2.5, 2.2, 2.0, 1.9]
    assert list(ev.get_xdata()) == [2, 4] and list(ev.get_ydata()) == [2.4, 2.1]
    assert "nats/token" in loss_ax.get_ylabel()
    assert list(lr_ax.get_lines()[0].get_ydata()) == list(history["learning_rate"])
    with pytest.raises(ValueError, match="history of x: missing column.*train_loss"):
        loss_curves_figure({"x": history.drop(columns="train_loss")})


def checkpoint_summary() -> pd.DataFrame:
    rows = []
    for i, step in enumerate([0, 1000, 5000]):
        model = f"olmo@stage1-step{step}-tokens{step * 4}B"
        for benchmark, variant in [("cruxeval_o", ""), ("humanevalplus", "plus")]:
            rows.append(_row(model, benchmark, variant, "pass@k", 1, 0.1 * (i + 1)))
    rows.append(_row("other", "cruxeval_o", "", "pass@k", 1, 0.9))
    return pd.DataFrame(rows)


def test_checkpoint_lines_from_revision_names():
    fig = checkpoint_figure(checkpoint_summary(), "olmo")
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert len(lines) == 2
    for line in lines:
        assert list(line.get_xdata()) == [0, 1000, 5000]
        assert list(line.get_ydata()) == pytest.approx([10, 20, 30])
    table = checkpoint_table(checkpoint_summary(), "olmo", x="tokens")
    assert sorted(set(table["x"])) == [0, 4000 * 1e9, 20000 * 1e9]
    assert human_count(4e12) == "4T" and human_count(1500) == "1.5K"
    with pytest.raises(ValueError, match="fewer than two revisions"):
        checkpoint_table(checkpoint_summary(), "other")


def trace_problem(n_tokens: int = 6, n_layers: int = 4, span: tuple[int, int] = (2, 4)):
    rows = []
    for kind in ("hidden", "mlp", "attn"):
        for layer in range(n_layers):
            for t in range(n_tokens):
                computed = t >= span[0]
                rows.append(
                    dict(
                        problem="sample_1",
                        kind=kind,
                        layer=layer,
                        token_index=t,
                        token_text=["def", " f", "($x", ")", ":", "\n"][t],
                        in_span=span[0] <= t < span[1],
                        score=0.2 + 0.01 * layer + 0.1 * t if computed else np.nan,
                        low=0.2,
                        high=0.9,
                        sigma=0.5,
                        seed=1,
                    )
                )
    return pd.DataFrame(rows)


def test_trace_heatmap_shows_scores_and_marks_the_span(tmp_path):
    problem = trace_problem()
    grids = heatmap_grids(problem)
    assert grids["hidden"].shape == (6, 4)
    assert grids["mlp"][3, 2] == pytest.approx(0.2 + 0.02 + 0.3)
    assert np.all(grids["attn"][:2] == 0.2)  # before the span: p = low exactly
    assert heatmap_grids(problem, value="ie")["hidden"][5, 1] == pytest.approx(0.01 + 0.5)
    fig = trace_heatmap_figure(problem, title="tiny: sample_1 $")
    images = [a for ax in fig.axes for a in ax.get_children() if isinstance(a, AxesImage)]
    assert len(images) == 3
    assert np.allclose(images[0].get_array().filled(np.nan), grids["hidden"])
    ticks = fig.axes[0].get_yticklabels()
    assert [t.get_text().endswith("*") for t in ticks] == [False, False, True, True, False, False]
    assert to_hex(ticks[2].get_color()) == SPAN_COLOR.lower()
    assert ticks[2].get_text() == "(\\$x *"
    # tokens long before the span are left out (their effect is exactly zero), and said so
    cropped = trace_heatmap_figure(problem, context=1)
    shown = [t.get_text() for t in cropped.axes[0].get_yticklabels()]
    assert shown == ["\u2423f", "(\\$x *", ") *", ":", "\\n"]
    image = next(a for a in cropped.axes[0].get_children() if isinstance(a, AxesImage))
    assert np.allclose(image.get_array().filled(np.nan), grids["hidden"][1:])
    assert "the 1 tokens before these are not shown" in cropped.get_suptitle()
    save_figure(fig, [tmp_path / "h.png", tmp_path / "h.pdf"])  # renders with $ in labels
    assert (tmp_path / "h.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="trace table: missing column.*in_span"):
        heatmap_grids(problem.drop(columns="in_span"))


def test_aie_and_norm_curves():
    summary = pd.DataFrame(
        [
            dict(kind=k, bucket=b, layer=i, aie=0.1 * i + (0.5 if b == "last_token" else 0))
            for k in ("hidden", "mlp")
            for b in ("before", "first_span", "last_token")
            for i in range(3)
        ]
    )
    fig = aie_figure(summary, "tiny")
    assert len(fig.axes) == 2
    first, last = fig.axes[0].get_lines()[:2]  # "before" (always 0) is not drawn
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "first corrupted token",
        "last token",
    ]
    assert list(first.get_ydata()) == pytest.approx([0.0, 0.1, 0.2])
    assert list(last.get_ydata()) == pytest.approx([0.5, 0.6, 0.7])
    norms = {
        m: pd.DataFrame([dict(kind="hidden", layer=i, mean_norm=(i + 1) * s) for i in range(4)])
        for m, s in (("a", 1.0), ("b", 3.0))
    }
    fig = activation_norms_figure(norms)
    a_line, b_line = fig.axes[0].get_lines()
    assert list(b_line.get_ydata()) == pytest.approx([3, 6, 9, 12])
    assert fig.axes[0].get_yscale() == "log"
    # a traced model that answered no problem has an empty table: left out, colours kept
    empty = pd.DataFrame({"kind": [], "layer": [], "mean_norm": []})
    fig = activation_norms_figure({"a": norms["a"], "none": empty, "b": norms["b"]})
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["a", "b"]
    assert to_hex(lines[1].get_color()) == OKABE_ITO[2].lower()
    with pytest.raises(ValueError, match="every model's activation-norm table is empty"):
        activation_norms_figure({"none": empty})


def test_figure_targets_follow_the_config():
    from attribution.config import expand_models
    from attribution.plots.targets import (
        check_figures_config,
        checkpoint_entries,
        figure_names,
        figure_paths,
    )

    config = {
        "benchmarks": {"cruxeval_o": {}, "apps": {}},
        "models": {
            "tiny": {"build": {"arch": "llama"}},
            "olmo": {"hub": "allenai/OLMo", "revisions": ["stage1-step10", "stage1-step20"]},
            "one": {"hub": "x/y", "revisions": ["stage1-step10", "main"]},
        },
    }
    models = expand_models(config)
    assert checkpoint_entries(models) == ["olmo"]
    names = figure_names(config, models, list(config["benchmarks"]))
    assert names == ["pass_at_k_cruxeval", "pass_at_k_apps", "checkpoints_olmo"]  # no fine-tune
    config["models"]["tiny-ft"] = {"finetune": {"base": "tiny"}}
    models = expand_models(config)
    names = figure_names(config, models, list(config["benchmarks"]))
    assert names[2:] == ["finetune_before_after", "finetune_loss", "checkpoints_olmo"]
    assert figure_paths(["a"]) == ["results/figures/a.png", "results/figures/a.pdf"]
    config["figures"] = {"reference_model": "olmo@stage1-step10"}
    check_figures_config(config, models)
    config["figures"] = {"reference_model": "olmo"}  # an entry with revisions: no single model
    with pytest.raises(ValueError, match="figures.reference_model: unknown model 'olmo'"):
        check_figures_config(config, models)
    config["figures"] = {"comparisons": [{"model": "tiny-ft", "reference": "nope"}]}
    with pytest.raises(ValueError, match=r"figures.comparisons\[0\].reference: unknown model"):
        check_figures_config(config, models)


def test_trace_figures_follow_the_selection(tmp_path):
    from attribution.plots.targets import trace_figure_paths

    chosen, empty = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pd.DataFrame({"task_id": ["sample_3", "sample_7", "sample_9"]}).to_parquet(chosen)
    pd.DataFrame({"task_id": pd.Series([], dtype=str)}).to_parquet(empty)
    paths = trace_figure_paths({"tiny": chosen, "none": empty}, 2)
    assert paths == [
        f"results/figures/{name}.{ext}"
        for name in (
            "trace/tiny/sample_3",
            "trace/tiny/sample_7",
            "trace_aie_tiny",
            "activation_norms",
        )
        for ext in ("png", "pdf")
    ]
    assert trace_figure_paths({"none": empty}, 2) == []  # a model that answered nothing
