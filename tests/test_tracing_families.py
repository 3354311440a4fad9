"""Every supported decoder family (and sliding-window variants) traced cell by cell against the
naive per-cell reference, in fp32, with adapters derived from the model's structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attribution.tracing.adapters import TESTED_FAMILIES
from attribution.tracing.corruption import replacement_corruption
from attribution.tracing.engine import CausalTracer, TraceSettings
from tracing_reference import FAMILY_CONFIGS, contrast_target, naive_trace, random_family_model

# the engine's exactness budget against the reference in fp32
ATOL = 2.5e-6


def _ids(seed=5, length=12):
    return torch.randint(0, 97, (1, length), generator=torch.Generator().manual_seed(seed))


def _nu(parts, ids):
    with torch.no_grad():  # ROME's scale: 3 x the embedding std (of this prompt)
        return 3.0 * float(parts["embed"](ids).float().std())


def test_every_family_has_a_test_config():
    assert {
        FAMILY_CONFIGS[k](__import__("transformers")).model_type for k in FAMILY_CONFIGS
    } == set(TESTED_FAMILIES)


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_engine_equals_naive(family):
    model, parts = random_family_model(family)
    tracer = CausalTracer(model)  # derives the module map, then self-tests it
    assert tracer.adapter.family == model.config.model_type
    assert tracer.num_layers == len(parts["hidden"])
    ids = _ids()
    span = (3, 6)
    nu = _nu(parts, ids)
    settings = TraceSettings(noise=nu, samples=2, window=2, seed=1)
    target = contrast_target(model, parts, ids, span, 2, nu, 1)
    result = tracer.trace(ids[0], span, settings, target_id=target)
    ref, low, high = naive_trace(model, parts, ids, span, settings.kinds, 2, nu, 2, 1, target)
    assert result.low == pytest.approx(low, abs=ATOL)
    assert result.high == pytest.approx(high, abs=ATOL)
    assert abs(high - low) > 1e-3  # the corruption matters: the comparison is not vacuous
    for kind in settings.kinds:
        np.testing.assert_allclose(result.scores[kind], ref[kind], atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", ["mistral", "gemma2", "qwen2_sliding"])
def test_sliding_window_one_cell_per_forward(family):
    """Forced one-cell batches: every cell reuses its own prefix, longer than the window."""
    model, parts = random_family_model(family)
    ids = _ids(seed=7, length=14)
    span = (6, 8)  # inside the last position's receptive field (2 layers x window 4)
    nu = _nu(parts, ids)
    settings = TraceSettings(noise=nu, samples=2, window=1, seed=3, max_rows=2)
    target = contrast_target(model, parts, ids, span, 2, nu, 3)
    result = CausalTracer(model).trace(ids[0], span, settings, target_id=target)
    ref, low, high = naive_trace(model, parts, ids, span, settings.kinds, 2, nu, 1, 3, target)
    assert result.low == pytest.approx(low, abs=ATOL)
    assert abs(high - low) > 1e-3
    for kind in settings.kinds:
        np.testing.assert_allclose(result.scores[kind], ref[kind], atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt_neox"])
def test_token_replacement_equals_naive(family):
    model, parts = random_family_model(family)
    ids = _ids(seed=11)
    span = (4, 7)
    replacements = [[1, 2, 3], [50, 60, 70], [96, 0, 5]]
    corruption = replacement_corruption(ids[0], span, replacements, ["a", "b", "c"])
    settings = TraceSettings(corruption="replace", samples=3, window=2)
    target = contrast_target(model, parts, ids, span, 3, None, None, corruption.ids)
    result = CausalTracer(model).trace(ids[0], span, settings, target, corruption=corruption)
    assert result.corrupted_rows == 3 and result.sources == ("a", "b", "c")
    ref, low, high = naive_trace(
        model, parts, ids, span, settings.kinds, 3, None, 2, None, target,
        corrupted_ids=corruption.ids,
    )  # fmt: skip
    assert result.low == pytest.approx(low, abs=ATOL)
    assert abs(high - low) > 1e-3
    for kind in settings.kinds:
        np.testing.assert_allclose(result.scores[kind], ref[kind], atol=ATOL, rtol=0)


def test_sliding_window_is_in_force():
    """Mistral with window 4 and 2 layers: tokens 2-3 are outside the last position's receptive
    field, so corrupting them changes nothing; the engine's prefix reuse must not widen it."""
    model, parts = random_family_model("mistral")
    ids = _ids(seed=7, length=14)
    result = CausalTracer(model).trace(ids[0], (2, 4), TraceSettings(noise=_nu(parts, ids)))
    # equal up to float rounding (clean: 1 row, corrupted: 10); inside the field it is ~1e-2
    assert result.high == pytest.approx(result.low, abs=1e-6)
    for grid in result.scores.values():
        np.testing.assert_allclose(grid, result.low, atol=1e-6, rtol=0)
