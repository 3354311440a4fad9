"""The one place that loads a model and its tokenizer.

Hub models and locally built/fine-tuned folders go through the same ``from_pretrained`` path.
Offline (no hub, or HF_HUB_OFFLINE=1) a hub id that is not in the local cache fails at once with
a message naming the id, the revision and how to fix it, instead of a retry loop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be loaded; the message says which and what to do."""


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype


def pick_device(device: str | None = None) -> torch.device:
    """``device`` if given, else the first visible CUDA device, else the CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def native_bf16() -> bool:
    """Whether the current CUDA device computes bf16 natively (compute capability 8.0+).
    ``torch.cuda.is_bf16_supported()`` alone also says yes where bf16 is only emulated (e.g.
    V100, T4): slow, and then fp16 is the half precision the hardware has."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def half_dtype() -> torch.dtype:
    """The GPU's half precision: bf16 where native, else fp16 (training adds loss scaling)."""
    return torch.bfloat16 if native_bf16() else torch.float16


def pick_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """``auto``: the GPU's native half precision (:func:`half_dtype`), fp32 on the CPU."""
    if dtype and dtype != "auto":
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)} or 'auto'")
        return DTYPES[dtype]
    if device.type == "cuda":
        return half_dtype()
    return torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (the config's spelling)."""
    return str(dtype).removeprefix("torch.")


def resolve_source(name_or_path: str | os.PathLike[str], revision: str | None = None) -> str:
    """Return a local folder for ``name_or_path``: itself when it is a folder, else the hub
    snapshot (from the cache when offline). Raises ModelLoadError with a fix-it hint."""
    path = Path(name_or_path)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelLoadError(f"{path} is a folder but holds no config.json: not a model folder")
        return str(path)
    hub_id = str(name_or_path)
    if hub_id.startswith((".", "/")) or hub_id.count("/") > 1:
        raise ModelLoadError(f"model folder {hub_id} does not exist")
    from huggingface_hub import snapshot_download

    where = f"{hub_id!r}" + (f" at revision {revision!r}" if revision else "")
    try:
        return snapshot_download(hub_id, revision=revision, local_files_only=True)
    except Exception as cached_exc:  # noqa: BLE001 - any cache miss falls through to download
        if _offline():
            raise ModelLoadError(
                f"model {where} is not in the local Hugging Face cache and the hub is offline "
                "(HF_HUB_OFFLINE=1). Pre-download it on a machine with internet "
                f"(`hf download {hub_id}" + (f" --revision {revision}" if revision else "") + "`) "
                "into the cache this job sees (set HF_HOME), or point the model entry at a folder."
            ) from cached_exc
    try:
        return snapshot_download(hub_id, revision=revision)
    except Exception as exc:  # noqa: BLE001 - re-raised with the context a user needs
        raise ModelLoadError(
            f"could not download model {where}: {type(exc).__name__}: {str(exc).splitlines()[0]}. "
            "Check the id and revision, HF_TOKEN for gated models, or pre-download it and set "
            "HF_HOME."
        ) from exc


def load_tokenizer(name_or_path: str | os.PathLike[str], revision: str | None = None) -> Any:
    """Load only the tokenizer (same resolution rules as the model)."""
    from transformers import AutoTokenizer

    source = resolve_source(name_or_path, revision)
    return AutoTokenizer.from_pretrained(source)


def load_model_and_tokenizer(
    name_or_path: str | os.PathLike[str],
    revision: str | None = None,
    dtype: str | None = "auto",
    device: str | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer in eval mode on ``device`` with ``dtype``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_source(name_or_path, revision)
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load model from {source}: {exc}") from exc
    model.to(dev)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, device=dev, dtype=torch_dtype)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}
