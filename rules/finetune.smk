# Stage: fine-tuning (config `finetune:` entries) -> models/{model}/ + results/finetune/{model}/
# The fine-tuned model is an ordinary local model folder, so it joins the benchmark matrix
# through MODELS like any other model ("before" = its base, "after" = it).
from attribution.finetune.spec import FinetuneSpec, FinetuneSpecError  # noqa: E402

FINETUNED = [ref.wildcard for ref in MODELS.values() if ref.source == "finetune"]

# Check every fine-tuning block up front (typed defaults, cross-field rules, dataset kind), so a
# bad entry fails the DAG build instead of a job hours later.
for _name in FINETUNED:
    _where = f"models.{_name}.finetune"
    try:
        _spec = FinetuneSpec.from_config(dict(config["models"][_name]["finetune"]), _where)
    except FinetuneSpecError as exc:
        raise WorkflowError(f"invalid config: {exc}") from None
    _ds = config["datasets"].get(_spec.dataset)
    if _ds is None or _ds.get("kind", _spec.dataset) != "apps":
        raise WorkflowError(
            f"invalid config: {_where}.dataset: {_spec.dataset!r} is not a datasets entry of "
            "kind apps (add e.g. `datasets: {apps_train: {kind: apps, ...}}`)"
        )


rule finetune:
    input:
        unpack(finetune_inputs),
    output:
        # config.json is written last: the folder's completion marker.
        model=protected("models/{model}/config.json"),
        history="results/finetune/{model}/history.parquet",
    wildcard_constraints:
        model=models_of("finetune"),
    params:
        spec=lambda wc: config["models"][wc.model]["finetune"],
        base=finetune_base,
        code=code_of("finetune.py"),
    resources:
        gpu=lambda wc: config["models"][wc.model]["finetune"].get("gpus", 1),
    threads: 2
    log:
        "logs/finetune/{model}.log",
    benchmark:
        "benchmarks_out/finetune/{model}.tsv"
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow_scripts/finetune.py"


STAGE_TARGETS.append(
    lambda: [f"results/finetune/{model}/history.parquet" for model in FINETUNED]
)
