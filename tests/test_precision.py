"""Precision by the GPU's native support (models/loading.py, finetune/train.py), simulated:
torch's own answers are replaced, so this runs without a GPU (the GPU check is on a device)."""

from __future__ import annotations

import pytest
import torch

from attribution.finetune.train import training_precision
from attribution.models.loading import half_dtype, native_bf16, pick_dtype


def fake_gpu(monkeypatch, native: bool) -> None:
    """A CUDA machine whose bf16 is native (Ampere+) or only emulated (V100, T4: torch's
    plain is_bf16_supported() still says True there)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return True if including_emulation else native

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)


@pytest.mark.parametrize(
    ("native", "half", "full", "lora"),
    [
        (True, torch.bfloat16, ("float32", True, False), ("bfloat16", True, False)),
        (False, torch.float16, ("float32", False, True), ("float16", False, True)),
    ],
    ids=["native-bf16", "emulated-bf16"],
)
def test_bf16_only_where_native(monkeypatch, native, half, full, lora):
    fake_gpu(monkeypatch, native)
    assert native_bf16() is native
    assert half_dtype() == half
    assert pick_dtype("auto", torch.device("cuda")) == half  # inference
    assert pick_dtype(None, torch.device("cuda")) == half
    # training: (load dtype, bf16 autocast, fp16 autocast = Trainer's loss scaling)
    assert training_precision("full") == full
    assert training_precision("lora") == lora


def test_cpu_is_fp32_and_explicit_dtypes_are_kept(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not native_bf16()
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert training_precision("full") == training_precision("lora") == ("float32", False, False)
    fake_gpu(monkeypatch, native=False)
    assert pick_dtype("bfloat16", torch.device("cuda")) == torch.bfloat16  # asked for: kept
