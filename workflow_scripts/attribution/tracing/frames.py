"""Long-format tables of a trace, the contract read by the summary and the figures.

``results/{model}/trace/problems/{task_id}.parquet``, one row per cell (kind x token x layer),
skipped cells (tokens before the span, exactly zero effect) included:

==================  ===========================================================================
problem             task id
kind                ``hidden`` | ``mlp`` | ``attn``
layer               0-based layer (``hidden``: output of block ``layer``; mlp/attn: window centre)
token_index         0-based position in the traced input
token_text          the characters of the token (from the offset mapping)
in_span             token lies in the corrupted span
bucket              ``before`` | ``first_span`` | ``middle_span`` | ``last_span`` |
                    ``first_after`` | ``further`` | ``last_token`` (see :func:`token_bucket`)
score               p(t, l): mean over corrupted rows of softmax(last logits)[target]
low, high           all-corrupted p and clean p
indirect_effect     score - low
computed            False for skipped cells (score == low exactly)
ap_score            attribution-patching estimate of score (low + linear estimate; NaN when the
                    screen did not run), see :mod:`attribution.tracing.patching`
atp_qk_score        the same with AtP*'s QK fix (NaN when that screen did not run)
atp_star_magnitude  AtP* (QK fix + GradDrop) estimate of |indirect effect| (NaN: did not run)
sigma               embedding std the noise was scaled from (NaN when the scale was given)
noise, samples, window, seed      the settings (noise NaN for ``replace``; samples = corrupted rows)
corruption          ``noise`` (ROME's Gaussian noise) | ``replace`` (symmetric token replacement)
corruption_sources  ``replace``: the task ids whose tokens replaced the span, comma-separated
target_id, target_text, target_is_top1, span_start, span_end, num_tokens, span_kind
==================  ===========================================================================
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from attribution.tracing.agreement import SCREEN_COLUMNS
from attribution.tracing.engine import TraceResult

BUCKETS = (
    "before",
    "first_span",
    "middle_span",
    "last_span",
    "first_after",
    "further",
    "last_token",
)


def token_bucket(t: int, span: tuple[int, int], length: int) -> str:
    """ROME's token groups (Meng et al. 2022, figure 2). A one-token span counts as its last
    token; the prompt's last token is ``last_token`` even when it directly follows the span."""
    start, end = span
    if t < start:
        return "before"
    if t == end - 1:
        return "last_span"
    if t == start:
        return "first_span"
    if t < end:
        return "middle_span"
    if t == length - 1:
        return "last_token"
    if t == end:
        return "first_after"
    return "further"


def result_frame(
    result: TraceResult,
    problem: str,
    token_texts: list[str],
    target_text: str,
    target_is_top1: bool,
    sigma: float = math.nan,
    span_kind: str = "chars",
    estimates: dict[str, np.ndarray] | None = None,
    screens: dict[str, dict[str, np.ndarray]] | None = None,
) -> pd.DataFrame:
    """One row per (kind, token, layer) cell; columns as in the module docstring.
    ``screens``: screen -> kind -> (T, L) estimates (:func:`patching.screen_estimates`);
    ``estimates`` alone is plain AtP's."""
    screens = dict(screens or {})
    if estimates is not None:
        screens.setdefault("atp", estimates)
    length = len(result.input_ids)
    if len(token_texts) != length:
        raise ValueError(f"{len(token_texts)} token texts for {length} tokens")
    start, end = result.span
    rows = []
    for kind, grid in result.scores.items():
        for t in range(length):
            bucket = token_bucket(t, result.span, length)
            for layer in range(result.num_layers):
                score = float(grid[t, layer])
                rows.append(
                    (
                        kind,
                        layer,
                        t,
                        token_texts[t],
                        start <= t < end,
                        bucket,
                        score,
                        score - result.low,
                        bool(result.computed[t]),
                    )
                )
    frame = pd.DataFrame(
        rows,
        columns=[
            "kind",
            "layer",
            "token_index",
            "token_text",
            "in_span",
            "bucket",
            "score",
            "indirect_effect",
            "computed",
        ],
    )
    for screen, (column, is_score) in SCREEN_COLUMNS.items():
        frame[column] = math.nan
        if screen in screens:
            values = np.concatenate([np.ravel(screens[screen][k]) for k in result.scores])
            frame[column] = values + (result.low if is_score else 0.0)
    s = result.settings
    frame.insert(0, "problem", problem)
    frame["low"] = result.low
    frame["high"] = result.high
    frame["sigma"] = float(sigma)
    frame["noise"] = math.nan if s.noise is None else float(s.noise)
    frame["samples"] = result.corrupted_rows
    frame["window"] = s.window
    frame["seed"] = s.seed
    frame["target_id"] = result.target_id
    frame["target_text"] = target_text
    frame["target_is_top1"] = bool(target_is_top1)
    frame["span_start"] = start
    frame["span_end"] = end
    frame["num_tokens"] = length
    frame["span_kind"] = span_kind
    frame["corruption"] = s.corruption
    frame["corruption_sources"] = ",".join(result.sources)
    return frame
