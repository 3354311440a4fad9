"""Gradient screens of a causal trace: attribution patching and AtP*, each compared with the
exact trace (rank agreement, false negatives).

``atp`` (Nanda 2023, "Attribution Patching: Activation Patching At Industrial Scale"): a
first-order estimate of every cell's restoration effect from one clean forward and one corrupted
forward/backward per corrupted row. For cell ``(t, l)`` and corrupted row ``i``, restoring
activation ``a`` changes the metric ``M = mean_i p_i(target)`` by about
``(a_clean[t] - a_i[t]) . dM/da_i[t]``; summed over rows this estimates ``p(t, l) - low``.
Window kinds (mlp/attn) restore several layers at once; their estimate is the sum over the
restored layers (linear in the patches).

``atp_qk`` (Kramar et al. 2024, "AtP*: An efficient and scalable method for localizing LLM
behaviour to components", section 3.1.1, the QK fix): AtP linearizes through the attention
softmax and misses effects that saturated attention hides. A cell's patch at layer ``j`` changes
the query and the key at token ``t`` of the next attention layer ``j + 1``; those changes are
recomputed exactly (a one-position forward per cell, with the engine's prefix reuse), the
attention pattern of layer ``j + 1`` is recomputed with the patched query and key (the query's
row, and the key's column of every later query, renormalized), and only the step from that
pattern on is linear: ``sum_q <dM/dA_q, A'_q - A_q>`` replaces the linear query/key term
``<dM/dq_t, dq_t> + <dM/dk_t, dk_t>``. Every other path stays first order, as in AtP*. The
attention is rebuilt from the query/key/value the model passes to its attention function
(scaling, logit soft-capping, causal and sliding-window masks); a layer whose rebuilt output
differs from the model's is an error, never a silent estimate.

``atp_star`` (AtP*: the QK fix plus GradDrop, section 3.1.2, equation 11): the gradient is
recomputed ``L`` times, each time dropping the gradient through one layer's residual
contribution (the block's output keeps its skip connection's gradient), and the estimate is
``1/(L-1) sum_l |I_l(cell)|`` per corrupted row, averaged over rows: an unsigned magnitude that
a cancellation between paths cannot zero.

The exact trace stays the reference: :func:`screen_agreement` reports, per screen and kind, the
Spearman rank correlation with the exact indirect effect (signed, and of magnitudes) and the
false-negative rate (:mod:`attribution.tracing.agreement`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from attribution.tracing.adapters import KINDS, as_output, get_module, hidden_of
from attribution.tracing.agreement import (
    AGREEMENT_COLUMNS,
    SCREEN_COLUMNS,
    agreement_row,
    false_negative_rate,
    spearman,
)
from attribution.tracing.corruption import Corruption
from attribution.tracing.engine import (
    CausalTracer,
    Cell,
    TraceResult,
    TraceSettings,
    cell_start,
    last_probs,
    restored_layers,
)

SCREENS = tuple(SCREEN_COLUMNS)


__all__ = [
    "SCREENS",
    "attribution_patching",
    "false_negative_rate",
    "rank_agreement",
    "screen_agreement",
    "screen_estimates",
    "spearman",
]


def attribution_patching(
    tracer: CausalTracer,
    input_ids: Sequence[int] | torch.Tensor,
    span: tuple[int, int],
    settings: TraceSettings,
    target_id: int,
    corruption: Corruption | None = None,
) -> dict[str, np.ndarray]:
    """Plain AtP: estimated ``p(t, l) - low`` per kind, (T, L) arrays (zero before the span)."""
    return screen_estimates(
        tracer, input_ids, span, settings, target_id, ("atp",), corruption=corruption
    )["atp"]


def screen_estimates(
    tracer: CausalTracer,
    input_ids: Sequence[int] | torch.Tensor,
    span: tuple[int, int],
    settings: TraceSettings,
    target_id: int,
    screens: Sequence[str] = SCREENS,
    corruption: Corruption | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Each screen's estimate of every cell: screen -> kind -> (T, L) array; ``atp``/``atp_qk``
    estimate ``p - low`` (signed), ``atp_star`` its magnitude. Zero before the span."""
    unknown = [s for s in screens if s not in SCREENS]
    if unknown or not screens:
        raise ValueError(f"screens {list(screens)}: each must be one of {SCREENS}")
    ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(1, -1).to(tracer.device)
    length, n_layers = ids.shape[1], tracer.num_layers
    if "atp_star" in screens and n_layers < 2:
        raise ValueError("GradDrop (atp_star) needs a model with at least 2 layers")
    corruption = tracer.checked_corruption(corruption, ids, span, settings)
    kinds = [k for k in KINDS if k in settings.kinds]
    qk = "atp_qk" in screens or "atp_star" in screens
    clean = tracer.clean_run(ids)
    patched = _patched_qk(tracer, ids, span, kinds, clean, corruption) if qk else None
    n = corruption.rows
    nodes = {s: {k: np.zeros((length, n_layers)) for k in kinds} for s in ("atp", "atp_qk")}
    star = {k: np.zeros((length, n_layers)) for k in kinds}
    for row in range(n):
        run = _grad_forward(tracer, corruption, row, target_id, qk, "atp_star" in screens)
        deltas = {
            k: [clean.states[k][j] - run.acts[k][j].detach()[0] for j in range(n_layers)]
            for k in kinds
        }
        qk_side = _forward_side(run, patched, span, row, kinds) if qk else None
        drops: list[int | None] = [None] + (list(range(n_layers)) if "atp_star" in screens else [])
        for drop in drops:
            run.mask.fill_(1.0)
            if drop is not None:
                run.mask[drop] = 0.0
            grads = run.gradients()
            linear = {k: _node_grid(deltas[k], grads.acts[k], length) for k in kinds}
            fixed = linear
            if qk_side is not None:
                fixed = {k: linear[k] + _qk_fix(qk_side[k], grads, length) for k in kinds}
            if drop is None:
                for k in kinds:
                    nodes["atp"][k] += linear[k]
                    nodes["atp_qk"][k] += fixed[k]
            else:
                for k in kinds:
                    star[k] += np.abs(_cells(k, fixed[k], settings.window)) / (n_layers - 1)
        del run
    out: dict[str, dict[str, np.ndarray]] = {}
    for screen in screens:
        grids = (
            star
            if screen == "atp_star"
            else {k: _cells(k, nodes[screen][k], settings.window) for k in kinds}
        )
        for grid in grids.values():
            grid[: span[0]] = 0.0  # identical states before the span: the exact effect is zero
        out[screen] = grids
    return out


def _cells(kind: str, node_grid: np.ndarray, window: int) -> np.ndarray:
    """Cell estimates from single-layer (node) estimates: a window cell sums its layers."""
    n_layers = node_grid.shape[1]
    grid = np.zeros_like(node_grid)
    for layer in range(n_layers):
        layers = list(restored_layers(kind, layer, n_layers, window))
        grid[:, layer] = node_grid[:, layers].sum(axis=1)
    return grid


def _node_grid(deltas: list[torch.Tensor], grads: list[torch.Tensor], length: int) -> np.ndarray:
    cols = [(d.double() * g[0].double()).sum(dim=-1) for d, g in zip(deltas, grads, strict=True)]
    return torch.stack(cols, dim=1).cpu().numpy()


# -- one corrupted row's forward with gradients ------------------------------------------------
class _DropGate(torch.autograd.Function):
    """Identity on a block's output; backward sends ``mask[l] * g`` through the block (its
    residual contribution) and ``(1 - mask[l]) * g`` straight to the block's input (the skip
    connection), so ``mask[l] = 0`` drops layer ``l``'s contribution from the gradient only."""

    @staticmethod
    def forward(ctx: Any, out: torch.Tensor, inp: torch.Tensor, mask: torch.Tensor, layer: int):
        ctx.mask, ctx.layer = mask, layer
        return out.view_as(out)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        keep = ctx.mask[ctx.layer].to(grad.dtype)
        return grad * keep, grad * (1 - keep), None, None


@dataclass
class _Grads:
    acts: dict[str, list[torch.Tensor]]
    q: list[torch.Tensor]
    k: list[torch.Tensor]
    o: list[torch.Tensor]


@dataclass
class _GradRun:
    acts: dict[str, list[torch.Tensor]]  # kind -> per layer (1, T, hidden), graph tensors
    q: list[torch.Tensor]  # per layer (1, heads, T, d)
    k: list[torch.Tensor]  # per layer (1, kv_heads, T, d)
    v: list[torch.Tensor]
    o: list[torch.Tensor]  # per layer attention-function output (1, T, heads, d)
    attn_kwargs: list[dict[str, Any]]
    metric: torch.Tensor
    mask: torch.Tensor  # GradDrop gates (1 = keep)

    def gradients(self) -> _Grads:
        kinds = [k for k in KINDS if self.acts[k]]
        flat = [a for k in kinds for a in self.acts[k]] + self.q + self.k + self.o
        got = list(torch.autograd.grad(self.metric, flat, retain_graph=True, allow_unused=True))
        got = [torch.zeros_like(t) if g is None else g for g, t in zip(got, flat, strict=True)]
        n_layers = len(self.acts[kinds[0]])
        acts = {k: got[i * n_layers : (i + 1) * n_layers] for i, k in enumerate(kinds)}
        rest = got[len(kinds) * n_layers :]
        L = len(self.q)
        return _Grads(acts, rest[:L], rest[L : 2 * L], rest[2 * L :])


def _grad_forward(
    tracer: CausalTracer,
    corruption: Corruption,
    row: int,
    target: int,
    qk: bool,
    gates: bool,
) -> _GradRun:
    ad, lm, n_layers = tracer.adapter, tracer.lm, tracer.num_layers
    start, end = corruption.span
    ids = corruption.ids[row : row + 1].to(tracer.device)
    acts: dict[str, list[torch.Tensor]] = {k: [] for k in KINDS}
    q, k, v, o, kw = [], [], [], [], []
    mask = torch.ones(n_layers)
    with torch.enable_grad(), lm.trace(ids, logits_to_keep=1):
        if corruption.noise is not None:
            emb = get_module(lm, ad.embed).output
            emb[:, start:end] += corruption.noise[row : row + 1].to(emb.device)
        for layer in range(n_layers):
            block = get_module(lm, ad.path("hidden", layer))
            inp = block.input if gates else None
            if qk:
                op = attention_op(get_module(lm, ad.path("attn", layer)))
                args, kwargs = op.inputs
                q.append(args[1])
                k.append(args[2])
                v.append(args[3])
                kw.append({key: val for key, val in kwargs.items() if not torch.is_tensor(val)})
                o.append(op.output[0])
            for kind in ("attn", "mlp"):
                acts[kind].append(
                    hidden_of(get_module(lm, ad.path(kind, layer)).output, ad.form(kind))
                )
            out = block.output
            hidden = hidden_of(out, ad.block_form)
            if gates:
                hidden = _DropGate.apply(hidden, inp, mask, layer)
                block.output = (
                    as_output(hidden, ad.block_form)
                    if ad.block_form == "tensor"
                    else (hidden, *out[1:])
                )
            acts["hidden"].append(hidden)
        logits = lm.output.logits.save()
    with torch.enable_grad():  # callers may have turned gradients off globally
        metric = last_probs(logits)[0, target].double() / corruption.rows
    return _GradRun(acts, q, k, v, o, kw, metric, mask)


def attention_op(envoy: Any) -> Any:
    """The nnsight source operation of the attention module's call to its attention function
    (``attention_interface(self, query, key, value, mask, ...)`` in transformers 5)."""
    names = [n for n in envoy.source.names if re.fullmatch(r"attention_interface_\d+", n)]
    if not names:
        raise ValueError(
            f"{type(envoy._module).__name__} calls no attention_interface: the AtP* QK fix needs "
            "the query, key and value the model passes to its attention function"
        )
    return getattr(envoy.source, max(names, key=lambda n: int(n.rsplit("_", 1)[1])))


# -- the QK fix ---------------------------------------------------------------------------------
def _patched_qk(
    tracer: CausalTracer,
    ids: torch.Tensor,
    span: tuple[int, int],
    kinds: list[str],
    clean: Any,
    corruption: Corruption,
) -> dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]]:
    """For every node (kind, layer j < L-1, token t >= span start) and corrupted row: the query
    and key at token ``t`` of attention layer ``j + 1`` after restoring that node alone.
    (kind, j) -> (queries (n, T', heads, d), keys (n, T', kv_heads, d)), T' = T - span start."""
    n_layers, length, n = tracer.num_layers, ids.shape[1], corruption.rows
    first_t = span[0]
    corrupted = tracer.corrupted_run(corruption)
    out: dict[tuple[str, int], tuple[list, list]] = {
        (k, j): ([None] * (length - first_t), [None] * (length - first_t))
        for k in kinds
        for j in range(n_layers - 1)
    }
    with torch.no_grad():
        for t in range(first_t, length):
            cells = [
                Cell(t, cell_start(kind, range(j, j + 1)), kind, range(j, j + 1))
                for kind in kinds
                for j in range(n_layers - 1)
            ]
            if not cells:
                continue
            rows = tracer.auto_rows(1, t, n)
            per = max(1, rows // n)
            for lo in range(0, len(cells), per):
                chunk = cells[lo : lo + per]
                captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

                def capture(layer: int, envoy: Any, captured=captured) -> None:
                    args, _kwargs = attention_op(envoy).inputs
                    captured[layer] = (args[1][:, :, -1].clone(), args[2][:, :, -1].clone())

                tracer.patched_forward(
                    ids, chunk, clean, corrupted, stop=t + 1, on_attention=capture
                )
                for c, cell in enumerate(chunk):
                    j = cell.layers.start
                    qs, ks = captured[j + 1]
                    out[(cell.kind, j)][0][t - first_t] = qs[c * n : c * n + n]
                    out[(cell.kind, j)][1][t - first_t] = ks[c * n : c * n + n]
    return {key: (torch.stack(qs, dim=1), torch.stack(ks, dim=1)) for key, (qs, ks) in out.items()}


@dataclass
class _QKSide:
    """Gradient-independent parts of one node kind's QK fix at every layer (None: last layer)."""

    layers: list[dict[str, torch.Tensor] | None]
    first_t: int


def _forward_side(
    run: _GradRun,
    patched: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] | None,
    span: tuple[int, int],
    row: int,
    kinds: list[str],
) -> dict[str, _QKSide]:
    assert patched is not None
    n_layers = len(run.q)
    sides = {k: _QKSide([None] * n_layers, span[0]) for k in kinds}
    for a in range(1, n_layers):
        attn = rebuild_attention(run, a)
        for kind in kinds:
            qp, kp = patched[(kind, a - 1)]
            sides[kind].layers[a - 1] = qk_forward_side(attn, qp[row], kp[row], span[0])
    return sides


def rebuild_attention(run: _GradRun, layer: int) -> dict[str, Any]:
    """Layer ``layer``'s attention probabilities rebuilt in float64 from the query, key and value
    the model passed to its attention function; checked against the model's own output."""
    q = run.q[layer].detach()[0].double()  # (H, T, d)
    k = run.k[layer].detach()[0].double()  # (Hkv, T, d)
    v = run.v[layer].detach()[0].double()
    kwargs = run.attn_kwargs[layer]
    heads, length, dim = q.shape
    if kwargs.get("s_aux") is not None:
        raise ValueError("attention sinks are not supported by the AtP* QK fix")
    groups = heads // k.shape[0]
    scale = kwargs.get("scaling")
    scale = dim**-0.5 if scale is None else float(scale)
    softcap = kwargs.get("softcap")
    window = kwargs.get("sliding_window")
    pos = torch.arange(length, device=q.device)
    allowed = pos[None, :] <= pos[:, None]  # [query, key]
    if window is not None:
        allowed &= (pos[:, None] - pos[None, :]) < int(window)
    k_exp = k.repeat_interleave(groups, dim=0)
    v_exp = v.repeat_interleave(groups, dim=0)
    scores = _logits(torch.einsum("hqd,hsd->hqs", q, k_exp), scale, softcap)
    scores = scores.masked_fill(~allowed, -math.inf)
    lse = torch.logsumexp(scores, dim=-1)  # (H, T)
    probs = torch.exp(scores - lse[..., None])
    rebuilt = torch.einsum("hqs,hsd->qhd", probs, v_exp)
    actual = run.o[layer].detach()[0].double()
    err = (rebuilt - actual).abs().max().item()
    tol = 1e-4 if run.o[layer].dtype in (torch.float32, torch.float64) else 5e-2
    if err > tol * max(1.0, actual.abs().max().item()):
        raise ValueError(
            f"AtP* QK fix: the attention of layer {layer} could not be rebuilt from its query, "
            f"key and value (max error {err:.3g}); this attention variant is not supported"
        )
    return {
        "q": q,
        "k": k,
        "k_exp": k_exp,
        "v_exp": v_exp,
        "scale": scale,
        "softcap": softcap,
        "allowed": allowed,
        "lse": lse,
        "probs": probs,
        "groups": groups,
    }


def _logits(raw: torch.Tensor, scale: float, softcap: float | None) -> torch.Tensor:
    scores = raw * scale
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    return scores


def qk_forward_side(
    attn: dict[str, Any], q_new: torch.Tensor, k_new: torch.Tensor, first_t: int
) -> dict[str, torch.Tensor]:
    """For nodes at tokens ``first_t..T-1`` whose patch moves the query and key at their own
    token to ``q_new`` (T', H, d) / ``k_new`` (T', Hkv, d): the column weights ``w[h, q, t']``
    (change of query ``q``'s pattern through key ``t``, see :func:`qk_fix_terms`), the new
    minus old pattern of query ``t`` itself, and the query/key changes."""
    q, k, probs, allowed, lse = attn["q"], attn["k"], attn["probs"], attn["allowed"], attn["lse"]
    scale, softcap, groups = attn["scale"], attn["softcap"], attn["groups"]
    q_new, k_new = q_new.double(), k_new.double()
    kp_exp = k_new.repeat_interleave(groups, dim=1)  # (T', H, d)
    length = q.shape[1]
    tok = torch.arange(first_t, length, device=q.device)
    # key t replaced: every query q > t that sees t renormalizes
    col = _logits(torch.einsum("hqd,thd->hqt", q, kp_exp), scale, softcap)
    a_old = probs[:, :, tok]  # (H, T, T')
    a_new = torch.exp(col - lse[:, :, None])
    later = allowed[:, tok] & (torch.arange(length, device=q.device)[:, None] > tok[None, :])
    weight = torch.where(later[None], (a_new - a_old) / (1 - a_old + a_new), 0.0)
    # query t replaced (and its own key): its whole row is recomputed
    row = _logits(torch.einsum("thd,hsd->ths", q_new, attn["k_exp"]), scale, softcap)
    own = _logits((q_new * kp_exp).sum(-1), scale, softcap)  # (T', H)
    row[torch.arange(len(tok)), :, tok] = own
    row = row.masked_fill(~allowed[tok][:, None, :], -math.inf)
    row_delta = torch.softmax(row, dim=-1) - probs[:, tok].transpose(0, 1)  # (T', H, T)
    return {
        "weight": weight,
        "row_delta": row_delta,
        "dq": q_new - q[:, tok].transpose(0, 1),  # (T', H, d)
        "dk": k_new - k[:, tok].transpose(0, 1),  # (T', Hkv, d)
        "v_exp": attn["v_exp"],
        "probs": probs,
        "tok": tok,
    }


def qk_fix_terms(
    side: dict[str, torch.Tensor],
    d_out: torch.Tensor,
    g_q: torch.Tensor,
    g_k: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(exact, linear) query/key terms per node token: ``exact = sum_q <G_q, A'_q - A_q>`` with
    ``G = dM/dA = dM/dO V^T`` (``d_out``: dM/d(attention output) (T, H, d)), and
    ``linear = <dM/dq_t, dq_t> + <dM/dk_t, dk_t>`` (``g_q`` (H, T, d), ``g_k`` (Hkv, T, d)).
    For query ``q`` and a changed key ``t`` (old weight ``a``, new ``a'`` before
    renormalization): ``<G_q, A'_q - A_q> = (a' - a) (G_qt - <G_q, A_q>) / (1 - a + a')``."""
    tok, probs = side["tok"], side["probs"]
    grad_a = torch.einsum("qhd,hsd->hqs", d_out.double(), side["v_exp"])  # (H, T, T)
    mean_g = (grad_a * probs).sum(-1)  # (H, T)
    column = (side["weight"] * (grad_a[:, :, tok] - mean_g[:, :, None])).sum(dim=(0, 1))
    own = (grad_a[:, tok].transpose(0, 1) * side["row_delta"]).sum(dim=(1, 2))
    linear = (g_q.double()[:, tok].transpose(0, 1) * side["dq"]).sum(dim=(1, 2)) + (
        g_k.double()[:, tok].transpose(0, 1) * side["dk"]
    ).sum(dim=(1, 2))
    return column + own, linear


def _qk_fix(side: _QKSide, grads: _Grads, length: int) -> np.ndarray:
    """(T, L) correction of single-layer node estimates: exact minus linear query/key term of
    the next attention layer (zero for the last layer and before the span)."""
    n_layers = len(side.layers)
    fix = np.zeros((length, n_layers))
    for j, parts in enumerate(side.layers):
        if parts is None:
            continue
        a = j + 1
        exact, linear = qk_fix_terms(parts, grads.o[a][0], grads.q[a][0], grads.k[a][0])
        fix[side.first_t :, j] = (exact - linear).cpu().numpy()
    return fix


# -- agreement with the exact trace ------------------------------------------------------------
def screen_agreement(
    result: TraceResult, estimates: dict[str, dict[str, np.ndarray]]
) -> pd.DataFrame:
    """Per screen and kind, over the computed cells (tokens from the span start on): Spearman
    correlation of the estimate with the exact indirect effect (``spearman``: signed, NaN for the
    unsigned ``atp_star``; ``spearman_abs``: of magnitudes), and the false-negative rate."""
    rows = []
    for screen, grids in estimates.items():
        for kind, grid in result.scores.items():
            exact = grid[result.computed] - result.low
            approx = grids[kind][result.computed]
            rows.append(agreement_row(screen, kind, exact, approx, SCREEN_COLUMNS[screen][1]))
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)


def rank_agreement(result: TraceResult, estimates: dict[str, np.ndarray]) -> pd.DataFrame:
    """Plain AtP's agreement table (columns kind, spearman, n_cells)."""
    table = screen_agreement(result, {"atp": estimates})
    return table[["kind", "spearman", "n_cells"]].reset_index(drop=True)
