# Stage 3: every model x benchmark -> generations (GPU) -> executions (sandbox, CPU) -> metrics
# -> results/summary/metrics.parquet, with reference outputs and timings (HumanEval+) per
# benchmark. Library: attribution.generation, attribution.execution, attribution.summary.

rule generate:
    input:
        unpack(model_inputs),
        prompts="data/prompts/{benchmark}.parquet",
    output:
        "results/{model}/{benchmark}/generations.parquet",
    params:
        settings=generation_settings,
        model=generation_model,
        seed=config["generation"]["seed"],
        backend=config["generation"]["backend"],
        code=code_of("generate.py"),
    resources:
        gpu=generation_gpus,
    threads: config["generation"]["threads"]
    log:
        "logs/generate/{model}/{benchmark}.log",
    benchmark:
        "benchmarks_out/generate/{model}/{benchmark}.tsv"
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/generate.py"


rule references:
    input:
        dataset=benchmark_dataset_file,
    output:
        "data/references/{benchmark}.parquet",
    wildcard_constraints:
        benchmark="|".join(REFERENCE_BENCHMARKS),
    params:
        code=code_of("references.py"),
    threads: config["execution"]["workers"]
    log:
        "logs/references/{benchmark}.log",
    benchmark:
        "benchmarks_out/references/{benchmark}.tsv"
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/references.py"


rule execute:
    input:
        unpack(execute_inputs),
    output:
        "results/{model}/{benchmark}/executions.parquet",
    params:
        checker=checker_settings,
        code=code_of("execute.py"),
        isolation=config["execution"]["isolation"],
    threads: config["execution"]["workers"]
    log:
        "logs/execute/{model}/{benchmark}.log",
    benchmark:
        "benchmarks_out/execute/{model}/{benchmark}.tsv"
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/execute.py"


rule score:
    input:
        executions="results/{model}/{benchmark}/executions.parquet",
    output:
        "results/{model}/{benchmark}/metrics.json",
    params:
        ks=lambda wc: benchmark_settings(wc.benchmark)["ks"],
        code=code_of("score.py"),
    log:
        "logs/score/{model}/{benchmark}.log",
    benchmark:
        "benchmarks_out/score/{model}/{benchmark}.tsv"
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/score.py"


rule summarize:
    input:
        metrics=[f"results/{m}/{b}/metrics.json" for m, b in model_benchmark_pairs()],
        provenance=[f"data/raw/{d}.json" for d in summary_datasets()],
        # datasets with a held-out part: their task ids give the summary's train/held_out rows
        split_data=[f"data/raw/{d}.parquet" for d in summary_split_datasets()],
    output:
        "results/summary/metrics.parquet",
    params:
        runs=summary_runs(),
        datasets=summary_datasets(),
        split_datasets=summary_split_datasets(),
        held_out={d: dataset_held_out(d) for d in summary_split_datasets()},
        code_version="+".join(code_of(s) for s in ("generate.py", "execute.py", "score.py")),
        code=code_of("summarize.py"),
    log:
        "logs/summarize.log",
    benchmark:
        "benchmarks_out/summarize.tsv"
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/summarize.py"


STAGE_TARGETS.append(
    lambda: [f"results/{m}/{b}/metrics.json" for m, b in model_benchmark_pairs()]
    + ["results/summary/metrics.parquet"]
)
