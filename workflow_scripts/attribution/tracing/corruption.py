"""The corrupted runs of a causal trace: what the ``n`` corrupted rows are.

Two corruptions, ``trace.corruption``:

* ``noise`` (the default; Meng et al. 2022, ROME, section 2.1): the clean tokens, with
  ``nu * z`` added to the token-embedding output over the span, ``z`` ROME's standard-normal
  draws (:mod:`attribution.tracing.noise`).
* ``replace`` (Zhang & Nanda 2023, "Towards Best Practices of Activation Patching in Language
  Models: Metrics and Methods", section 3: symmetric token replacement): the span's tokens are
  replaced by those of another CRUXEval problem's input literal (or function body, for the
  ``body`` span) that tokenizes to the same number of tokens in the same place, so the corrupted
  prompt stays in distribution. One row per replacement, at most ``samples`` of them, drawn
  without replacement from the benchmark with ``RandomState(seed)``; no noise.

Either way the corrupted rows differ from the clean input only inside the span, so every state
before the span is identical in the clean and corrupted runs (the engine relies on this).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from attribution.tracing.noise import rome_noise, scaled_noise
from attribution.tracing.spans import prepare_prompt

CORRUPTIONS = ("noise", "replace")


@dataclass(frozen=True)
class Corruption:
    """``ids``: (n, T) corrupted input ids; ``noise``: (n, span_len, hidden) float64 added to the
    token-embedding output over the span, or None; ``sources``: where each replacement row's
    tokens came from (task ids; empty for noise)."""

    kind: str
    span: tuple[int, int]
    ids: torch.Tensor
    noise: torch.Tensor | None = None
    sources: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        return int(self.ids.shape[0])


def gaussian_corruption(
    ids: torch.Tensor, span: tuple[int, int], samples: int, seed: int, nu: float, hidden: int
) -> Corruption:
    """ROME's corruption: ``samples`` rows of the clean ids plus ``nu * z`` over the span."""
    start, end = span
    noise = scaled_noise(rome_noise(seed, samples, end - start, hidden), nu)
    return Corruption("noise", span, ids.reshape(1, -1).repeat(samples, 1), noise)


def replacement_corruption(
    ids: torch.Tensor,
    span: tuple[int, int],
    replacements: Sequence[Sequence[int]],
    sources: Sequence[str] = (),
) -> Corruption:
    """One row per replacement: the clean ids with the span's tokens replaced."""
    start, end = span
    ids = ids.reshape(1, -1)
    if not replacements:
        raise ValueError("corruption 'replace' needs at least one replacement")
    rows = ids.repeat(len(replacements), 1)
    for i, tokens in enumerate(replacements):
        if len(tokens) != end - start:
            raise ValueError(
                f"replacement {i} has {len(tokens)} tokens; the span {span} has {end - start}"
            )
        rows[i, start:end] = torch.as_tensor(list(tokens), dtype=rows.dtype)
    same = (rows[:, start:end] == ids[:, start:end]).all(dim=1)
    if bool(same.any()):
        raise ValueError(
            f"replacement(s) {same.nonzero().flatten().tolist()} equal the span's own tokens"
        )
    return Corruption("replace", span, rows, None, tuple(str(s) for s in sources))


def aligned_replacement(
    tokenizer: Any,
    text: str,
    target: str | None,
    input_ids: Sequence[int],
    char_span: tuple[int, int],
    token_span: tuple[int, int],
    replacement: str,
) -> list[int] | None:
    """The span's tokens when ``text[char_span]`` is replaced by ``replacement``, or None when
    the result does not keep every token outside the span (same count, same ids)."""
    start, end = char_span
    new_text = text[:start] + replacement + text[end:]
    try:
        prepared = prepare_prompt(tokenizer, new_text, target)
    except ValueError:
        return None
    new = prepared.input_ids
    s, e = token_span
    if len(new) != len(input_ids) or list(new[:s]) != list(input_ids[:s]):
        return None
    if list(new[e:]) != list(input_ids[e:]) or list(new[s:e]) == list(input_ids[s:e]):
        return None
    return list(new[s:e])


def draw_replacements(
    tokenizer: Any,
    text: str,
    target: str | None,
    input_ids: Sequence[int],
    char_span: tuple[int, int],
    token_span: tuple[int, int],
    candidates: Sequence[tuple[str, str]],
    samples: int,
    seed: int,
) -> tuple[list[list[int]], list[str]]:
    """Up to ``samples`` aligned replacements from ``candidates`` ((source id, text) pairs),
    visited in a ``RandomState(seed)`` permutation of their sorted order; each text is used once."""
    own = text[char_span[0] : char_span[1]]
    pool = sorted({(source, cand) for source, cand in candidates if cand != own})
    order = np.random.RandomState(seed).permutation(len(pool))
    tokens: list[list[int]] = []
    sources: list[str] = []
    seen: set[str] = set()
    for k in order:
        source, cand = pool[int(k)]
        if cand in seen:
            continue
        got = aligned_replacement(tokenizer, text, target, input_ids, char_span, token_span, cand)
        if got is None:
            continue
        seen.add(cand)
        tokens.append(got)
        sources.append(source)
        if len(tokens) == samples:
            break
    return tokens, sources
