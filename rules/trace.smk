# Stage: causal tracing (ROME) of the CRUXEval-O problems each model answers correctly.
#   select_trace_problems (checkpoint) -> results/{model}/trace/selected.parquet
#   causal_trace [gpu]                 -> results/{model}/trace/problems/{problem}.parquet
#   trace_summary                      -> results/{model}/trace/summary.parquet, screens.parquet
#   activation_norms [gpu]             -> results/{model}/trace/activation_norms.parquet
# Library: workflow_scripts/attribution/tracing/ (column contracts in its module docstrings).

# Settings, TRACE_MODELS and the input functions live in rules/common.smk (trace section).

STAGE_TARGETS.append(
    lambda: [
        f"results/{m}/trace/{name}.parquet"
        for m in TRACE_MODELS
        for name in ("summary", "activation_norms")
    ]
)


checkpoint select_trace_problems:
    input:
        executions="results/{model}/cruxeval_o/executions.parquet",
        prompts="data/prompts/cruxeval_o.parquet",
    output:
        "results/{model}/trace/selected.parquet",
    params:
        selection=trace_selection(),
        code=code_of("select_trace_problems.py"),
    log:
        "logs/trace/select/{model}.log",
    benchmark:
        "benchmarks_out/trace/select/{model}.tsv"
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/select_trace_problems.py"


rule causal_trace:
    input:
        unpack(model_inputs),
        prompts="data/prompts/cruxeval_o.parquet",
    output:
        "results/{model}/trace/problems/{problem}.parquet",
    params:
        model=trace_model,
        settings=trace_settings(),
        code=code_of("causal_trace.py"),
    resources:
        gpu=1,
    threads: TRACE.get("threads", 2)
    log:
        "logs/trace/problems/{model}/{problem}.log",
    benchmark:
        "benchmarks_out/trace/problems/{model}/{problem}.tsv"
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/causal_trace.py"


rule trace_summary:
    input:
        selected="results/{model}/trace/selected.parquet",
        problems=traced_problem_files,
    output:
        summary="results/{model}/trace/summary.parquet",
        screens="results/{model}/trace/screens.parquet",
    params:
        code=code_of("trace_summary.py"),
    log:
        "logs/trace/summary/{model}.log",
    benchmark:
        "benchmarks_out/trace/summary/{model}.tsv"
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/trace_summary.py"


rule activation_norms:
    input:
        unpack(model_inputs),
        prompts="data/prompts/cruxeval_o.parquet",
        selected="results/{model}/trace/selected.parquet",
    output:
        "results/{model}/trace/activation_norms.parquet",
    params:
        model=trace_model,
        settings=norms_settings(),
        code=code_of("activation_norms.py"),
    resources:
        gpu=1,
    threads: TRACE.get("threads", 2)
    log:
        "logs/trace/activation_norms/{model}.log",
    benchmark:
        "benchmarks_out/trace/activation_norms/{model}.tsv"
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/activation_norms.py"
