"""The pipeline's trace jobs, one function per rule (the workflow_scripts entry points call
these): select problems, trace one problem, activation norms, summary. Also used by the CLI."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from attribution import provenance
from attribution.io import write_parquet
from attribution.provenance import with_columns
from attribution.tracing.agreement import AGREEMENT_COLUMNS, frame_agreement
from attribution.tracing.corruption import (
    Corruption,
    draw_replacements,
    replacement_corruption,
)
from attribution.tracing.engine import CausalTracer, TraceSettings
from attribution.tracing.frames import result_frame
from attribution.tracing.noise import embedding_sigma
from attribution.tracing.norms import activation_norms, empty_norms
from attribution.tracing.patching import SCREENS, screen_agreement, screen_estimates
from attribution.tracing.selection import select_problems
from attribution.tracing.spans import TraceInput, prepare_cruxeval
from attribution.tracing.summary import summarize

log = logging.getLogger("attribution.tracing")


@dataclass(frozen=True)
class CruxRow:
    task_id: str
    prompt: str
    answer_prefix: str
    code: str
    input: str
    output: str


def read_cruxeval_prompts(path: str | os.PathLike[str]) -> dict[str, CruxRow]:
    """CRUXEval-O prompt rows by task id (``reference`` is JSON with code, input, output)."""
    frame = pd.read_parquet(path)
    missing = {"task_id", "prompt", "answer_prefix", "reference"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    rows = {}
    for record in frame.to_dict("records"):
        task_id = str(record["task_id"])
        try:
            ref = json.loads(record["reference"])
            rows[task_id] = CruxRow(
                task_id,
                record["prompt"],
                record["answer_prefix"],
                ref["code"],
                ref["input"],
                ref["output"],
            )
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: task {task_id}: bad reference field ({exc})") from exc
    return rows


def load_tracer(
    model: str, revision: str | None = None, dtype: str = "auto", device: str | None = None
) -> tuple[CausalTracer, Any]:
    """Load through the project's one loading path, then self-test the adapter."""
    from attribution.models.loading import load_model_and_tokenizer

    loaded = load_model_and_tokenizer(model, revision=revision, dtype=dtype, device=device)
    return CausalTracer(loaded.model, loaded.tokenizer), loaded.tokenizer


def noise_scale(
    tracer: CausalTracer,
    tokenizer: Any,
    texts: Sequence[str],
    noise: float | None,
    noise_sigmas: float | None,
) -> tuple[float, float]:
    """``(nu, sigma)``: ``nu = noise`` as given (sigma NaN), or ``noise_sigmas * sigma`` with sigma
    measured over ``texts``. Exactly one of the two must be set."""
    if (noise is None) == (noise_sigmas is None):
        raise ValueError(
            "give exactly one of noise (absolute scale) and noise_sigmas (multiple of sigma)"
        )
    if noise is not None:
        return float(noise), math.nan
    sigma = embedding_sigma(tracer.model, tokenizer, tracer.adapter, texts)
    return float(noise_sigmas) * sigma, sigma


def trace_input(tokenizer: Any, row: CruxRow, span_kind: str) -> TraceInput:
    return prepare_cruxeval(
        tokenizer, row.prompt, row.answer_prefix, row.code, row.input, row.output, span_kind
    )


def token_texts(prepared: Any) -> list[str]:
    return [prepared.text[s:e] for s, e in prepared.offsets]


def screen_list(value: Any) -> tuple[str, ...]:
    """The screens a ``trace.screen`` value asks for: false -> none, true -> plain AtP, or a
    list of names from :data:`attribution.tracing.patching.SCREENS`."""
    if value is None or value is False:
        return ()
    if value is True:
        return ("atp",)
    names = [value] if isinstance(value, str) else list(value)
    unknown = [n for n in names if n not in SCREENS]
    if unknown:
        raise ValueError(f"trace.screen: {unknown} are not screens; choose from {list(SCREENS)}")
    return tuple(dict.fromkeys(names))


def log_agreement(table: pd.DataFrame) -> None:
    for row in table.itertuples():
        log.info(
            "screen %s vs exact trace, %s: Spearman %.3f (of magnitudes %.3f), false negatives "
            "%.3f of %d important cells, over %d cells",
            row.screen,
            row.kind,
            row.spearman,
            row.spearman_abs,
            row.false_negative_rate,
            row.n_important,
            row.n_cells,
        )


def trace_frame(
    tracer: CausalTracer,
    problem: str,
    inp: TraceInput,
    settings: TraceSettings,
    sigma: float,
    progress: bool = False,
    screens: Sequence[str] = (),
    corruption: Corruption | None = None,
) -> pd.DataFrame:
    """Trace one prepared input and return its long frame (:mod:`attribution.tracing.frames`);
    with ``screens`` also their estimates (``ap_score``, ``atp_qk_score``,
    ``atp_star_magnitude``), whose agreement with the exact trace is logged per kind."""
    prepared = inp.prompt
    result = tracer.trace(
        prepared.input_ids,
        inp.span,
        settings,
        prepared.target_id,
        progress=progress,
        corruption=corruption,
    )
    estimates = None
    if screens:
        estimates = screen_estimates(
            tracer, prepared.input_ids, inp.span, settings, result.target_id, screens, corruption
        )
        log_agreement(screen_agreement(result, estimates))
    target_text = prepared.target_text if prepared.target_text is not None else ""
    return result_frame(
        result,
        problem,
        token_texts(prepared),
        target_text,
        result.clean_top1 == result.target_id,
        sigma=sigma,
        span_kind=inp.span_kind,
        screens=estimates,
    )


def cruxeval_replacement(
    tokenizer: Any,
    rows: dict[str, CruxRow],
    task_id: str,
    inp: TraceInput,
    samples: int,
    seed: int,
) -> Corruption:
    """Symmetric token replacement for one CRUXEval-O problem: the span (input literal, or the
    function body) replaced by other problems' input literals (bodies) that tokenize to the same
    tokens around it (:func:`attribution.tracing.corruption.draw_replacements`)."""
    row = rows[task_id]
    if inp.span_kind == "input":
        candidates = [(t, r.input) for t, r in rows.items() if t != task_id]
    elif inp.span_kind == "body":
        candidates = [
            (t, r.code.split("\n", 1)[1])
            for t, r in rows.items()
            if t != task_id and "\n" in r.code
        ]
    else:
        raise ValueError(
            f"corruption 'replace' has no replacement for span {inp.span_kind!r} (every CRUXEval "
            "function is named f); use span input or body, or corruption noise"
        )
    text = row.prompt + row.answer_prefix
    tokens, sources = draw_replacements(
        tokenizer,
        text,
        row.output,
        inp.prompt.input_ids,
        inp.char_span,
        inp.span,
        candidates,
        samples,
        seed,
    )
    span_len = inp.span[1] - inp.span[0]
    if not tokens:
        raise ValueError(
            f"task {task_id}: no other CRUXEval {inp.span_kind} of the benchmark tokenizes to the "
            f"same {span_len} token(s) in its place; corruption 'replace' cannot corrupt it "
            "(use corruption noise)"
        )
    if len(tokens) < samples:
        log.warning(
            "task %s: only %d of %d replacement(s) tokenize to the span's %d token(s)",
            task_id,
            len(tokens),
            samples,
            span_len,
        )
    log.info("task %s: span replaced by the %s of %s", task_id, inp.span_kind, ", ".join(sources))
    return replacement_corruption(torch.tensor(inp.prompt.input_ids), inp.span, tokens, sources)


def run_select(
    executions: str, prompts: str, out: str, max_problems: int, force: Sequence[str], greedy: bool
) -> pd.DataFrame:
    exec_frame = pd.read_parquet(executions)
    selected = select_problems(
        exec_frame, pd.read_parquet(prompts), max_problems, force, greedy, source=executions
    )
    if selected.empty:
        log.warning("the model answers no CRUXEval-O problem correctly: nothing to trace")
    else:
        log.info("selected %d problem(s) (%s)", len(selected), selected["reason"].iloc[0])
    write_parquet(selected, out)
    return selected


def run_causal_trace(
    model: str,
    prompts: str,
    task_id: str,
    out: str,
    settings: dict[str, Any],
    revision: str | None = None,
    dtype: str = "auto",
    code: str = "",
) -> pd.DataFrame:
    """One problem: ``settings`` = the config's ``trace`` block items the job depends on
    (kinds, samples, corruption, noise | noise_sigmas, window, seed, span, batch_rows, screen);
    ``code`` goes into the provenance columns."""
    rows = read_cruxeval_prompts(prompts)
    if task_id not in rows:
        raise ValueError(f"{prompts}: no CRUXEval-O task {task_id!r}")
    screens = screen_list(settings.get("screen", False))
    kind = settings.get("corruption", "noise")
    tracer, tokenizer = load_tracer(model, revision, dtype)
    inp = trace_input(tokenizer, rows[task_id], settings.get("span", "input"))
    corruption = None
    if kind == "noise":
        nu, sigma = _pipeline_noise(tracer, tokenizer, rows, settings)
    else:
        nu, sigma = None, math.nan
        corruption = cruxeval_replacement(
            tokenizer, rows, task_id, inp, int(settings["samples"]), int(settings["seed"])
        )
    trace_settings = TraceSettings(
        noise=nu,
        kinds=tuple(settings["kinds"]),
        samples=int(settings["samples"]),
        window=int(settings["window"]),
        seed=int(settings["seed"]),
        max_rows=settings.get("batch_rows"),
        corruption=kind,
    )
    frame = trace_frame(
        tracer,
        task_id,
        inp,
        trace_settings,
        sigma,
        progress=True,
        screens=screens,
        corruption=corruption,
    )
    log.info(
        "%s: %d tokens, span %s, target %r (clean top-1: %s), low %.4g high %.4g, sigma %.4g",
        task_id,
        len(inp.prompt.input_ids),
        inp.span,
        inp.prompt.target_text,
        bool(frame["target_is_top1"].iloc[0]),
        frame["low"].iloc[0],
        frame["high"].iloc[0],
        sigma,
    )
    frame = with_columns(frame, trace_provenance(tracer, code, settings))
    write_parquet(frame, out)
    return frame


def run_activation_norms(
    model: str,
    prompts: str,
    selected: str,
    out: str,
    settings: dict[str, Any],
    revision: str | None = None,
    dtype: str = "auto",
    code: str = "",
) -> pd.DataFrame:
    """Norms on the selected problems' trace inputs; ``settings`` as for :func:`run_causal_trace`
    (span kind, and the noise scale for the ``noise_norm`` column)."""
    ids = list(pd.read_parquet(selected)["task_id"].astype(str))
    if not ids:
        log.warning("no selected problems: writing an empty activation-norm table")
        frame = with_columns(empty_norms(), trace_provenance(None, code, settings))
    else:
        rows = read_cruxeval_prompts(prompts)
        tracer, tokenizer = load_tracer(model, revision, dtype)
        nu = math.nan  # token replacement adds no noise
        if settings.get("corruption", "noise") == "noise":
            nu, _sigma = _pipeline_noise(tracer, tokenizer, rows, settings)
        span = settings.get("span", "input")
        frame = pd.concat(
            [
                activation_norms(
                    tracer, t, trace_input(tokenizer, rows[t], span).prompt.input_ids, nu
                )
                for t in ids
            ],
            ignore_index=True,
        )
        frame = with_columns(frame, trace_provenance(tracer, code, settings))
    write_parquet(frame, out)
    return frame


def _pipeline_noise(
    tracer: CausalTracer, tokenizer: Any, rows: dict[str, CruxRow], settings: dict[str, Any]
) -> tuple[float, float]:
    # sigma as in ROME: over the corrupted spans (input literals) of the whole benchmark
    texts = [r.input for r in rows.values()]
    return noise_scale(
        tracer, tokenizer, texts, settings.get("noise"), settings.get("noise_sigmas")
    )


def run_trace_summary(
    problem_files: Sequence[str], out: str, screens_out: str | None = None, code: str = ""
) -> pd.DataFrame:
    """AIE summary of the traced problems; with ``screens_out`` also every screen's agreement
    with the exact trace per problem and kind (:func:`attribution.tracing.agreement.frame_agreement`),
    logged as means over problems."""
    frames = [pd.read_parquet(p) for p in problem_files]
    cells = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if cells.empty:
        log.warning("no traced problems: writing an empty summary")
        made = trace_provenance(None, code, {})
    else:
        made = {**provenance.merged(cells, "traced problems"), "code": code}
        if any(" | " in str(v) for v in made.values()):
            log.warning("the traced problems were made differently: %s", made)
    summary = with_columns(summarize(cells), made)
    write_parquet(summary, out)
    if screens_out is not None:
        agreement = frame_agreement(cells)
        if not agreement.empty:
            means = agreement.groupby(["screen", "kind"], as_index=False, sort=False)[
                [c for c in AGREEMENT_COLUMNS if c not in ("screen", "kind")]
            ].mean()
            log.info(
                "screens vs exact trace, means over %d problem(s):", agreement.problem.nunique()
            )
            log_agreement(means)
        write_parquet(with_columns(agreement, made), screens_out)
    return summary


def trace_provenance(
    tracer: CausalTracer | None, code: str, settings: dict[str, Any]
) -> dict[str, Any]:
    """The provenance record of a trace job (attribution.provenance); batch size: the
    configured rows per forward (-1: fitted to free memory per forward)."""
    param = next(tracer.model.parameters()) if tracer is not None else None
    return provenance.record(
        code=code,
        backend="nnsight",
        device=param.device if param is not None else None,
        dtype=param.dtype if param is not None else None,
        batch_size=settings.get("batch_rows"),
        libraries=("torch", "transformers", "nnsight"),
    )


def problem_path(directory: str | os.PathLike[str], task_id: str) -> Path:
    return Path(directory) / f"{task_id}.parquet"
