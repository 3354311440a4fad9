# Stage 2: tiny models built locally (config `build:` entries) -> models/{model}/


rule build_model:
    input:
        corpus=sample_data_files(),
    output:
        config="models/{model}/config.json",
    # rule finetune writes the same path for `finetune:` entries
    wildcard_constraints:
        model=models_of("build"),
    params:
        spec=lambda wc: config["models"][wc.model]["build"],
        code=code_of("build_model.py"),
    log:
        "logs/build_model/{model}.log",
    benchmark:
        "benchmarks_out/build_model/{model}.tsv"
    threads: 2
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/build_model.py"
