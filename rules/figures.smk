# Stage: figures and comparison tables -> results/figures/{name}.png|pdf, results/summary/comparison.*
# Each figure is a file target of its own (`snakemake results/figures/<name>.pdf`); `figures`
# builds every figure this config has data for, and `all` includes it.
# Library: workflow_scripts/attribution/plots/ and attribution/comparison.py.
from attribution.plots.targets import (  # noqa: E402
    check_figures_config,
    comparison_pairs_from_config,
    figure_families,
    figure_names,
    figure_paths,
    finetune_pairs,
    trace_figure_paths,
)

try:
    check_figures_config(config, MODELS)
except ConfigError as exc:
    raise WorkflowError(f"invalid config: {exc}") from None

FIGURES = config.get("figures", {})
SUMMARY = "results/summary/metrics.parquet"
FINETUNE_PAIRS = finetune_pairs(config, MODELS)
# Models the trace stage runs (rules/trace.smk).
TRACED = TRACE_MODELS
MAX_HEATMAPS = FIGURES.get("max_trace_heatmaps", 6)
STAGE_TARGETS.append(lambda: ["results/figures/index.tsv"])


wildcard_constraints:
    family="|".join(figure_families(["humanevalplus", "cruxeval_o", "cruxeval_i", "apps"])),
    entry="[A-Za-z0-9][A-Za-z0-9._-]*",
    problem="[^/]+",


rule figures:
    input:
        figures=figure_paths(figure_names(config, MODELS, BENCHMARKS)),
        comparison=expand("results/summary/comparison.{ext}", ext=("parquet", "md", "html")),
        # Trace figures exist only for the problems select_trace_problems (a checkpoint) chose.
        trace=lambda wc: trace_figure_paths(
            {m: checkpoints.select_trace_problems.get(model=m).output[0] for m in TRACED},
            MAX_HEATMAPS,
        ),
    output:
        "results/figures/index.tsv",
    params:
        code=code_of("figures_index.py"),
    log:
        "logs/figures/index.log",
    benchmark:
        "benchmarks_out/figures/index.tsv"
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/figures_index.py"


rule plot_pass_at_k:
    input:
        summary=SUMMARY,
    output:
        png=report(
            "results/figures/pass_at_k_{family}.png",
            caption="../report/pass_at_k.rst",
            category="Benchmarks",
            subcategory="pass@k",
        ),
        pdf="results/figures/pass_at_k_{family}.pdf",
    params:
        models=list(MODELS),
        code=code_of("plot_pass_at_k.py"),
    log:
        "logs/figures/pass_at_k_{family}.log",
    benchmark:
        "benchmarks_out/figures/pass_at_k_{family}.tsv"
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/plot_pass_at_k.py"


rule plot_finetune_before_after:
    input:
        summary=SUMMARY,
    output:
        png=report(
            "results/figures/finetune_before_after.png",
            caption="../report/finetune_before_after.rst",
            category="Fine-tuning",
        ),
        pdf="results/figures/finetune_before_after.pdf",
    params:
        pairs=FINETUNE_PAIRS,
        code=code_of("plot_finetune_before_after.py"),
    log:
        "logs/figures/finetune_before_after.log",
    benchmark:
        "benchmarks_out/figures/finetune_before_after.tsv"
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/plot_finetune_before_after.py"


rule plot_finetune_loss:
    input:
        histories=[f"results/finetune/{model}/history.parquet" for model, _ in FINETUNE_PAIRS],
    output:
        png=report(
            "results/figures/finetune_loss.png",
            caption="../report/finetune_loss.rst",
            category="Fine-tuning",
        ),
        pdf="results/figures/finetune_loss.pdf",
    params:
        models=[model for model, _ in FINETUNE_PAIRS],
        code=code_of("plot_finetune_loss.py"),
    log:
        "logs/figures/finetune_loss.log",
    benchmark:
        "benchmarks_out/figures/finetune_loss.tsv"
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/plot_finetune_loss.py"


rule plot_checkpoints:
    input:
        summary=SUMMARY,
    output:
        png=report(
            "results/figures/checkpoints_{entry}.png",
            caption="../report/checkpoints.rst",
            category="Training checkpoints",
        ),
        pdf="results/figures/checkpoints_{entry}.pdf",
    params:
        axis=FIGURES.get("checkpoint_axis", "step"),
        code=code_of("plot_checkpoints.py"),
    log:
        "logs/figures/checkpoints_{entry}.log",
    benchmark:
        "benchmarks_out/figures/checkpoints_{entry}.tsv"
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/plot_checkpoints.py"


rule plot_trace_heatmap:
    input:
        problem="results/{model}/trace/problems/{problem}.parquet",
    output:
        png=report(
            "results/figures/trace/{model}/{problem}.png",
            caption="../report/trace_heatmap.rst",
            category="Causal tracing",
            subcategory="{model}",
        ),
        pdf="results/figures/trace/{model}/{problem}.pdf",
    params:
        value=FIGURES.get("trace_value", "p"),
        code=code_of("plot_trace_heatmap.py"),
    log:
        "logs/figures/trace/{model}/{problem}.log",
    benchmark:
        "benchmarks_out/figures/trace/{model}/{problem}.tsv"
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/plot_trace_heatmap.py"


rule plot_trace_aie:
    input:
        summary="results/{model}/trace/summary.parquet",
    output:
        png=report(
            "results/figures/trace_aie_{model}.png",
            caption="../report/trace_aie.rst",
            category="Causal tracing",
            subcategory="{model}",
        ),
        pdf="results/figures/trace_aie_{model}.pdf",
    params:
        code=code_of("plot_trace_aie.py"),
    log:
        "logs/figures/trace_aie_{model}.log",
    benchmark:
        "benchmarks_out/figures/trace_aie_{model}.tsv"
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/plot_trace_aie.py"


rule plot_activation_norms:
    input:
        norms=[f"results/{model}/trace/activation_norms.parquet" for model in TRACED],
    output:
        png=report(
            "results/figures/activation_norms.png",
            caption="../report/activation_norms.rst",
            category="Causal tracing",
        ),
        pdf="results/figures/activation_norms.pdf",
    params:
        models=TRACED,
        code=code_of("plot_activation_norms.py"),
    log:
        "logs/figures/activation_norms.log",
    benchmark:
        "benchmarks_out/figures/activation_norms.tsv"
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/plot_activation_norms.py"


rule compare_models:
    input:
        summary=SUMMARY,
        executions=[f"results/{m}/{b}/executions.parquet" for m, b in model_benchmark_pairs()],
    output:
        parquet="results/summary/comparison.parquet",
        md="results/summary/comparison.md",
        html=report(
            "results/summary/comparison.html",
            caption="../report/comparison.rst",
            category="Benchmarks",
            subcategory="comparison",
        ),
    params:
        models=list(MODELS),
        jobs=[list(pair) for pair in model_benchmark_pairs()],
        reference=FIGURES.get("reference_model"),
        extra_pairs=comparison_pairs_from_config(config, MODELS),
        bootstrap=FIGURES.get("bootstrap", {}),
        code=code_of("compare_models.py"),
    log:
        "logs/compare_models.log",
    benchmark:
        "benchmarks_out/compare_models.tsv"
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/compare_models.py"
