"""Semantic checks on a schema-valid config and the expansion of model entries into the
``{model}`` wildcard values the DAG runs on.

The JSON schema (schemas/config.schema.yaml) checks shapes and types; this module checks what a
schema cannot: references between entries (a fine-tune's base exists), files that must exist,
and name clashes after revision expansion. Errors name the key path and the problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attribution.data.records import BENCHMARK_DATASET, BENCHMARKS

REVISION_STEP = re.compile(r"step(\d+)")
REVISION_TOKENS = re.compile(r"tokens(\d+)([KMBT]?)")


class ConfigError(ValueError):
    """The config is invalid; the message starts with the key path."""


@dataclass(frozen=True)
class ModelRef:
    """One ``{model}`` wildcard value: a config entry, with one revision when it has several."""

    wildcard: str
    entry: str
    source: str  # hub | build | finetune
    hub_id: str | None
    revision: str | None
    dtype: str
    chat: bool
    benchmarks: tuple[str, ...]

    @property
    def is_local(self) -> bool:
        return self.source in {"build", "finetune"}

    def load_path(self, models_dir: str = "models") -> str:
        """What ``load_model_and_tokenizer`` gets: the local folder or the hub id."""
        return f"{models_dir}/{self.wildcard}" if self.is_local else str(self.hub_id)

    @property
    def training_step(self) -> int | None:
        """Training step parsed from an OLMo-style revision name (``stage1-step1000-tokens5B``)."""
        return parse_revision_step(self.revision)


def parse_revision_step(revision: str | None) -> int | None:
    if not revision:
        return None
    match = REVISION_STEP.search(revision)
    return int(match.group(1)) if match else None


def parse_revision_tokens(revision: str | None) -> float | None:
    """Training tokens parsed from ``...-tokens5B`` (5e9); None when absent."""
    if not revision:
        return None
    match = REVISION_TOKENS.search(revision)
    if not match:
        return None
    scale = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}[match.group(2)]
    return float(match.group(1)) * scale


def expand_models(config: dict[str, Any]) -> dict[str, ModelRef]:
    """Map every ``{model}`` wildcard value to its ModelRef (revisions expand to NAME@REV)."""
    refs: dict[str, ModelRef] = {}
    all_benchmarks = tuple(config.get("benchmarks", {}))
    for name, entry in config["models"].items():
        source = next(key for key in ("hub", "build", "finetune") if key in entry)
        benchmarks = tuple(
            b for b in entry.get("benchmarks", all_benchmarks) if b in all_benchmarks
        )
        common = dict(
            entry=name,
            source=source,
            hub_id=entry.get("hub"),
            dtype=entry.get("dtype", "auto"),
            chat=bool(entry.get("chat", False)),
            benchmarks=benchmarks,
        )
        revisions = entry.get("revisions")
        if revisions:
            for rev in revisions:
                refs[f"{name}@{rev}"] = ModelRef(wildcard=f"{name}@{rev}", revision=rev, **common)
        else:
            refs[name] = ModelRef(wildcard=name, revision=entry.get("revision"), **common)
    return refs


def describe_validation_error(error: Any) -> str:
    """One line for a jsonschema ValidationError: the key path and the problem."""
    from jsonschema.exceptions import best_match

    if error.context:
        error = best_match(error.context) or error
    path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    message = f"{path}: {error.message}"
    parts = list(error.absolute_path)
    if len(parts) == 2 and parts[0] == "models":
        message += " (a model entry needs exactly one of `hub`, `build` or `finetune`)"
    if error.validator == "additionalProperties" and parts == ["benchmarks"]:
        message += f" (known benchmarks: {', '.join(BENCHMARKS)})"
    return message


def _check_checker_options(bench: str, settings: dict[str, Any]) -> None:
    """Execution settings that do not apply to a benchmark are errors (never ignored)."""
    from attribution.execution.options import OptionError, checker_options

    keys = ("time_limit_s", "comparison", "float_tolerance")
    try:
        checker_options(bench, **{k: settings.get(k) for k in keys})
    except OptionError as exc:
        raise ConfigError(f"benchmarks.{bench}: {exc}") from None


def check_config(config: dict[str, Any], workdir: str | Path = ".") -> None:
    """Cross-entry checks the schema cannot express; raises ConfigError naming the key."""
    root = Path(workdir)
    for name, ds in config.get("datasets", {}).items():
        if ds.get("source") == "local" and not (root / ds["path"]).exists():
            raise ConfigError(f"datasets.{name}.path: {ds['path']} does not exist")
    for bench in config.get("benchmarks", {}):
        if bench not in BENCHMARKS:
            raise ConfigError(f"benchmarks.{bench}: unknown benchmark (known: {list(BENCHMARKS)})")
        dataset = BENCHMARK_DATASET[bench]
        if dataset not in config.get("datasets", {}):
            raise ConfigError(
                f"benchmarks.{bench}: needs datasets.{dataset}, which is not configured"
            )
        _check_checker_options(bench, config["benchmarks"][bench] or {})
    check_generation_gpus(config)
    models = config["models"]
    for name, entry in models.items():
        if "/" in name or "@" in name:
            raise ConfigError(f"models.{name}: a model name may not contain '/' or '@'")
        if "finetune" in entry:
            base = entry["finetune"]["base"]
            if base not in models:
                raise ConfigError(f"models.{name}.finetune.base: unknown model {base!r}")
            if "finetune" in models[base] and models[base]["finetune"]["base"] == name:
                raise ConfigError(f"models.{name}.finetune.base: cycle with {base!r}")
            if models[base].get("revisions"):
                raise ConfigError(
                    f"models.{name}.finetune.base: {base!r} has several revisions; fine-tune a "
                    "model entry with a single `revision` instead"
                )
        if "revision" in entry and "revisions" in entry:
            raise ConfigError(f"models.{name}: give either revision or revisions, not both")
        for bench in entry.get("build", {}).get("train_on", []):
            if BENCHMARK_DATASET[bench] not in config.get("datasets", {}):
                raise ConfigError(
                    f"models.{name}.build.train_on: {bench} needs datasets."
                    f"{BENCHMARK_DATASET[bench]}, which is not configured"
                )
        if "finetune" in entry:
            _check_finetune_held_out(config, name, entry["finetune"])
    _check_ks(config)
    _check_trace(config, root)


def _check_ks(config: dict[str, Any]) -> None:
    """pass@k needs k <= n samples per task; a larger k would be dropped from the scores."""
    for bench, settings in config.get("benchmarks", {}).items():
        n = settings.get("n_samples", 1)
        over = [k for k in settings.get("ks", [1]) if k > n]
        if over:
            raise ConfigError(
                f"benchmarks.{bench}.ks: {over} exceed n_samples ({n}); pass@k needs at least "
                "k samples per task"
            )


def _check_finetune_held_out(config: dict[str, Any], name: str, block: dict[str, Any]) -> None:
    """A fine-tune on a dataset with a held-out part must hold out exactly those tasks: its
    eval split is the same function (attribution.data.splits) of its eval_fraction and seed."""
    dataset = block.get("dataset", "apps")
    held = config.get("datasets", {}).get(dataset, {}).get("held_out")
    if not held:
        return
    where = f"models.{name}.finetune"
    pairs = (("eval_fraction", "fraction", 0.05), ("seed", "seed", 0))
    for key, held_key, default in pairs:
        mine, theirs = block.get(key, default), held.get(held_key, 0)
        if mine != theirs:
            raise ConfigError(
                f"{where}.{key}: {mine} differs from datasets.{dataset}.held_out.{held_key} "
                f"({theirs}); the fine-tune would train on held-out tasks (set them equal)"
            )
    if block.get("max_problems") is not None:
        raise ConfigError(
            f"{where}.max_problems: cannot be combined with datasets.{dataset}.held_out (the "
            "split is over every task of the dataset)"
        )


def _check_trace(config: dict[str, Any], root: Path) -> None:
    """trace.models names models that run cruxeval_o; trace.force_problems are task ids of the
    CRUXEval dataset when it is a local file (a hub dataset is checked at selection)."""
    trace = config.get("trace") or {}
    if "cruxeval_o" not in config.get("benchmarks", {}):
        return
    refs = expand_models(config)
    listed = trace.get("models", "all")
    if listed != "all":
        entries = {ref.entry for ref in refs.values()}
        for name in listed:
            if name not in refs and name not in entries:
                raise ConfigError(
                    f"trace.models: {name!r} is not a model (known: {', '.join(refs)})"
                )
            runs = [r for r in refs.values() if name in (r.wildcard, r.entry)]
            if not any("cruxeval_o" in r.benchmarks for r in runs):
                raise ConfigError(
                    f"trace.models: {name!r} does not run cruxeval_o (its `benchmarks` list), "
                    "so it has nothing to trace"
                )
    forced = [str(t) for t in trace.get("force_problems", [])]
    dataset = config.get("datasets", {}).get("cruxeval", {})
    if forced and dataset.get("source") == "local":
        from attribution.data.loaders import load_dataset_file

        path = root / dataset["path"]
        ids = set(load_dataset_file("cruxeval", path)["id"].astype(str))
        unknown = [t for t in forced if t not in ids]
        if unknown:
            raise ConfigError(
                f"trace.force_problems: {unknown} are not task ids of datasets.cruxeval "
                f"({dataset['path']}, e.g. {sorted(ids)[:3]})"
            )


def check_generation_gpus(config: dict[str, Any]) -> None:
    """The hf backend runs a model on one device: more GPUs per generate job would be leased
    and left idle, so asking for them is an error (vllm spreads a model over them)."""
    generation = config.get("generation", {})
    if generation.get("backend", "hf") != "hf":
        return
    asks = [("generation.gpus", generation.get("gpus", 1))]
    asks += [
        (f"benchmarks.{name}.gpus", settings["gpus"])
        for name, settings in config.get("benchmarks", {}).items()
        if "gpus" in settings
    ]
    for where, gpus in asks:
        if gpus > 1:
            raise ConfigError(
                f"{where}: {gpus} GPUs per generate job, but the hf backend runs a model on one "
                "GPU; set it to 1 (jobs then run side by side on the GPUs given with "
                "--resources gpu=N) or use generation.backend: vllm (tensor parallel)"
            )
