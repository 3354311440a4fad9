# Shared setup and input functions. Everything else lives in workflow_scripts/attribution.
import os
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

sys.path.insert(0, str(Path(workflow.basedir) / "workflow_scripts"))

from attribution.config import (  # noqa: E402
    ConfigError,
    check_config,
    describe_validation_error,
    expand_models,
)
from attribution.data.records import BENCHMARK_DATASET  # noqa: E402
from attribution.hashing import code_hash  # noqa: E402


try:
    validate(config, "../schemas/config.schema.yaml")
except WorkflowError as exc:
    # snakemake wraps the jsonschema error with the whole schema dump; say key and problem.
    if exc.__context__ is None:
        raise
    raise WorkflowError(f"invalid config: {describe_validation_error(exc.__context__)}") from None
try:
    check_config(config, workdir=Path.cwd())
except ConfigError as exc:
    raise WorkflowError(f"invalid config: {exc}") from None

MODELS = expand_models(config)
BENCHMARKS = list(config["benchmarks"])
DATASETS = sorted(config["datasets"])


wildcard_constraints:
    model="[A-Za-z0-9][A-Za-z0-9._@-]*",
    dataset="|".join(DATASETS),
    benchmark="|".join(BENCHMARKS),


# Code hashes, one per entry script: a param that changes only when the script or a module it
# imports (its import closure, found from the code: attribution/hashing.py) changes. Snakemake's
# own `code` trigger sees only the script's mtime; the profiles drop it. Every rule with a
# `script:` carries `code=code_of(<that script>)`; check_code_params (end of the Snakefile)
# fails the DAG build when one does not.
SCRIPTS = Path(workflow.basedir) / "workflow_scripts"


def code_of(script):
    """Content hash of ``workflow_scripts/<script>`` and its import closure."""
    return code_hash(script, SCRIPTS)


def check_code_params():
    """Every rule that runs a script carries that script's code hash as its ``code`` param."""
    for each in workflow.rules:
        if each.script is None:
            continue
        script = Path(os.path.normpath(Path(each.snakefile).parent / each.script))
        expected = code_of(script)
        got = dict(each.params.items()).get("code")
        if got != expected:
            raise WorkflowError(
                f"{each.name} (a script rule) must pass params code=code_of({script.name!r}), the "
                f"content hash of the code it runs; it passes {got!r}"
            )


def model_ref(wildcards):
    return MODELS[wildcards.model]


def model_inputs(wildcards):
    """The model folder a job needs when the model is built or fine-tuned here."""
    ref = MODELS[wildcards.model]
    if ref.is_local:
        return {"model": f"models/{ref.wildcard}/config.json"}
    return {}


def dataset_source(wildcards):
    """The local file a download_dataset job reads (nothing for hub datasets)."""
    spec = config["datasets"][wildcards.dataset]
    return [spec["path"]] if spec["source"] == "local" else []


def benchmark_settings(benchmark):
    return config["benchmarks"][benchmark]


def build_train_on(wildcards):
    """The benchmarks a built model pretrains on (prompt + reference answer documents)."""
    return config["models"][wildcards.model]["build"].get("train_on", [])


def build_datasets(wildcards):
    return [f"data/raw/{BENCHMARK_DATASET[b]}.parquet" for b in build_train_on(wildcards)]


def dataset_held_out(dataset):
    """The dataset's ``held_out`` block (None: no held-out part)."""
    return config["datasets"][dataset].get("held_out")


def build_held_out(wildcards):
    return {b: dataset_held_out(BENCHMARK_DATASET[b]) for b in build_train_on(wildcards)}


def model_benchmark_pairs():
    return [(ref.wildcard, b) for ref in MODELS.values() for b in ref.benchmarks]


def all_targets():
    """Everything `snakemake` builds by default; each stage contributes its own targets."""
    targets = expand("data/prompts/{benchmark}.parquet", benchmark=BENCHMARKS)
    targets += [
        f"models/{ref.wildcard}/config.json" for ref in MODELS.values() if ref.source == "build"
    ]
    for stage_targets in STAGE_TARGETS:
        targets += stage_targets()
    return targets


# Each rules/*.smk appends a function returning its stage's default targets.
STAGE_TARGETS = []


# Fine-tuning (rules/finetune.smk) and the rules that share its output path with build_model.
def models_of(source):
    """Regex for exactly the {model} values of one source (build | finetune | hub)."""
    import re

    names = [re.escape(w) for w, ref in MODELS.items() if ref.source == source]
    return "|".join(names) if names else "(?!)"  # (?!) matches nothing


def finetune_inputs(wildcards):
    """The training data and the base model folder (when it is built or fine-tuned here)."""
    spec = config["models"][wildcards.model]["finetune"]
    base = MODELS[spec["base"]]
    inputs = {"data": f"data/raw/{spec.get('dataset', 'apps')}.parquet"}
    if base.is_local:
        inputs["base"] = f"models/{base.wildcard}/config.json"
    return inputs


def finetune_base(wildcards):
    """What the job loads: the base's folder or hub id, and its revision."""
    base = MODELS[config["models"][wildcards.model]["finetune"]["base"]]
    return {"path": base.load_path(), "revision": base.revision}


# Benchmark stage (rules/benchmark.smk): what each job depends on, and nothing more.
# The benchmark keys generation depends on (not ks: scoring; not gpus: where it runs).
# batch_size counts: samples do not depend on it by design (per-sample seeds), but float
# rounding differs between batch shapes, so a new batch size is a new result.
GENERATION_KEYS = (
    "n_samples",
    "temperature",
    "top_p",
    "max_new_tokens",
    "batch_size",
    "stop",
    "max_tasks",
)


def generation_settings(wildcards):
    settings = benchmark_settings(wildcards.benchmark)
    return {key: settings[key] for key in GENERATION_KEYS if key in settings}


def generation_model(wildcards):
    """The model fields a generate job depends on (never the whole model entry)."""
    ref = MODELS[wildcards.model]
    return {
        "load_path": ref.load_path(),
        "revision": ref.revision,
        "dtype": ref.dtype,
        "chat": ref.chat,
    }


def generation_gpus(wildcards):
    return benchmark_settings(wildcards.benchmark).get("gpus", config["generation"]["gpus"])


def benchmark_dataset_file(wildcards):
    return f"data/raw/{BENCHMARK_DATASET[wildcards.benchmark]}.parquet"


# Benchmarks whose checker takes expected outputs and timings from a reference solution run
# (the references job): HumanEval+ (evalplus' ground truth).
REFERENCE_BENCHMARKS = ["humanevalplus"]


def execute_inputs(wildcards):
    """Generations, the dataset and, where the checker needs them, the reference outputs."""
    inputs = {
        "generations": f"results/{wildcards.model}/{wildcards.benchmark}/generations.parquet",
        "dataset": benchmark_dataset_file(wildcards),
    }
    if wildcards.benchmark in REFERENCE_BENCHMARKS:
        inputs["references"] = f"data/references/{wildcards.benchmark}.parquet"
    return inputs


def checker_settings(wildcards):
    """The execution settings one benchmark's verdicts depend on (limits, comparison)."""
    from attribution.execution.options import config_options

    b = wildcards.benchmark
    return config_options(b, benchmark_settings(b), config["execution"])


def summary_runs():
    return [
        {"model": m, "model_entry": MODELS[m].entry, "revision": MODELS[m].revision, "benchmark": b}
        for m, b in model_benchmark_pairs()
    ]


def summary_datasets():
    return sorted({BENCHMARK_DATASET[b] for _, b in model_benchmark_pairs()})


def summary_split_datasets():
    return [d for d in summary_datasets() if dataset_held_out(d)]


# Trace stage (rules/trace.smk): settings, the models it traces, what each job depends on.
TRACE = config.get("trace", {})
# Models the trace stage runs (figures.smk reads this name).
TRACE_MODELS = [
    m
    for m, ref in MODELS.items()
    if "cruxeval_o" in ref.benchmarks
    and (TRACE.get("models", "all") == "all" or ref.entry in TRACE["models"] or m in TRACE["models"])
]
def trace_model(wildcards):
    """The model fields a trace job depends on."""
    ref = MODELS[wildcards.model]
    return {"load_path": ref.load_path(), "revision": ref.revision, "dtype": ref.dtype}


def trace_settings():
    """What every traced cell depends on (not max_problems/force_problems: selection)."""
    settings = {
        key: TRACE[key]
        for key in (
            "kinds", "samples", "window", "span", "seed", "batch_rows", "screen", "corruption"
        )
        if key in TRACE
    }
    if "noise" in TRACE:
        settings["noise"] = TRACE["noise"]
    else:
        settings["noise_sigmas"] = TRACE.get("noise_sigmas", 3.0)
    if TRACE.get("corruption", "noise") == "replace":  # token replacement has no noise scale
        settings.pop("noise", None)
        settings.pop("noise_sigmas", None)
    return settings


def norms_settings():
    """What the activation norms depend on: the span, and the noise scale of their noise_norm
    column (not the cells, rows or screens of the trace)."""
    keys = ("span", "corruption", "noise", "noise_sigmas")
    return {key: value for key, value in trace_settings().items() if key in keys}


def trace_selection():
    crux = benchmark_settings("cruxeval_o") if "cruxeval_o" in BENCHMARKS else {}
    return {
        "max_problems": TRACE.get("max_problems", 4),
        "force": [str(t) for t in TRACE.get("force_problems", [])],
        # greedy = temperature 0: sample 0 is then the model's answer
        "greedy": float(crux.get("temperature", 0.0)) == 0.0,
    }


def traced_problem_files(wildcards):
    """Per-problem trace files of the problems the checkpoint selected (may be none)."""
    import pandas as pd

    selected = checkpoints.select_trace_problems.get(model=wildcards.model).output[0]
    ids = pd.read_parquet(selected)["task_id"].astype(str)
    return [f"results/{wildcards.model}/trace/problems/{t}.parquet" for t in ids]
