"""Causal-tracing engine vs a straightforward ROME-style loop (one forward of n+1 rows per cell,
row 0 clean, plain torch hooks), on the same tiny model, CRUXEval-O prompt, span and noise.

Scenarios (span position in the ~370-token prompt of the project's tiny OLMo-2 tokenizer):
  start          tokens 0-3: every cell of the prompt has to be computed
  middle         4 tokens in the middle of the prompt
  function_name  the problem's ``f`` (a CRUXEval ``function_name`` span)
  body           the problem's function body (``body`` span)
  input          the input literal of the final assertion (``input`` span, the late default)
The loop's cost per cell does not depend on the cell (one full forward each), so it is timed on
``--loop-cells`` cells spread evenly over the grid and scaled to the grid; those cells are also
the ones compared with the engine (max abs difference). Times are process CPU seconds (steady on
a shared machine; ``--threads`` torch threads, 1 by default) and wall seconds.
``--cpu-tokens`` sweeps the engine's CPU batch cap (row-positions per forward) on the start span;
``--screens`` times each gradient screen (atp, atp_qk, atp_star) on the input span against the
exact trace and prints its agreement with it.

    .venv/bin/python benchmarks/bench_tracing.py [--samples 10] [--layers 2] [--hidden 64]
        [--threads 1] [--loop-cells 36] [--scenarios start,middle,...] [--cpu-tokens 1024,4096]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow_scripts"))

from attribution.data.prompts import cruxeval_output_row  # noqa: E402
from attribution.data.records import CruxEvalTask  # noqa: E402
from attribution.models.build import TinyModelSpec, build_tiny_model, stdlib_corpus  # noqa: E402
from attribution.models.loading import load_model_and_tokenizer  # noqa: E402
from attribution.tracing.adapters import get_module  # noqa: E402
from attribution.tracing.engine import CausalTracer, TraceSettings, restored_layers  # noqa: E402
from attribution.tracing.spans import prepare_cruxeval  # noqa: E402

SCENARIOS = ("start", "middle", "function_name", "body", "input")


def rome_cell(model, adapter, ids, span, settings, target, kind, layer, t):
    """The baseline, written from the algorithm description: one forward of n+1 rows with
    hooks that corrupt rows 1..n and restore one cell."""
    embed = get_module(model, adapter.embed)
    start, end = span
    z = np.random.RandomState(settings.seed).randn(
        settings.samples, end - start, embed.weight.shape[1]
    )
    noise = settings.noise * torch.from_numpy(z)

    def corrupt(_m, _a, out):
        out[1:, start:end] += noise

    handles = [embed.register_forward_hook(corrupt)]
    for j in restored_layers(kind, layer, adapter.layers, settings.window):

        def restore(_m, _a, out):
            h = out[0] if isinstance(out, tuple) else out
            h[1:, t] = h[0, t]

        handles.append(get_module(model, adapter.path(kind, j)).register_forward_hook(restore))
    try:
        with torch.no_grad():
            logits = model(ids.repeat(settings.samples + 1, 1)).logits
    finally:
        for h in handles:
            h.remove()
    return torch.softmax(logits[1:, -1].float(), -1)[:, target].double().mean().item()


def _clock():
    return time.perf_counter(), time.process_time()


def compare(name, tracer, ids, span, settings, loop_cells):
    model, adapter = tracer.model, tracer.adapter
    length = ids.shape[1]
    w0, c0 = _clock()
    result = tracer.trace(ids[0], span, settings)
    engine_s, engine_cpu = time.perf_counter() - w0, time.process_time() - c0
    grid = [
        (t, kind, layer)
        for t in range(span[0], length)
        for kind in settings.kinds
        for layer in range(adapter.layers)
    ]
    picks = [grid[int(i)] for i in np.linspace(0, len(grid) - 1, min(loop_cells, len(grid)))]
    cpu_per_cell, wall_per_cell, diffs = [], [], []
    for t, kind, layer in picks:
        w0, c0 = _clock()
        value = rome_cell(model, adapter, ids, span, settings, result.target_id, kind, layer, t)
        wall_per_cell.append(time.perf_counter() - w0)
        cpu_per_cell.append(time.process_time() - c0)
        diffs.append(abs(value - result.scores[kind][t, layer]))
    loop_cpu = statistics.median(cpu_per_cell) * len(grid)
    loop_s = statistics.median(wall_per_cell) * len(grid)
    # ROME's own loop also runs the cells before the span (the engine knows they equal low)
    full_cpu = statistics.median(cpu_per_cell) * length * len(settings.kinds) * adapter.layers
    row = {
        "scenario": name,
        "tokens": length,
        "span": list(span),
        "layers": adapter.layers,
        "cells": len(grid),
        "engine_cpu_s": round(engine_cpu, 2),
        "loop_cpu_s": round(loop_cpu, 2),
        "speedup_cpu": round(loop_cpu / engine_cpu, 1),
        "engine_s": round(engine_s, 2),
        "loop_s": round(loop_s, 2),
        "speedup": round(loop_s / engine_s, 1),
        "speedup_cpu_vs_whole_grid": round(full_cpu / engine_cpu, 1),
        "loop_cells_timed": len(picks),
        "max_abs_diff": float(max(diffs)),
        "high_minus_low": result.high - result.low,
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--noise", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--loop-cells", type=int, default=36)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--cpu-tokens", default="", help="comma list: sweep the CPU batch cap")
    parser.add_argument("--screens", action="store_true", help="time the gradient screens")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_grad_enabled(False)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        spec = TinyModelSpec(
            arch="olmo2", layers=args.layers, hidden=args.hidden, heads=4, vocab_size=2048, seed=0
        )
        build_tiny_model(spec, tmp, corpus=stdlib_corpus()[:6])
        loaded = load_model_and_tokenizer(tmp, dtype="float32", device="cpu")
    model, tokenizer = loaded.model, loaded.tokenizer
    settings = TraceSettings(noise=args.noise, samples=args.samples, seed=1)
    task = CruxEvalTask(
        id="bench",
        code="def f(nums):\n    return [n * 2 for n in nums if n % 2]",
        input="[1, 2, 3, 4, 5]",
        output="[2, 6, 10]",
    )
    row = cruxeval_output_row(task)
    spans = {}
    for kind in ("function_name", "body", "input"):
        prepared = prepare_cruxeval(
            tokenizer, row["prompt"], row["answer_prefix"], task.code, task.input, task.output, kind
        )
        spans[kind] = prepared.span
    ids = torch.tensor([prepared.prompt.input_ids])
    middle = ids.shape[1] // 2
    spans["start"] = (0, 4)
    spans["middle"] = (middle, middle + 4)
    tracer = CausalTracer(model, tokenizer)
    tracer.trace(ids[0], spans["input"], settings)  # warm-up (first nnsight trace, allocator)
    print(
        f"model: olmo2 layers={args.layers} hidden={args.hidden}; samples={args.samples}; "
        f"torch threads={torch.get_num_threads()}; CPU cap {tracer.cpu_tokens} row-positions"
    )
    for name in [s for s in args.scenarios.split(",") if s]:
        compare(name, tracer, ids, spans[name], settings, args.loop_cells)
    for cap in [int(c) for c in args.cpu_tokens.split(",") if c]:
        tracer.cpu_tokens = cap
        w0, c0 = _clock()
        tracer.trace(ids[0], spans["start"], settings)
        print(
            json.dumps(
                {
                    "sweep": "start",
                    "cpu_tokens": cap,
                    "engine_cpu_s": round(time.process_time() - c0, 2),
                    "engine_s": round(time.perf_counter() - w0, 2),
                }
            ),
            flush=True,
        )
    if args.screens:
        time_screens(tracer, ids, spans["input"], settings)
    return 0


def time_screens(tracer, ids, span, settings):
    from attribution.tracing.patching import SCREENS, screen_agreement, screen_estimates

    w0, c0 = _clock()
    result = tracer.trace(ids[0], span, settings)
    exact_cpu = time.process_time() - c0
    print(json.dumps({"screen": "exact", "cpu_s": round(exact_cpu, 2)}), flush=True)
    for screen in SCREENS:
        w0, c0 = _clock()
        est = screen_estimates(tracer, ids[0], span, settings, result.target_id, (screen,))
        cpu = time.process_time() - c0
        table = screen_agreement(result, est)
        print(
            json.dumps(
                {
                    "screen": screen,
                    "cpu_s": round(cpu, 2),
                    "wall_s": round(time.perf_counter() - w0, 2),
                    "vs_exact_cpu": round(cpu / exact_cpu, 2),
                    "spearman_abs": dict(zip(table.kind, table.spearman_abs.round(3), strict=True)),
                    "false_negative_rate": dict(
                        zip(table.kind, table.false_negative_rate.round(3), strict=True)
                    ),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
