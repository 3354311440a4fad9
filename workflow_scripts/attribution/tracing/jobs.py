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

from attribution import provenance
from attribution.io import write_parquet
from attribution.provenance import with_columns
from attribution.tracing.engine import CausalTracer, TraceSettings
from attribution.tracing.frames import result_frame
from attribution.tracing.noise import embedding_sigma
from attribution.tracing.norms import activation_norms, empty_norms
from attribution.tracing.patching import attribution_patching, rank_agreement
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


def trace_frame(
    tracer: CausalTracer,
    problem: str,
    inp: TraceInput,
    settings: TraceSettings,
    sigma: float,
    progress: bool = False,
    screen: bool = False,
) -> pd.DataFrame:
    """Trace one prepared input and return its long frame (:mod:`attribution.tracing.frames`);
    with ``screen`` also the attribution-patching estimate (``ap_score``), whose Spearman
    agreement with the exact trace is logged per kind."""
    prepared = inp.prompt
    result = tracer.trace(
        prepared.input_ids, inp.span, settings, prepared.target_id, progress=progress
    )
    estimates = None
    if screen:
        estimates = attribution_patching(
            tracer, prepared.input_ids, inp.span, settings, result.target_id
        )
        for row in rank_agreement(result, estimates).itertuples():
            log.info(
                "attribution patching vs exact, %s: Spearman %.3f over %d cells",
                row.kind,
                row.spearman,
                row.n_cells,
            )
    target_text = prepared.target_text if prepared.target_text is not None else ""
    return result_frame(
        result,
        problem,
        token_texts(prepared),
        target_text,
        result.clean_top1 == result.target_id,
        sigma=sigma,
        span_kind=inp.span_kind,
        estimates=estimates,
    )


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
    (kinds, samples, noise | noise_sigmas, window, seed, span, batch_rows, screen); ``code``
    goes into the provenance columns."""
    rows = read_cruxeval_prompts(prompts)
    if task_id not in rows:
        raise ValueError(f"{prompts}: no CRUXEval-O task {task_id!r}")
    tracer, tokenizer = load_tracer(model, revision, dtype)
    nu, sigma = _pipeline_noise(tracer, tokenizer, rows, settings)
    trace_settings = TraceSettings(
        noise=nu,
        kinds=tuple(settings["kinds"]),
        samples=int(settings["samples"]),
        window=int(settings["window"]),
        seed=int(settings["seed"]),
        max_rows=settings.get("batch_rows"),
    )
    inp = trace_input(tokenizer, rows[task_id], settings.get("span", "input"))
    screen = bool(settings.get("screen", False))
    frame = trace_frame(tracer, task_id, inp, trace_settings, sigma, progress=True, screen=screen)
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


def run_trace_summary(problem_files: Sequence[str], out: str, code: str = "") -> pd.DataFrame:
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
