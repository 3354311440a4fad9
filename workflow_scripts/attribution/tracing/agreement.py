"""How well a gradient screen (:mod:`attribution.tracing.patching`) ranks the cells of the exact
causal trace: Spearman rank correlation and the false-negative rate (Kramar et al. 2024, AtP*,
section 5: a screen is used to pick which cells to verify exactly, so the failure that matters is
an important cell it ranks low).

Pure numpy/pandas: used by the trace job (log), the CLI and the trace summary
(``results/{model}/trace/screens.parquet``: one row per problem, screen and kind with the columns
of :data:`AGREEMENT_COLUMNS`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

# screen -> (long-frame column, whether the column is a score ``low + estimate`` (signed) or an
# unsigned magnitude of the indirect effect)
SCREEN_COLUMNS = {
    "atp": ("ap_score", True),
    "atp_qk": ("atp_qk_score", True),
    "atp_star": ("atp_star_magnitude", False),
}
# an exact-trace cell is important when its |indirect effect| is at least this share of the
# largest one of its kind and problem
IMPORTANT_SHARE = 0.1
AGREEMENT_COLUMNS = [
    "screen",
    "kind",
    "spearman",
    "spearman_abs",
    "false_negative_rate",
    "n_important",
    "n_cells",
]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    ra = pd.Series(np.ravel(a)).rank().to_numpy()
    rb = pd.Series(np.ravel(b)).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def false_negative_rate(
    exact: np.ndarray, estimate: np.ndarray, share: float = IMPORTANT_SHARE
) -> tuple[float, int]:
    """``(rate, n_important)``: the important cells are those with ``|exact|`` at least
    ``share`` of the largest; the screen keeps as many cells as there are important ones, those
    with its largest ``|estimate|``; a false negative is an important cell it does not keep.
    NaN when no cell has an effect."""
    exact, estimate = np.abs(np.ravel(exact)), np.abs(np.ravel(estimate))
    top = exact.max(initial=0.0)
    if not top > 0:
        return float("nan"), 0
    important = exact >= share * top
    count = int(important.sum())
    kept = np.zeros_like(important)
    kept[np.argsort(-estimate, kind="stable")[:count]] = True
    return float((important & ~kept).sum() / count), count


def agreement_row(
    screen: str, kind: str, exact: np.ndarray, estimate: np.ndarray, signed: bool
) -> dict:
    """One row of the agreement table; ``exact``: indirect effects, ``estimate``: the screen's
    (signed estimate of the indirect effect, or an unsigned magnitude)."""
    rate, count = false_negative_rate(exact, estimate)
    return {
        "screen": screen,
        "kind": kind,
        "spearman": spearman(exact, estimate) if signed else math.nan,
        "spearman_abs": spearman(np.abs(exact), np.abs(estimate)),
        "false_negative_rate": rate,
        "n_important": count,
        "n_cells": int(np.size(exact)),
    }


def frame_agreement(cells: pd.DataFrame) -> pd.DataFrame:
    """Per problem, screen and kind, from long per-problem trace frames (may be empty or carry
    no screen): the agreement over the computed cells. Columns: ``problem`` + AGREEMENT_COLUMNS."""
    columns = ["problem", *AGREEMENT_COLUMNS]
    rows = []
    if not cells.empty:
        computed = cells[cells["computed"].astype(bool)]
        for (problem, kind), part in computed.groupby(["problem", "kind"], sort=False):
            exact = part["indirect_effect"].to_numpy(dtype=float)
            for screen, (column, is_score) in SCREEN_COLUMNS.items():
                if column not in part or part[column].isna().all():
                    continue
                estimate = part[column].to_numpy(dtype=float)
                if is_score:
                    estimate = estimate - part["low"].to_numpy(dtype=float)
                rows.append(
                    {"problem": problem, **agreement_row(screen, kind, exact, estimate, is_score)}
                )
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({"problem": object, "screen": object, "kind": object})
