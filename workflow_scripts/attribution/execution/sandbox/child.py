"""The sandboxed child: the only code that runs untrusted programs.

``child_main`` runs in a process the worker has just forked. It isolates itself (session,
descriptors, working directory, resource limits, capabilities, uid, no_new_privs, environment)
before it compiles any untrusted source, then reports *values* into the worker's shared
``ResultArea``. Nothing here decides a verdict: everything the child writes is decoded by the
worker as untrusted data, and whatever the program does to this process can only change what it
reports about itself.

Time limits, per input: a CPU timer (``ITIMER_PROF``) and a wall timer (``ITIMER_REAL``) raise
``_Timeout`` in Python code; a long C-level call, which no Python signal handler can interrupt,
is ended by the soft ``RLIMIT_CPU`` (SIGXCPU, set a little above the input's limit) or by the
worker at the input's wall deadline. Either way every outcome reported before stays in the
shared area, and the worker marks the input that was running (``ResultArea.mark``) as a timeout.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import resource
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from attribution.execution.sandbox.framing import ResultArea
from attribution.execution.sandbox.linux import (
    PR_SET_NO_NEW_PRIVS,
    drop_capabilities,
    install_seccomp,
    landlock_restrict,
    last_error,
    prctl,
)
from attribution.execution.sandbox.records import Program, SandboxLimits
from attribution.execution.sandbox.values import Unencodable, to_plain

SOURCE_NAME = "<solution>"  # the file name of the candidate's code objects (tracebacks, lines)
MESSAGE_CHARS = 200
ISOLATION_FAILED = 71  # exit status of a child whose own isolation failed (program not run)


def cpu_hard_limit(prog: Program, index: int) -> int:
    """The child's hard RLIMIT_CPU (whole seconds): all its inputs' limits and setup, plus 3."""
    total = (
        prog.cpu_limits[index] if prog.mode == "stdin" else sum(prog.cpu_limits) + prog.setup_cpu_s
    )
    return int(total) + 3


class _Timeout(BaseException):
    """Raised inside the child by its own CPU/wall timers; ``limit`` is "cpu" or "wall"."""

    def __init__(self, limit: str) -> None:
        super().__init__(limit)
        self.limit = limit


# Whether the child's timers may interrupt (only while the program's code runs). A flag instead
# of cancelling the timers saves two system calls per input: a stale timer that fires between
# inputs is ignored, and the next input's timers replace it. Child-process state only.
_TIMERS_ARMED = [False]


def _on_timer(signum: int, frame: Any) -> None:
    # Disarm before raising: when both timers fire, the second finds the flag off, so at most
    # one _Timeout is raised per arming and never a second one into the harness's handling.
    if _TIMERS_ARMED[0]:
        _TIMERS_ARMED[0] = False
        raise _Timeout("cpu" if signum == signal.SIGPROF else "wall")


def _arm(cpu_s: float, wall_s: float) -> None:
    signal.setitimer(signal.ITIMER_PROF, max(cpu_s, 0.001))
    signal.setitimer(signal.ITIMER_REAL, max(wall_s, 0.001))
    _TIMERS_ARMED[0] = True


def _disarm() -> None:
    _TIMERS_ARMED[0] = False


def _timed(run: Callable[[], Any], cpu_s: float, wall_s: float) -> tuple[Any, BaseException | None]:
    """``run()`` under armed timers: (value, None) or (None, the exception it ended with)."""
    try:
        try:
            _arm(cpu_s, wall_s)
            value = run()
            _disarm()
            return value, None
        except BaseException as exc:  # noqa: BLE001 - anything the program raises is its failure
            _disarm()
            return None, exc
    except _Timeout as late:  # fired while the harness handled the program's own exception
        return None, late


def _describe(exc: BaseException) -> tuple[str, str, int | None, str, str]:
    """(status, error, line, message, limit) of an exception that ended a program's run."""
    if type(exc) is _Timeout:
        return "timeout", "", None, "", exc.limit
    try:
        name = str(type(exc).__name__)[:100]
    except BaseException:  # noqa: BLE001 - a hostile metaclass; the name is only a reason
        name = "Exception"
    try:
        message = str(exc)[:MESSAGE_CHARS]
    except BaseException:  # noqa: BLE001
        message = ""
    # Exact str only: anything else would not cross the boundary (decode_plain admits no class).
    name = name if type(name) is str else "Exception"
    message = message if type(message) is str else ""
    limit = "memory" if isinstance(exc, MemoryError) else ""
    return "error", name, _solution_line(exc), message, limit


def _solution_line(exc: BaseException) -> int | None:
    """Line of the innermost traceback frame in the candidate's source (or of a SyntaxError)."""
    try:
        if isinstance(exc, SyntaxError) and exc.filename == SOURCE_NAME:
            return exc.lineno if type(exc.lineno) is int else None
        line, tb = None, exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == SOURCE_NAME and type(tb.tb_lineno) is int:
                line = tb.tb_lineno
            tb = tb.tb_next
        return line
    except BaseException:  # noqa: BLE001
        return None


class _Report:
    """What the child tells the worker: messages in the shared area, appended one by one (no
    system call), so none is lost when the child is killed; and the CPU limit of each input."""

    def __init__(self, area: ResultArea, cpu_hard: int) -> None:
        self.area = area
        self.cpu_hard = cpu_hard
        self.cpu_soft = -1

    def start(self, index: int, cpu_now: float, cpu_limit: float) -> None:
        """Input ``index`` (-1: setup) starts: mark it, and set its CPU limit."""
        self.area.mark(index)
        self.cpu_limit(cpu_now, cpu_limit)

    def cpu_limit(self, cpu_now: float, cpu_limit: float) -> None:
        """Set the soft CPU limit (SIGXCPU) a little above this input's own limit, for code the
        timers cannot interrupt; a system call only when the whole second changes."""
        soft = min(self.cpu_hard, int(cpu_now + cpu_limit) + 2)
        if soft != self.cpu_soft:
            resource.setrlimit(resource.RLIMIT_CPU, (soft, self.cpu_hard))
            self.cpu_soft = soft

    def put(self, msg: tuple[Any, ...], next_index: int | None = None) -> bool:
        """Append ``msg``; with ``next_index``, also mark that input as starting now."""
        try:
            data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # e.g. recursion in a pathological value
            if msg[0] != "in":
                raise
            lost = ("in", msg[1], "unencodable", None, msg[4], type(exc).__name__, None, "", "")
            data = pickle.dumps(lost, protocol=pickle.HIGHEST_PROTOCOL)
        return self.area.append(data, next_index)

    def setup_failed(self, exc: BaseException) -> None:
        status, error, line, message, _ = _describe(exc)
        self.put(("setup", False, "timeout" if status == "timeout" else error, line, message))

    def outcome(self, index: int, value: Any, exc: BaseException | None, cpu: float) -> bool:
        """Report input ``index`` and mark the next one as starting, in one write."""
        if exc is None:
            try:
                # The common case, in the short form (one per input: ~120k on HumanEval+).
                data = pickle.dumps(("ok", index, to_plain(value), cpu), pickle.HIGHEST_PROTOCOL)
                return self.area.append(data, index + 1)
            except (Unencodable, RecursionError) as err:
                status, value, message = "unencodable", None, str(err)[:MESSAGE_CHARS]
                error, line, limit = type(err).__name__, None, ""
            except Exception:  # a value pickle cannot write: put() reports it unencodable
                status, error, line, message, limit = "ok", "", None, "", ""
        else:
            status, error, line, message, limit = _describe(exc)
            value = None
        return self.put(("in", index, status, value, cpu, error, line, message, limit), index + 1)


def _run_call_or_eval(prog: Program, report: _Report, limits: SandboxLimits) -> None:
    g: dict[str, Any] = {}
    if prog.main_name is not None:
        g["__name__"] = prog.main_name

    def setup() -> Any:
        exec(compile(prog.source, SOURCE_NAME, "exec"), g)
        if prog.mode != "call":
            return None
        if prog.instantiate:
            return getattr(g[prog.instantiate](), prog.entry)
        return g[prog.entry]

    wall = prog.setup_cpu_s * limits.wall_factor + limits.wall_margin_s
    target, exc = _timed(setup, prog.setup_cpu_s, wall)
    if exc is not None:
        report.setup_failed(exc)
        return
    report.put(("setup", True, "", None, ""), next_index=0)
    call = prog.mode == "call"
    factor, margin = limits.wall_factor, limits.wall_margin_s
    for i, inp in enumerate(prog.inputs):
        limit = prog.cpu_limits[i]
        start = time.process_time()
        report.cpu_limit(start, limit)
        # _timed, inlined: this loop runs once per input (HumanEval+ has ~120k plus inputs).
        try:
            try:
                _arm(limit, limit * factor + margin)
                value = target(*inp) if call else eval(inp, g)
                _disarm()
                exc = None
            except BaseException as err:  # noqa: BLE001 - anything the program raises
                _disarm()
                value, exc = None, err
        except _Timeout as late:  # fired while the harness handled the program's own exception
            value, exc = None, late
        if not report.outcome(i, value, exc, time.process_time() - start):
            return  # the results exceed their cap: the worker reports output_limit
        if type(exc) is _Timeout and prog.stop_on_timeout:
            break
    report.put(("end",))


def _run_stdin(prog: Program, index: int, report: _Report, limits: SandboxLimits) -> None:
    g: dict[str, Any] = {"__name__": prog.main_name or "__main__"}
    # Python objects over fds 0/1 were created by the worker; rebuild them on the new descriptors.
    sys.stdin = open(0, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    limit = prog.cpu_limits[index]
    start = time.process_time()
    try:
        code = compile(prog.source, SOURCE_NAME, "exec")
    except BaseException as exc:  # noqa: BLE001
        report.setup_failed(exc)
        return
    report.put(("setup", True, "", None, ""))

    def run() -> None:
        try:
            exec(code, g)
            if prog.entry:
                g[prog.entry]()
        except SystemExit:
            pass  # APPS' harness swallows SystemExit: exit() ends the program normally

    report.start(index, start, limit)
    _, exc = _timed(run, limit, limit * limits.wall_factor + limits.wall_margin_s)
    try:
        sys.stdout.flush()
    except BaseException:  # noqa: BLE001 - a closed/broken stdout is the program's problem
        pass
    report.outcome(index, None, exc, time.process_time() - start)
    report.put(("end",))


@dataclass(frozen=True)
class ChildSetup:
    """What the worker established for its children (see ``isolation.Isolation``)."""

    workdir: str
    uid: int | None  # root only: drop to this uid
    as_base: int  # the worker's address space; the memory limit comes on top
    ruleset_fd: int = -1  # Landlock ruleset to enforce (the fallback without namespaces)
    seccomp: Any = None  # seccomp socket filter to install (same)


class IsolationError(Exception):
    """A step of the child's own isolation failed: the program must not run."""


def _isolate(limits: SandboxLimits, setup: ChildSetup) -> None:
    """The child's own isolation steps, in order; any failure raises IsolationError."""
    if setup.ruleset_fd >= 0:
        if not prctl(PR_SET_NO_NEW_PRIVS, 1) or not landlock_restrict(setup.ruleset_fd):
            raise IsolationError(f"Landlock: {last_error()}")
    os.closerange(3, 1 << 16)  # the engine pipes, the ruleset and all else the worker had
    os.chdir(setup.workdir)


def child_main(
    prog: Program,
    index: int,
    limits: SandboxLimits,
    setup: ChildSetup,
    area: ResultArea,
    stdin_fd: int,
    stdout_fd: int,
) -> None:
    """Isolate, then run the program. Never returns."""
    code = 0
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(stdin_fd if stdin_fd >= 0 else devnull, 0)
        os.dup2(stdout_fd if stdout_fd >= 0 else devnull, 1)
        os.dup2(devnull, 2)
        _isolate(limits, setup)
        # The hard limit bounds the whole child (SIGKILL); each input lowers the soft one.
        cpu_hard = cpu_hard_limit(prog, index)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_hard - 1, cpu_hard))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        mem = setup.as_base + limits.memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.fsize_bytes, limits.fsize_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.nofile, limits.nofile))
        if setup.uid is not None:
            os.setgroups([])
            os.setresgid(setup.uid, setup.uid, setup.uid)
            os.setresuid(setup.uid, setup.uid, setup.uid)
        # Inside a user namespace the worker holds every capability; the program holds none.
        if not drop_capabilities():
            raise IsolationError(f"capset: {last_error()}")
        # After the uid change: root would ignore the limit; the new uid cannot raise it again.
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.nproc, limits.nproc))
        if not prctl(PR_SET_NO_NEW_PRIVS, 1):
            raise IsolationError(f"no_new_privs: {last_error()}")
        if setup.seccomp is not None and not install_seccomp(setup.seccomp):
            raise IsolationError(f"seccomp: {last_error()}")
        os.environ.clear()
        workdir = setup.workdir
        os.environ.update(
            {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
        )
        tempfile.tempdir = workdir
        signal.signal(signal.SIGPROF, _on_timer)
        signal.signal(signal.SIGALRM, _on_timer)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        sys.argv = ["solution.py"]
        sys.setrecursionlimit(10_000)
        report = _Report(area, cpu_hard)
        report.start(-1, time.process_time(), prog.setup_cpu_s)  # the program may run now
        if prog.mode == "stdin":
            _run_stdin(prog, index, report, limits)
        else:
            _run_call_or_eval(prog, report, limits)
    except IsolationError as exc:
        # Before any untrusted code ran: the worker reports a sandbox error, not a crash.
        with contextlib.suppress(BaseException):
            area.append(pickle.dumps(("isolation", str(exc)[:MESSAGE_CHARS])))
        code = ISOLATION_FAILED
    except BaseException:  # noqa: BLE001 - the untrusted side may break anything; exit non-zero
        code = 70
    os._exit(code)
