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
