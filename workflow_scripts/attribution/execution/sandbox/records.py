"""Public records of the sandbox: limits, programs, per-input outcomes, results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ISOLATION_MODES = ("strict", "best_effort")


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one sandboxed child (per program)."""

    memory_bytes: int = 2 << 30  # address space on top of the worker's own mappings
    nproc: int = 32  # processes (and threads) of the sandbox uid
    fsize_bytes: int = 16 << 20  # largest file the program may write
    nofile: int = 64  # open descriptors
    stdout_bytes: int = 64 << 20  # captured stdout (stdin-mode programs)
    result_bytes: int = 256 << 20  # all result messages of one child
    wall_factor: float = 2.0  # per-input wall limit = cpu limit * wall_factor + wall_margin_s
    wall_margin_s: float = 1.0
    tmp_bytes: int = 64 << 20  # the private tmpfs a child works in (where namespaces allow)
    uid_base: int = 64000  # worker i runs its children as uid_base + i when started as root
    pid_namespace: bool = True  # False forces the fallback (subreaper + per-uid kill sweep)
    # "strict": refuse to run when file-system, network or credential isolation is missing;
    # "best_effort": run with the layers available and warn (execution.isolation).
    isolation: str = "strict"

    def __post_init__(self) -> None:
        if self.isolation not in ISOLATION_MODES:
            raise ValueError(f"isolation must be one of {ISOLATION_MODES}, got {self.isolation!r}")


@dataclass(frozen=True)
class WorkerOptions:
    """Settings a pool sends its workers: whether to try namespaces and Landlock (environment
    switches turn them off, to test the paths of machines that forbid them:
    ATTRIBUTION_SANDBOX_NO_USERNS=1, ATTRIBUTION_SANDBOX_NO_LANDLOCK=1) and the credential
    locations to keep out of reach (computed by the engine, which knows them)."""

    namespaces: bool = True
    landlock: bool = True
    hide: tuple[str, ...] = ()


@dataclass(frozen=True)
class Program:
    """A program and the inputs to run it on, in one of three modes.

    * ``call``: ``exec(source)``, take ``entry`` (a function, or a method of a fresh
      ``instantiate()`` object) and call it once per input with ``*args`` (each input is a list of
      positional arguments); the return value is reported.
    * ``eval``: ``exec(source)``, then ``eval`` each input (an expression string) in the same
      globals; the value is reported.
    * ``stdin``: run ``source`` (then call ``entry()`` if given) once per input in a fresh child
      with the input on file descriptor 0; what it writes to stdout is reported (as text).

    ``cpu_limits`` holds one CPU-seconds limit per input; ``setup_cpu_s`` bounds ``exec(source)``.
    ``stop_on_timeout`` stops at the first input that times out (the rest are ``not_run``).
    ``main_name`` sets ``__name__`` in the exec globals (``None``: not set, like evalplus).
    """

    mode: str
    source: str
    inputs: tuple[Any, ...]
    cpu_limits: tuple[float, ...]
    entry: str = ""
    instantiate: str = ""
    setup_cpu_s: float = 4.0
    stop_on_timeout: bool = False
    main_name: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("call", "eval", "stdin"):
            raise ValueError(f"unknown program mode {self.mode!r}")
        if len(self.cpu_limits) != len(self.inputs):
            raise ValueError("cpu_limits needs one entry per input")


@dataclass
class Outcome:
    """What happened on one input.

    ``status``: ``ok`` (``value`` is set), ``error`` (``error`` names the exception type;
    empty when the child died instead, ``message`` then says how), ``timeout``, ``unencodable``
    (a value of a type that cannot cross the boundary) or ``not_run`` (setup failed, an earlier
    timeout, or the child died on an earlier input). ``line``: for ``error``, the 1-based line
    in the program's source of the innermost frame there (None when the error arose outside it).
    ``message``: the exception's message, at most 200 characters. ``limit``: which limit ended
    it: "cpu" or "wall" for a timeout, "memory" (MemoryError, or a death at the memory limit)
    or "output" (the output cap) for an error; empty otherwise.
    """

    status: str
    value: Any = None
    error: str = ""
    cpu_s: float = 0.0
    line: int | None = None
    message: str = ""
    limit: str = ""


@dataclass
class SandboxResult:
    """Outcome of one ``Program``.

    ``status``: ``ok`` (ran to the end; single inputs may still have failed), ``setup_error``
    (compile, exec or entry lookup failed; ``error`` names the exception, or "timeout";
    ``setup_line`` is the SyntaxError's line or the raising line of the program's source),
    ``timeout`` (killed at a CPU or wall limit; the input that was running says which),
    ``crashed`` (died without finishing; ``error`` says how: "killed by signal 9 (SIGKILL)",
    "exited with status 3"), ``output_limit`` or ``sandbox_error`` (the worker itself failed).
    ``signal``: the signal that ended the (last) child, None when it exited. Every outcome the
    child reported before it ended is kept, whatever ended it.
    """

    status: str
    outcomes: list[Outcome]
    error: str = ""
    wall_s: float = 0.0
    layers: tuple[str, ...] = ()
    exit_codes: list[int] = field(default_factory=list)
    signal: int | None = None
    setup_line: int | None = None
