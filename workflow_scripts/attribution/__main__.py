"""Command line: ``python -m attribution {evaluate,trace,findings} ...``.

Each subcommand lives with the code it drives; this module only dispatches.
"""

from __future__ import annotations

import sys

USAGE = """usage: python -m attribution {evaluate,trace,findings} [options]

  evaluate   score a generations file with the sandboxed checkers (pass@k)
  trace      causal tracing of one prompt (ROME-style activation patching)
  findings   what a finished run found (scores, traces) and where its outputs are

Run a subcommand with --help for its options."""


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "evaluate":
        from attribution.execution.cli import main as run
    elif command == "trace":
        from attribution.tracing.cli import main as run
    elif command == "findings":
        from attribution.findings import main as run
    else:
        print(f"unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return int(run(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
