"""``python -m attribution trace``: causal tracing of one prompt, no notebook needed.

    python -m attribution trace --model DIR_OR_HUB_ID --prompt-file FILE --span START:END \\
        [--target TEXT] --kinds hidden,mlp,attn --samples N (--noise NU | --noise-sigmas K) \\
        --window W --seed S [--screens atp,atp_qk,atp_star] --out FILE.parquet
    python -m attribution trace ... --corruption replace --replacement TEXT [--replacement ...]

``--span`` is a character range of the prompt (the corrupted span). Without ``--target`` the
target is the clean model's top-1 next token; with it, the first token of TEXT as it follows
the prompt. Noise draws are ROME's (``numpy.random.RandomState(seed).randn``). ``--noise`` is the
absolute scale (ROME's scripts pass e.g. 0.1); ``--noise-sigmas K`` uses K x sigma, sigma = std
of the embedding outputs over ``--sigma-corpus`` (a text file; default: the prompt itself).
``--corruption replace`` replaces the span's characters by each ``--replacement`` text instead
(one corrupted row each; each must tokenize to the span's token count in place: Zhang & Nanda
2023's symmetric token replacement). ``--screens`` also runs gradient screens (``atp``: plain
attribution patching, ``--screen`` for short; ``atp_qk``: with AtP*'s QK fix; ``atp_star``:
QK fix + GradDrop) and prints their agreement with the exact trace.
The output has one row per (kind, token, layer) cell, skipped cells (before the span,
``score == low``) included; columns in :mod:`attribution.tracing.frames`. Bad input, an
unsupported model or a refused trace ends with ``error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attribution.tracing.adapters import KINDS


class CliError(ValueError):
    """Bad command-line input; the message names the option."""


def _span(text: str) -> tuple[int, int]:
    try:
        start, end = (int(x) for x in text.split(":"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--span {text!r}: expected START:END (character offsets)"
        ) from exc
    return start, end


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(
            f"--kinds {text!r}: each kind must be one of {','.join(KINDS)}"
        )
    return kinds


def _screens(text: str) -> tuple[str, ...]:
    from attribution.tracing.patching import SCREENS

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in SCREENS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"--screens {text!r}: each screen must be one of {','.join(SCREENS)}"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m attribution trace",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="model folder or hub id")
    p.add_argument("--revision", default=None, help="hub revision")
    p.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16")
    p.add_argument("--device", default=None, help="e.g. cpu, cuda:0 (default: first GPU, else CPU)")
    p.add_argument("--prompt-file", required=True, type=Path)
    p.add_argument(
        "--span", required=True, type=_span, help="START:END character offsets into the prompt"
    )
    p.add_argument("--target", default=None, help="target text (default: clean top-1 next token)")
    p.add_argument("--kinds", type=_kinds, default=KINDS, help="comma list of hidden,mlp,attn")
    p.add_argument("--samples", type=int, default=10, help="corrupted rows (ROME: 10)")
    p.add_argument(
        "--corruption",
        choices=("noise", "replace"),
        default="noise",
        help="noise: ROME's Gaussian noise (default); replace: --replacement texts",
    )
    p.add_argument(
        "--replacement",
        action="append",
        default=[],
        help="text replacing the span (corruption replace; repeat for more rows)",
    )
    noise = p.add_mutually_exclusive_group()
    noise.add_argument("--noise", type=float, help="absolute noise scale nu")
    noise.add_argument("--noise-sigmas", type=float, help="noise = K x embedding std (ROME: 3)")
    p.add_argument("--sigma-corpus", type=Path, default=None, help="text file sigma is measured on")
    p.add_argument("--window", type=int, default=10, help="mlp/attn restoration window (ROME: 10)")
    p.add_argument("--seed", type=int, default=1, help="RandomState seed of the noise (ROME: 1)")
    p.add_argument(
        "--batch-rows", type=int, default=None, help="rows per forward (default: fit memory)"
    )
    p.add_argument(
        "--screen",
        action="store_true",
        help="also run attribution patching (ap_score column) and print its rank agreement",
    )
    p.add_argument(
        "--screens",
        type=_screens,
        default=(),
        help="comma list of gradient screens: atp, atp_qk (QK fix), atp_star (AtP*)",
    )
    p.add_argument("--out", required=True, type=Path, help="output .parquet")
    return p


def main(argv: list[str] | None = None) -> int:
    from attribution.models.loading import ModelLoadError
    from attribution.tracing.selftest import AdapterError

    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (CliError, ValueError, AdapterError, ModelLoadError) as exc:
        # bad input, a model no adapter fits, a trace the engine refuses: a message, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    import torch

    from attribution.io import write_parquet
    from attribution.tracing.corruption import aligned_replacement, replacement_corruption
    from attribution.tracing.engine import TraceSettings
    from attribution.tracing.frames import result_frame
    from attribution.tracing.jobs import load_tracer, noise_scale, token_texts
    from attribution.tracing.patching import screen_agreement, screen_estimates
    from attribution.tracing.spans import prepare_prompt, token_span

    if not args.prompt_file.is_file():
        raise CliError(f"--prompt-file {args.prompt_file}: no such file")
    prompt = args.prompt_file.read_text(encoding="utf-8")
    start, end = args.span
    if not 0 <= start < end <= len(prompt):
        raise CliError(
            f"--span {start}:{end} is not a non-empty range inside the prompt (0:{len(prompt)} characters)"
        )
    if args.out.suffix != ".parquet":
        raise CliError(f"--out {args.out}: expected a .parquet file")
    replace = args.corruption == "replace"
    if replace and (args.noise is not None or args.noise_sigmas is not None):
        raise CliError("--noise/--noise-sigmas apply to --corruption noise only")
    if replace and not args.replacement:
        raise CliError("--corruption replace needs at least one --replacement TEXT")
    if not replace and args.replacement:
        raise CliError("--replacement applies to --corruption replace only")
    if not replace and args.noise is None and args.noise_sigmas is None:
        raise CliError("give --noise NU or --noise-sigmas K (or --corruption replace)")
    screens = tuple(dict.fromkeys((("atp",) if args.screen else ()) + args.screens))
    tracer, tokenizer = load_tracer(args.model, args.revision, args.dtype, args.device)
    prepared = prepare_prompt(tokenizer, prompt, args.target)
    span = token_span(prepared.offsets, start, end)
    corruption = None
    nu, sigma = None, float("nan")
    if replace:
        tokens = []
        for text in args.replacement:
            got = aligned_replacement(
                tokenizer, prompt, args.target, prepared.input_ids, (start, end), span, text
            )
            if got is None:
                raise CliError(
                    f"--replacement {text!r} does not tokenize to the span's {span[1] - span[0]} "
                    "token(s) in place (or equals the span)"
                )
            tokens.append(got)
        corruption = replacement_corruption(
            torch.tensor(prepared.input_ids), span, tokens, args.replacement
        )
    else:
        corpus = [prompt]
        if args.sigma_corpus is not None:
            corpus = [
                line
                for line in args.sigma_corpus.read_text(encoding="utf-8").splitlines()
                if line.strip()
            ]
        nu, sigma = noise_scale(tracer, tokenizer, corpus, args.noise, args.noise_sigmas)
    settings = TraceSettings(
        noise=nu,
        kinds=args.kinds,
        samples=corruption.rows if corruption is not None else args.samples,
        window=args.window,
        seed=args.seed,
        max_rows=args.batch_rows,
        corruption=args.corruption,
    )
    result = tracer.trace(
        prepared.input_ids, span, settings, prepared.target_id, progress=True, corruption=corruption
    )
    target_text = prepared.target_text
    if target_text is None:
        target_text = tokenizer.decode([result.target_id])
    estimates = None
    if screens:
        estimates = screen_estimates(
            tracer, prepared.input_ids, span, settings, result.target_id, screens, corruption
        )
    frame = result_frame(
        result,
        args.prompt_file.stem,
        token_texts(prepared),
        target_text,
        result.clean_top1 == result.target_id,
        sigma=sigma,
        screens=estimates,
    )
    write_parquet(frame, args.out)
    scale = f"noise {nu:.4g}" if nu is not None else f"{result.corrupted_rows} replacement(s)"
    print(
        f"traced {len(prepared.input_ids)} tokens x {result.num_layers} layers, span tokens {span}, "
        f"target {target_text!r}: low {result.low:.4g}, high {result.high:.4g}, {scale} -> {args.out}"
    )
    if estimates is not None:
        print("gradient screens vs exact trace (over computed cells; spearman is signed):")
        print(screen_agreement(result, estimates).to_string(index=False))
    return 0
