"""One source for each default: the JSON schema's defaults and the typed dataclasses the code
reads agree key by key, and envs/pipeline.yaml (conda) pins what pyproject.toml pins."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from attribution.finetune.spec import FinetuneSpec, LoraSpec
from attribution.finetune.tracking import WandbSettings
from attribution.generation.base import GenerationSettings
from attribution.generation.runner import GenerationJob
from attribution.models.build import TinyModelSpec
from attribution.tracing.engine import TraceSettings

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
NO_DEFAULT = object()


def schema_props(*path: str) -> dict[str, Any]:
    """``properties`` of the schema node at ``path`` (``$defs/x`` or a top-level section)."""
    node = SCHEMA
    for key in path:
        node = node["$defs"][key[1:]] if key.startswith("$") else node["properties"][key]
    return node["properties"]


def field_default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return NO_DEFAULT


def plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# (dataclass, schema node, {field: schema key} renames, fields the config does not set)
CASES = {
    "FinetuneSpec": (FinetuneSpec, ("$finetune",), {}, {"lora"}),
    "LoraSpec": (LoraSpec, ("$finetune", "lora"), {}, set()),
    "TinyModelSpec": (TinyModelSpec, ("$build",), {}, set()),
    "GenerationSettings": (GenerationSettings, ("$benchmark",), {}, {"add_special_tokens"}),
    # seed is generation.seed, chat the model's; shard_size is not a config key
    "GenerationJob": (GenerationJob, ("$benchmark",), {}, {"seed", "chat", "shard_size"}),
    "WandbSettings": (WandbSettings, ("wandb",), {}, set()),
    "TraceSettings": (TraceSettings, ("trace",), {"max_rows": "batch_rows"}, set()),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_schema_and_dataclass_defaults_agree(case):
    cls, path, renames, not_config = CASES[case]
    props = schema_props(*path)
    required = (
        set(SCHEMA["$defs"][path[0][1:]].get("required", []))
        if len(path) == 1 and path[0].startswith("$")
        else set()
    )
    for field in dataclasses.fields(cls):
        if field.name in not_config:
            continue
        key = renames.get(field.name, field.name)
        assert key in props, f"{case}.{field.name}: no schema key {key!r} under {path}"
        ours, theirs = field_default(field), props[key].get("default", NO_DEFAULT)
        if ours is None or (ours is NO_DEFAULT and theirs is NO_DEFAULT):
            # "not set" in the code: the schema gives no default either (a null default is
            # the same statement)
            assert theirs in (NO_DEFAULT, None), f"{case}.{field.name}: schema {theirs!r}"
        elif key in required and theirs is NO_DEFAULT:
            continue  # a required key: the dataclass default is never used from a config
        else:
            assert plain(ours) == plain(theirs), f"{case}.{field.name}: {ours!r} vs {theirs!r}"


def test_config_only_defaults_match_their_dataclass_neighbours():
    generation = schema_props("generation")
    assert generation["seed"]["default"] == GenerationJob.seed
    model = schema_props("$model")
    assert model["chat"]["default"] is GenerationJob.chat
    # a job built from an empty benchmark entry has the schema's values
    empty = GenerationJob.from_params({}, seed=GenerationJob.seed, chat=False)
    assert empty == GenerationJob()
    assert WandbSettings.from_config({}) == WandbSettings()


def requirement(spec: str) -> tuple[str, str]:
    name = re.match(r"[A-Za-z0-9_.-]+", spec).group(0)
    return name.lower().replace("_", "-"), spec[len(name) :].replace(" ", "")


def test_conda_env_is_in_step_with_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "envs" / "pipeline.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda_python = next(
        d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")
    )
    ours = dict(requirement(s) for s in pip)
    theirs = dict(requirement(s) for s in project["dependencies"])
    # snakemake itself runs outside the job environment (it puts its own package on a
    # script job's sys.path), so the job environment does not install it.
    theirs.pop("snakemake")
    assert ours == theirs
    assert conda_python.removeprefix("python") == project["requires-python"]
