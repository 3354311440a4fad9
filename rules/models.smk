# Stage 2: tiny models built locally (config `build:` entries) -> models/{model}/


rule build_model:
    input:
        datasets=build_datasets,
    output:
        config="models/{model}/config.json",
    # rule finetune writes the same path for `finetune:` entries
    wildcard_constraints:
        model=models_of("build"),
    params:
        spec=lambda wc: config["models"][wc.model]["build"],
        held_out=build_held_out,
        code=code_of("build_model.py"),
    log:
        "logs/build_model/{model}.log",
    benchmark:
        "benchmarks_out/build_model/{model}.tsv"
    # one thread: the two demo builds then share 2 cores in parallel, which beats two threads
    # each on models this small (thread overhead dominates their tiny matrix products)
    threads: 1
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/build_model.py"
