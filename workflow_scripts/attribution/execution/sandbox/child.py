"""The sandboxed child: the only code that runs untrusted programs.

``child_main`` runs in a process the worker has just forked. It isolates itself (session,
descriptors, working directory, resource limits, uid, no_new_privs, environment) before it
compiles any untrusted source, then reports *values* over the result pipe (fd 3). Nothing here
decides a verdict; everything the child writes is decoded by the worker as untrusted data.
"""

from __future__ import annotations

import os
import pickle
import resource
import signal
import sys
import tempfile
import time
from typing import Any

from attribution.execution.sandbox.framing import HEADER, write_all
from attribution.execution.sandbox.linux import PR_SET_NO_NEW_PRIVS, prctl
from attribution.execution.sandbox.records import Program, SandboxLimits
from attribution.execution.sandbox.values import Unencodable, to_plain


class _Timeout(BaseException):
    """Raised inside the child by its own CPU/wall timers."""


# Whether the child's timers may interrupt (only while the program's code runs). A flag instead
# of cancelling the timers saves two system calls per input: a stale timer that fires between
# inputs is ignored, and the next input's timers replace it. Child-process state only.
_TIMERS_ARMED = [False]


def _on_timer(signum: int, frame: Any) -> None:
    if _TIMERS_ARMED[0]:
        raise _Timeout()


def _arm(cpu_s: float, wall_s: float) -> None:
    signal.setitimer(signal.ITIMER_PROF, max(cpu_s, 0.001))
    signal.setitimer(signal.ITIMER_REAL, max(wall_s, 0.001))
    _TIMERS_ARMED[0] = True


def _disarm() -> None:
    _TIMERS_ARMED[0] = False


def _emit(fd: int, msg: tuple[Any, ...]) -> None:
    try:
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # e.g. recursion in a pathological value
        data = pickle.dumps(("in", msg[1], "unencodable", None, 0.0, type(exc).__name__))
    write_all(fd, HEADER.pack(len(data)) + data)


def _emit_batch(fd: int, msgs: list[tuple[Any, ...]]) -> None:
    if not msgs:
        return
    try:
        data = pickle.dumps(("batch", msgs), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # one pathological value: send them one by one
        for msg in msgs:
            _emit(fd, msg)
        return
    write_all(fd, HEADER.pack(len(data)) + data)


def _error_name(exc: BaseException) -> str:
    try:
        return type(exc).__name__[:100]
    except Exception:
        return "Exception"


def _run_call_or_eval(prog: Program, res_fd: int, limits: SandboxLimits) -> None:
    g: dict[str, Any] = {}
    if prog.main_name is not None:
        g["__name__"] = prog.main_name
    try:
        _arm(prog.setup_cpu_s, prog.setup_cpu_s * limits.wall_factor + limits.wall_margin_s)
        exec(compile(prog.source, "<solution>", "exec"), g)
        target: Any = None
        if prog.mode == "call":
            if prog.instantiate:
                target = getattr(g[prog.instantiate](), prog.entry)
            else:
                target = g[prog.entry]
        _disarm()
    except BaseException as exc:  # noqa: BLE001 - anything the program raises is its failure
        _disarm()
        kind = "timeout" if isinstance(exc, _Timeout) else _error_name(exc)
        _emit(res_fd, ("setup", False, kind))
        return
    _emit(res_fd, ("setup", True, ""))
    pending: list[tuple[Any, ...]] = []
    last_flush = time.monotonic()
    for i, inp in enumerate(prog.inputs):
        limit = prog.cpu_limits[i]
        status, value, err = "ok", None, ""
        start = time.process_time()
        try:
            _arm(limit, limit * limits.wall_factor + limits.wall_margin_s)
            if prog.mode == "call":
                value = target(*inp)
            else:
                value = eval(inp, g)
            _disarm()
        except BaseException as exc:  # noqa: BLE001
            _disarm()
            status = "timeout" if isinstance(exc, _Timeout) else "error"
            err = "" if status == "timeout" else _error_name(exc)
        cpu = time.process_time() - start
        if status == "ok":
            try:
                value = to_plain(value)
            except (Unencodable, RecursionError) as exc:
                status, value, err = "unencodable", None, str(exc)[:200]
        # Results go out in batches (fewer writes and messages), at least every 50 ms and
        # before anything that may end the child, so a kill loses little.
        pending.append(("in", i, status, value, cpu, err))
        now = time.monotonic()
        if len(pending) >= 256 or now - last_flush > 0.05 or status != "ok":
            _emit_batch(res_fd, pending)
            pending, last_flush = [], now
        if status == "timeout" and prog.stop_on_timeout:
            break
    _emit_batch(res_fd, pending)
    _emit(res_fd, ("end",))


def _run_stdin(prog: Program, index: int, res_fd: int, limits: SandboxLimits) -> None:
    g: dict[str, Any] = {"__name__": prog.main_name or "__main__"}
    # Python objects over fds 0/1 were created by the worker; rebuild them on the new descriptors.
    sys.stdin = open(0, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    limit = prog.cpu_limits[index]
    start = time.process_time()
    status, err = "ok", ""
    try:
        code = compile(prog.source, "<solution>", "exec")
    except BaseException as exc:  # noqa: BLE001
        _emit(res_fd, ("setup", False, _error_name(exc)))
        return
    _emit(res_fd, ("setup", True, ""))
    try:
        _arm(limit, limit * limits.wall_factor + limits.wall_margin_s)
        exec(code, g)
        if prog.entry:
            g[prog.entry]()
        _disarm()
    except SystemExit:
        _disarm()  # APPS' harness swallows SystemExit: exit() ends the program normally
    except BaseException as exc:  # noqa: BLE001
        _disarm()
        status = "timeout" if isinstance(exc, _Timeout) else "error"
        err = "" if status == "timeout" else _error_name(exc)
    try:
        sys.stdout.flush()
    except BaseException:  # noqa: BLE001 - a closed/broken stdout is the program's problem
        pass
    _emit(res_fd, ("in", index, status, None, time.process_time() - start, err))
    _emit(res_fd, ("end",))


def child_main(
    prog: Program,
    index: int,
    limits: SandboxLimits,
    workdir: str,
    uid: int | None,
    res_w: int,
    stdin_fd: int,
    stdout_fd: int,
    as_base: int,
) -> None:
    """Isolate, then run the program. Never returns."""
    code = 0
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(stdin_fd if stdin_fd >= 0 else devnull, 0)
        os.dup2(stdout_fd if stdout_fd >= 0 else devnull, 1)
        os.dup2(devnull, 2)
        os.dup2(res_w, 3)
        os.closerange(4, 1 << 16)  # the engine pipes and everything else the worker had
        os.chdir(workdir)
        total_cpu = (
            prog.cpu_limits[index]
            if prog.mode == "stdin"
            else sum(prog.cpu_limits) + prog.setup_cpu_s
        )
        cpu_soft = int(total_cpu) + 2
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_soft, cpu_soft + 1))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        mem = as_base + limits.memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.fsize_bytes, limits.fsize_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.nofile, limits.nofile))
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        # After the uid change: root would ignore the limit; the new uid cannot raise it again.
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.nproc, limits.nproc))
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        os.environ.clear()
        os.environ.update(
            {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
        )
        tempfile.tempdir = workdir
        signal.signal(signal.SIGPROF, _on_timer)
        signal.signal(signal.SIGALRM, _on_timer)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        sys.argv = ["solution.py"]
        sys.setrecursionlimit(10_000)
        if prog.mode == "stdin":
            _run_stdin(prog, index, 3, limits)
        else:
            _run_call_or_eval(prog, 3, limits)
    except BaseException:  # noqa: BLE001 - the untrusted side may break anything; exit non-zero
        code = 70
    os._exit(code)
