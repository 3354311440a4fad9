"""AtP* (Kramar et al. 2024): the QK fix's patched queries/keys and softmax terms against brute
force, GradDrop's gradient gate, and the screens on every family."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attribution.tracing.adapters import get_module, hidden_of
from attribution.tracing.engine import CausalTracer, TraceSettings
from attribution.tracing.patching import (
    SCREENS,
    _grad_forward,
    _patched_qk,
    attention_op,
    false_negative_rate,
    qk_fix_terms,
    qk_forward_side,
    rebuild_attention,
    screen_agreement,
    screen_estimates,
)
from tracing_reference import FAMILY_CONFIGS, random_family_model

SPAN = (3, 6)


def _setup(family, dtype=torch.float64):
    model, parts = random_family_model(family)
    model = model.to(dtype)
    tracer = CausalTracer(model)
    ids = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        nu = 3.0 * float(parts["embed"](ids).std())
    settings = TraceSettings(noise=nu, samples=2, window=2, seed=1)
    corruption = tracer.corruption_for(ids[0], SPAN, settings)
    return tracer, ids, settings, corruption


def _full_forward_qk(tracer, corruption, row, clean, kind, j, t):
    """Layer j+1's query and key at token t, with node (kind, j, t) restored, by one full
    forward of the corrupted row (no prefix reuse)."""
    lm, ad = tracer.lm, tracer.adapter
    start, end = corruption.span
    got = {}
    with torch.no_grad(), lm.trace(corruption.ids[row : row + 1]):
        emb = get_module(lm, ad.embed).output
        emb[:, start:end] += corruption.noise[row : row + 1]
        for layer in range(j + 2):
            if layer == j + 1:
                args, _kwargs = attention_op(get_module(lm, ad.path("attn", layer))).inputs
                got["q"], got["k"] = args[1][0, :, t].clone(), args[2][0, :, t].clone()
            elif layer == j:
                out = get_module(lm, ad.path(kind, layer)).output
                hidden_of(out, ad.form(kind))[0, t] = clean.states[kind][j][t]
    return got["q"], got["k"]


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt_neox"])
def test_patched_queries_and_keys_equal_a_full_forward(family):
    tracer, ids, _settings, corruption = _setup(family)
    clean = tracer.clean_run(ids)
    patched = _patched_qk(tracer, ids, SPAN, ["hidden", "mlp", "attn"], clean, corruption)
    for kind in ("hidden", "mlp", "attn"):
        for j in range(tracer.num_layers - 1):
            for t in (SPAN[0], SPAN[1], 11):
                for row in range(corruption.rows):
                    q, k = _full_forward_qk(tracer, corruption, row, clean, kind, j, t)
                    qs, ks = patched[(kind, j)]
                    torch.testing.assert_close(qs[row, t - SPAN[0]], q, atol=1e-10, rtol=0)
                    torch.testing.assert_close(ks[row, t - SPAN[0]], k, atol=1e-10, rtol=0)


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2", "phi3"])
def test_qk_terms_equal_brute_force_softmax(family):
    """The exact term: sum_q <dM/dA_q, A'_q - A_q> with A' recomputed from scratch with the
    patched query and key (softcapping, sliding window, fused projections included)."""
    tracer, ids, _settings, corruption = _setup(family)
    clean = tracer.clean_run(ids)
    patched = _patched_qk(tracer, ids, SPAN, ["hidden", "mlp"], clean, corruption)
    row = 1
    run = _grad_forward(tracer, corruption, row, target=7, qk=True, gates=False)
    grads = run.gradients()
    for a in range(1, tracer.num_layers):
        attn = rebuild_attention(run, a)  # raises unless it reproduces the model's output
        for kind in ("hidden", "mlp"):
            qp, kp = patched[(kind, a - 1)]
            side = qk_forward_side(attn, qp[row], kp[row], SPAN[0])
            exact, linear = qk_fix_terms(side, grads.o[a][0], grads.q[a][0], grads.k[a][0])
            d_out = grads.o[a][0].double()
            grad_a = torch.einsum("qhd,hsd->hqs", d_out, attn["v_exp"])
            groups = attn["groups"]
            for i, t in enumerate(range(SPAN[0], 12)):
                q, k = attn["q"].clone(), attn["k"].clone()
                q[:, t], k[:, t] = qp[row, i].double(), kp[row, i].double()
                scores = torch.einsum("hqd,hsd->hqs", q, k.repeat_interleave(groups, 0))
                scores = scores * attn["scale"]
                if attn["softcap"] is not None:
                    scores = attn["softcap"] * torch.tanh(scores / attn["softcap"])
                new = torch.softmax(scores.masked_fill(~attn["allowed"], -math.inf), -1)
                want = float((grad_a * (new - attn["probs"])).sum())
                assert float(exact[i]) == pytest.approx(want, abs=1e-12, rel=1e-9)
                lin = (grads.q[a][0][:, t].double() * (q[:, t] - attn["q"][:, t])).sum() + (
                    grads.k[a][0][:, t].double() * (k[:, t] - attn["k"][:, t])
                ).sum()
                assert float(linear[i]) == pytest.approx(float(lin), abs=1e-12, rel=1e-9)


def test_graddrop_gate_drops_one_layers_contribution():
    tracer, ids, _settings, corruption = _setup("llama")
    run = _grad_forward(tracer, corruption, 0, target=7, qk=False, gates=True)
    full = run.gradients()
    run.mask[1] = 0.0
    dropped = run.gradients()
    # layer 1's own attention/MLP get no gradient; layers above are untouched
    assert (dropped.acts["attn"][1] == 0).all() and (dropped.acts["mlp"][1] == 0).all()
    for layer in (1,):
        torch.testing.assert_close(dropped.acts["hidden"][layer], full.acts["hidden"][layer])
    # below: the gradient that flows only through layer 1's skip connection, by brute force
    model = tracer.model
    start, end = corruption.span
    handles = [
        get_module(model, tracer.adapter.embed).register_forward_hook(
            lambda _m, _a, out: (
                out + torch.nn.functional.pad(corruption.noise[:1], (0, 0, start, 12 - end))
            )
        )
    ]
    kept = {}

    def keep(layer):
        def hook(_m, _a, out):
            out.retain_grad()
            kept[layer] = out

        return hook

    def skip_only(_m, args, out):
        return args[0] + (out - args[0]).detach()

    handles.append(model.model.layers[0].register_forward_hook(keep(0)))
    handles.append(model.model.layers[1].register_forward_hook(skip_only))
    try:
        logits = model(ids).logits
        (torch.softmax(logits[0, -1], -1)[7] / corruption.rows).backward()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
    torch.testing.assert_close(dropped.acts["hidden"][0], kept[0].grad, atol=1e-12, rtol=1e-9)
    assert not torch.allclose(full.acts["hidden"][0], kept[0].grad)


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_screens_on_every_family(family):
    tracer, ids, settings, corruption = _setup(family, dtype=torch.float32)
    result = tracer.trace(ids[0], SPAN, settings, corruption=corruption)
    est = screen_estimates(tracer, ids[0], SPAN, settings, result.target_id, SCREENS, corruption)
    assert set(est) == set(SCREENS)
    for screen, grids in est.items():
        for grid in grids.values():
            assert grid.shape == (12, tracer.num_layers) and np.isfinite(grid).all()
            assert (grid[: SPAN[0]] == 0).all() and np.abs(grid[SPAN[0] :]).max() > 0
            if screen == "atp_star":
                assert (grid >= 0).all()
    # the QK fix changes estimates only through the attention of the next layer: never for
    # cells that restore the last layer's states alone
    last = tracer.num_layers - 1
    np.testing.assert_allclose(
        est["atp_qk"]["hidden"][:, last], est["atp"]["hidden"][:, last], atol=1e-12
    )
    assert not np.allclose(est["atp_qk"]["hidden"][:, 0], est["atp"]["hidden"][:, 0])
    table = screen_agreement(result, est)
    assert len(table) == len(SCREENS) * 3
    assert table.loc[table.screen == "atp_star", "spearman"].isna().all()
    assert table["spearman_abs"].between(-1, 1).all()
    assert table["false_negative_rate"].between(0, 1).all()


def test_false_negative_rate():
    exact = np.array([1.0, 0.5, 0.05, 0.0, -0.8])
    # important (>= 10% of 1.0): cells 0, 1, 4; the screen's top 3 by magnitude: 0, 2, 3
    rate, count = false_negative_rate(exact, np.array([9.0, 0.1, 5.0, 4.0, 0.2]))
    assert count == 3 and rate == pytest.approx(2 / 3)
    assert false_negative_rate(exact, -exact) == (0.0, 3)  # magnitudes: the sign is no miss
    assert math.isnan(false_negative_rate(np.zeros(3), np.ones(3))[0])


def test_unknown_screen_is_an_error():
    tracer, ids, settings, _corruption = _setup("llama")
    with pytest.raises(ValueError, match="screens"):
        screen_estimates(tracer, ids[0], SPAN, settings, 7, ("atp", "acdc"))


def test_screens_work_with_gradients_turned_off():
    tracer, ids, settings, corruption = _setup("llama", dtype=torch.float32)
    with torch.no_grad():
        est = screen_estimates(tracer, ids[0], SPAN, settings, 7, ("atp",), corruption)
    assert np.abs(est["atp"]["hidden"]).max() > 0
