# Stage 1: datasets -> data/raw/{dataset}.parquet; prompts -> data/prompts/{benchmark}.parquet

# Hub downloads run where the internet is: under a cluster executor (profiles/slurm) these run
# on the login node instead of being submitted, since compute nodes often have no internet.
localrules:
    download_dataset,


rule download_dataset:
    input:
        dataset_source,
    output:
        parquet="data/raw/{dataset}.parquet",
        provenance="data/raw/{dataset}.json",
    params:
        spec=lambda wc: config["datasets"][wc.dataset],
        code=code_of("download_dataset.py"),
    log:
        "logs/download_dataset/{dataset}.log",
    benchmark:
        "benchmarks_out/download_dataset/{dataset}.tsv"
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/download_dataset.py"


rule format_prompts:
    input:
        dataset=lambda wc: f"data/raw/{BENCHMARK_DATASET[wc.benchmark]}.parquet",
    output:
        "data/prompts/{benchmark}.parquet",
    params:
        code=code_of("format_prompts.py"),
    log:
        "logs/format_prompts/{benchmark}.log",
    benchmark:
        "benchmarks_out/format_prompts/{benchmark}.tsv"
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/format_prompts.py"
