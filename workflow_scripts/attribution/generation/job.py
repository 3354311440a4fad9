"""One generate job as the pipeline runs it: load the backend, read the prompts, run, write."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from attribution.generation.base import Backend
from attribution.generation.chat import ChatTemplateError
from attribution.generation.runner import GenerationJob, run_generation
from attribution.generation.vllm import VLLMUnavailable
from attribution.models.loading import ModelLoadError
from attribution.provenance import record

log = logging.getLogger(__name__)
BACKENDS = ("hf", "vllm")
# Errors caused by the configuration or the machine, not the code: the entry script prints the
# message alone (no traceback) and fails the job.
SETUP_ERRORS = (ModelLoadError, ChatTemplateError, VLLMUnavailable)


def load_backend(
    name: str, load_path: str, revision: str | None, dtype: str | None, gpus: int = 1
) -> Backend:
    """The backend ``name`` with the model loaded (``ModelLoadError`` when it cannot be)."""
    if name == "hf":
        from attribution.generation.hf import HFBackend

        if gpus > 1:
            raise ValueError(
                f"the hf backend runs a model on one GPU, not {gpus}; use the vllm backend"
            )

        return HFBackend.load(load_path, revision=revision, dtype=dtype)
    if name == "vllm":
        from attribution.generation.vllm import VLLMBackend

        return VLLMBackend.load(load_path, revision=revision, dtype=dtype, gpus=gpus)
    raise ValueError(f"generation.backend: unknown backend {name!r}; expected one of {BACKENDS}")


def backend_provenance(engine: Backend, code: str, batch_size: int) -> dict[str, Any]:
    """The provenance record (attribution.provenance) of generations made by ``engine``."""
    name = getattr(engine, "name", type(engine).__name__)
    libraries = ["torch", "transformers"] + (["vllm"] if name == "vllm" else [])
    return record(
        code=code,
        backend=name,
        device=getattr(engine, "device", None),
        dtype=getattr(engine, "dtype", None),
        batch_size=batch_size,
        libraries=libraries,
        gpu_count=getattr(engine, "gpus", None),
    )


def model_fingerprint(load_path: str, revision: str | None) -> dict[str, Any]:
    """What identifies the weights a shard was made with: the resolved folder (a hub snapshot
    path holds the commit) and the size and mtime of its files (a rebuilt local model)."""
    from attribution.models.loading import resolve_source

    folder = Path(resolve_source(load_path, revision))
    files = {
        p.name: [p.stat().st_size, p.stat().st_mtime_ns]
        for p in sorted(folder.iterdir())
        if p.is_file()
    }
    return {"source": str(folder.resolve()), "files": files}


def generate_job(
    prompts_path: str | Path,
    out_path: str | Path,
    model: dict[str, Any],
    benchmark: dict[str, Any],
    seed: int,
    backend: str = "hf",
    code: str = "",
    gpus: int = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """Run the generate rule: ``model`` holds ``load_path``, ``revision``, ``dtype``, ``chat``;
    ``benchmark`` is the config's ``benchmarks.{name}`` entry."""
    job = GenerationJob.from_params(benchmark, seed=seed, chat=bool(model.get("chat", False)))
    engine = load_backend(
        backend, model["load_path"], model.get("revision"), model.get("dtype"), gpus
    )
    provenance = backend_provenance(engine, code, job.batch_size)
    fingerprint = {
        "model": model_fingerprint(model["load_path"], model.get("revision")),
        "backend": backend,
        "code": code,
        # shards made on another GPU, dtype or library version are not mixed in
        "environment": provenance,
    }
    prompts = pd.read_parquet(prompts_path)
    frame = run_generation(
        engine,
        prompts,
        job,
        out_path,
        fingerprint=fingerprint,
        progress=progress,
        provenance=provenance,
    )
    log.info(
        "%d generations (%d completion tokens; finish: %s) -> %s",
        len(frame),
        int(frame["completion_tokens"].sum()),
        frame["finish_reason"].value_counts().to_dict(),
        out_path,
    )
    return frame
