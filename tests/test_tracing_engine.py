"""The fast engine equals a naive per-cell hook implementation, and ROME's invariants hold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attribution.models.loading import load_model_and_tokenizer
from attribution.tracing.engine import CausalTracer, TraceSettings, restored_layers
from tracing_reference import llama_like_parts, naive_trace

PROMPT = "def f(x):\n    return x * 2 + 1\nassert f([1, 2]) == "


def _sharpened(model_dir):
    loaded = load_model_and_tokenizer(model_dir, dtype="float32", device="cpu")
    with torch.no_grad():  # random weights give near-uniform outputs; sharpen them
        loaded.model.lm_head.weight.mul_(30.0)
    return loaded.model, loaded.tokenizer


@pytest.fixture(scope="module", params=["tiny_model_dir", "tiny_llama_dir"])
def tiny(request):
    model, tokenizer = _sharpened(request.getfixturevalue(request.param))
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    return model, tokenizer, ids


def test_restored_layers_follow_rome_window():
    assert list(restored_layers("hidden", 3, 8, 10)) == [3]
    assert list(restored_layers("mlp", 0, 8, 10)) == [0, 1, 2, 3, 4]
    assert list(restored_layers("attn", 6, 8, 10)) == [1, 2, 3, 4, 5, 6, 7]
    assert list(restored_layers("mlp", 4, 40, 3)) == [3, 4, 5]


def test_engine_equals_naive_hooks_all_kinds(tiny):
    model, tokenizer, ids = tiny
    length = ids.shape[1]
    span = (length - 8, length - 3)
    settings = TraceSettings(noise=0.6, samples=3, window=2, seed=1)
    result = CausalTracer(model, tokenizer).trace(ids[0], span, settings)
    # tokens before the span are compared in test_invariants; here two of them and the rest
    rows = range(span[0] - 2, length)
    ref, low, high = naive_trace(
        model,
        llama_like_parts(model),
        ids,
        span,
        settings.kinds,
        3,
        0.6,
        2,
        1,
        result.target_id,
        rows,
    )
    assert result.low == pytest.approx(low, abs=1e-6)
    assert result.high == pytest.approx(high, abs=1e-6)
    assert result.high - result.low > 1e-3  # the corruption matters: the test is not vacuous
    for kind in settings.kinds:
        got, want = result.scores[kind][rows.start :], ref[kind][rows.start :]
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
        np.testing.assert_allclose(got, want, atol=1e-12, rtol=1e-3)
    # some restoration recovers a good part of the clean probability
    best = max(np.abs(ref[kind][span[0] :] - low).max() for kind in settings.kinds)
    assert best > 0.1 * (result.high - result.low)


def test_invariants(tiny):
    model, tokenizer, ids = tiny
    length = ids.shape[1]
    span = (4, 9)
    settings = TraceSettings(noise=0.6, samples=4, seed=3)
    result = CausalTracer(model, tokenizer).trace(ids[0], span, settings)
    n_layers = result.num_layers
    # tokens before the span: exactly zero indirect effect, not computed
    for grid in result.scores.values():
        assert (grid[: span[0]] == result.low).all()
    assert not result.computed[: span[0]].any() and result.computed[span[0] :].all()
    # ... which the naive implementation confirms by computing them
    ref, low, _high = naive_trace(
        model, llama_like_parts(model), ids, span, ("hidden",), 4, 0.6, 10, 3, result.target_id,
        range(span[0]),
    )  # fmt: skip
    np.testing.assert_allclose(ref["hidden"][: span[0]], low, atol=1e-7)
    # restoring the last token's final hidden state reproduces the clean output
    assert result.scores["hidden"][length - 1, n_layers - 1] == pytest.approx(result.high, abs=1e-6)
    # with the default window (10 >= 2 x layers) every mlp/attn cell restores all layers
    for kind in ("mlp", "attn"):
        grid = result.scores[kind]
        assert np.allclose(grid[span[0] :], grid[span[0] :, :1], atol=1e-6)


def test_batching_does_not_change_scores(tiny):
    model, tokenizer, ids = tiny
    tracer = CausalTracer(model, tokenizer)
    span = (ids.shape[1] - 6, ids.shape[1] - 3)
    small = tracer.trace(ids[0], span, TraceSettings(noise=0.5, samples=2, max_rows=4))
    large = tracer.trace(ids[0], span, TraceSettings(noise=0.5, samples=2, max_rows=4096))
    for kind in small.scores:
        np.testing.assert_allclose(small.scores[kind], large.scores[kind], atol=1e-6)


def test_settings_reject_bad_values():
    with pytest.raises(ValueError, match="kinds"):
        TraceSettings(noise=0.1, kinds=("resid",))
    with pytest.raises(ValueError, match="noise"):
        TraceSettings(noise=0.0)
    with pytest.raises(ValueError, match="max_rows"):
        TraceSettings(noise=0.1, samples=10, max_rows=4)


def test_span_out_of_range_is_an_error(tiny):
    model, tokenizer, ids = tiny
    with pytest.raises(ValueError, match="token span"):
        CausalTracer(model, tokenizer).trace(
            ids[0], (3, ids.shape[1] + 1), TraceSettings(noise=0.1)
        )
