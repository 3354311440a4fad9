"""The worker: a trusted long-lived process that forks one isolated child per program.

Entry point ``python -m attribution.execution.sandbox IN OUT`` (``worker_main``).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from attribution.execution.sandbox.child import ChildSetup, child_main, cpu_hard_limit
from attribution.execution.sandbox.framing import ResultArea, read_msg, write_all, write_msg
from attribution.execution.sandbox.isolation import Isolation, enter_namespaces, finish
from attribution.execution.sandbox.linux import (
    MS_NODEV,
    MS_NOSUID,
    PR_SET_PDEATHSIG,
    last_error,
    mount,
    prctl,
    umount,
)
from attribution.execution.sandbox.records import Outcome, Program, SandboxLimits, SandboxResult

# Seconds past an input's wall limit before the worker kills the child (its own wall timer,
# at the limit, normally ends the input first).
KILL_GRACE_S = 1.0
_MEMORY_SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGKILL)


@dataclass
class _ChildEnd:
    """How one child ended, and what it reported."""

    ended: str = "exited"  # or "timeout" (the worker's wall deadline), "output_limit"
    code: int = 0  # os.waitstatus_to_exitcode: -N for signal N
    cpu_s: float = 0.0
    max_rss: int = 0
    stdout: bytes = b""
    msgs: list[tuple[Any, ...]] = field(default_factory=list)
    current: int = -2  # the input the child marked last
    overflow: bool = False

    @property
    def signal(self) -> int | None:
        return -self.code if self.code < 0 else None


def _children() -> list[int]:
    """This process's children (they include the orphans it adopted as a subreaper)."""
    kids: list[int] = []
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{tid}/children") as fh:
            kids += [int(p) for p in fh.read().split()]
    return kids


def _vm_size() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


class Worker:
    """Serves programs one at a time: one isolated child each (see ``child.py``)."""

    def __init__(
        self, limits: SandboxLimits, iso: Isolation, area: ResultArea, as_base: int
    ) -> None:
        self.limits = limits
        self.iso = iso
        self.layers = list(iso.layers)
        # Without a root view, children work in folders below this one.
        self.root = iso.workroot
        self.area = area
        self.as_base = as_base
        self.tmp_mounted = False

    # -- the private /tmp (with a root view) ----------------------------------------------------

    def _mount_tmp(self) -> None:
        """A tmpfs on /tmp, the children's working directory, owned by the children's uid."""
        uid = self.iso.uid
        owner = f",uid={uid},gid={uid}" if uid is not None else ""
        opts = f"mode=0700,size={self.limits.tmp_bytes},nr_inodes=4096{owner}"
        if not mount("tmpfs", self.iso.tmp, "tmpfs", MS_NOSUID | MS_NODEV, opts):
            raise OSError(f"tmpfs on {self.iso.tmp}: {last_error()}")
        self.tmp_mounted = True

    def _empty_tmp(self) -> None:
        """After a child (its whole tree dead): remove whatever it wrote, so that the next
        program finds /tmp empty; if anything resists, a fresh tmpfs replaces the old one.
        Cheaper than a tmpfs per child, and nearly free for a program that wrote nothing."""
        with os.scandir(self.iso.tmp) as it:
            entries = list(it)
        if not entries:
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
        with os.scandir(self.iso.tmp) as it:
            if next(it, None) is None:
                return
        umount(self.iso.tmp)
        self.tmp_mounted = False

    # -- one child ---------------------------------------------------------------------------

    def _spawn(self, prog: Program, index: int, workdir: str, stdin_data: bytes | None) -> Any:
        out_r, out_w = os.pipe() if prog.mode == "stdin" else (-1, -1)
        in_fd = -1
        if stdin_data is not None:
            in_fd = os.memfd_create("stdin")
            write_all(in_fd, stdin_data)
            os.lseek(in_fd, 0, os.SEEK_SET)
        self.area.reset()
        setup = ChildSetup(
            workdir=workdir,
            uid=self.iso.uid,
            as_base=self.as_base,
            ruleset_fd=self.iso.ruleset_fd,
            seccomp=self.iso.seccomp,
        )
        pid = os.fork()
        if pid == 0:
            child_main(prog, index, self.limits, setup, self.area, in_fd, out_w)
        for fd in (out_w, in_fd):
            if fd >= 0:
                os.close(fd)
        return pid, out_r

    def _input_deadline(self, prog: Program, index: int, spawned: float) -> float:
        """When the input the child is running (as it marked it) must have ended: its wall
        limit plus a grace. Catches what the child's own timers cannot interrupt, such as a
        long C-level call waiting on something; the marks are untrusted, so the program's
        overall deadline still applies."""
        current, started = self.area.position()
        if current == -2 or not spawned <= started < spawned + 1e6:
            current, started = (-1 if prog.mode != "stdin" else index), spawned
        if current == -1:
            limit = prog.setup_cpu_s
        elif 0 <= current < len(prog.cpu_limits):
            limit = prog.cpu_limits[current]
        else:
            return float("inf")
        return started + limit * self.limits.wall_factor + self.limits.wall_margin_s + KILL_GRACE_S

    def _run_child(
        self, prog: Program, index: int, stdin_data: bytes | None, wall_s: float
    ) -> _ChildEnd:
        """Run one child until it exits or a limit ends it; kill its whole tree."""
        if self.iso.root_view:
            workdir = self.iso.tmp  # emptied after each child (_empty_tmp)
            if not self.tmp_mounted:
                self._mount_tmp()
        else:
            workdir = tempfile.mkdtemp(dir=self.root)
            if self.iso.uid is not None:
                os.chown(workdir, self.iso.uid, self.iso.uid)
            os.chmod(workdir, 0o700)
        spawned = time.monotonic()
        c2, out_r = self._spawn(prog, index, workdir, stdin_data)
        end = _ChildEnd()
        out_buf = bytearray()
        try:
            pidfd = os.pidfd_open(c2)
            streams = [out_r] if out_r >= 0 else []
            deadline = spawned + wall_s
            exited = False
            grace_until = float("inf")
            while streams or not exited:
                now = time.monotonic()
                due = min(deadline, grace_until)
                if not exited:
                    due = min(due, self._input_deadline(prog, index, spawned))
                if now >= due:
                    # Read the mark again: the child may have moved on to a later input.
                    if exited or now >= min(deadline, self._input_deadline(prog, index, spawned)):
                        end.ended = "timeout" if not exited else end.ended
                        break
                    continue
                wait = [*streams, pidfd] if not exited else streams
                ready, _, _ = select.select(wait, [], [], due - now)
                for fd in ready:
                    if fd == pidfd:
                        exited = True
                        # Without a PID namespace a grandchild may hold the pipe open.
                        grace_until = time.monotonic() + 0.5
                        continue
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:
                        streams.remove(fd)
                        continue
                    out_buf += chunk
                    if len(out_buf) > self.limits.stdout_bytes:
                        end.ended = "output_limit"
                        streams.clear()
                        break
                if end.ended == "output_limit":
                    break
            self._kill_tree(c2, end)
            os.close(pidfd)
        finally:
            if out_r >= 0:
                os.close(out_r)
            self._kill_strays()
            self._reap()
            if self.iso.root_view:
                self._empty_tmp()
            else:
                shutil.rmtree(workdir, ignore_errors=True)
        end.stdout = bytes(out_buf)
        end.msgs, end.current, end.overflow = self.area.snapshot()
        return end

    def _kill_tree(self, c2: int, end: _ChildEnd) -> None:
        """Kill the program and everything it started; record how the program itself ended."""
        for target in (c2, -c2):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(target, signal.SIGKILL)
        _, status, usage = os.wait4(c2, 0)
        end.code = os.waitstatus_to_exitcode(status)
        end.cpu_s = usage.ru_utime + usage.ru_stime
        end.max_rss = usage.ru_maxrss * 1024
        if self.iso.pidns:
            # The worker is PID 1 of its namespace: kill(-1) reaches every other process in it,
            # i.e. everything the program spawned, setsid daemons included.
            with contextlib.suppress(ProcessLookupError):
                os.kill(-1, signal.SIGKILL)
            # Everything in the namespace is our descendant: reap until none is left, so that
            # no zombie outlives the program either.
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                try:
                    pid, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    time.sleep(0.001)

    def _kill_strays(self) -> None:
        """Without a PID namespace: kill whatever the program left running. As root, every
        process of the sandbox uid; otherwise the worker's descendants (orphans come to the
        worker, a subreaper), until none is left."""
        if self.iso.pidns:
            return
        if self.iso.uid is not None:
            self._kill_uid(self.iso.uid)
            return
        for _ in range(1000):
            kids = _children()
            if not kids:
                return
            for pid in kids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            self._reap_blocking(len(kids))

    @staticmethod
    def _kill_uid(uid: int) -> None:
        pid = os.fork()
        if pid == 0:
            try:
                os.setresuid(uid, uid, uid)
                for _ in range(100):
                    try:
                        os.kill(-1, signal.SIGKILL)  # every process of this uid but us
                    except ProcessLookupError:
                        break
                    time.sleep(0.001)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)

    @staticmethod
    def _reap_blocking(n: int) -> None:
        for _ in range(n):
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                return

    def _reap(self) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    # -- one program -------------------------------------------------------------------------

    def run(self, prog: Program) -> SandboxResult:
        start = time.monotonic()
        outcomes = [Outcome("not_run") for _ in prog.inputs]
        if prog.mode == "stdin":
            result = self._run_stdin(prog, outcomes)
        else:
            result = self._run_call(prog, outcomes)
        result.wall_s = time.monotonic() - start
        result.layers = tuple(self.layers)
        return result

    def _run_stdin(self, prog: Program, outcomes: list[Outcome]) -> SandboxResult:
        """One child per input: what it writes to stdout is the input's value."""
        lim = self.limits
        result = SandboxResult("ok", outcomes)
        for i, inp in enumerate(prog.inputs):
            data = inp.encode("utf-8", "surrogateescape") if isinstance(inp, str) else inp
            wall = prog.cpu_limits[i] * lim.wall_factor + lim.wall_margin_s + KILL_GRACE_S
            end = self._run_child(prog, i, data, wall)
            result.exit_codes.append(end.code)
            if _isolation_failed(end, result):
                break
            setup = next((m for m in end.msgs if m[0] == "setup"), None)
            if setup is not None and not setup[1]:
                result.status, result.error, result.setup_line = "setup_error", setup[2], setup[3]
                result.signal = end.signal
                break
            got = next((m for m in end.msgs if m[0] in ("ok", "in") and m[1] == i), None)
            cut = self._cut_short(prog, i, end)
            if cut is not None:
                outcomes[i] = cut
            elif got is None or end.code != 0:
                outcomes[i] = self._crash_outcome(end)
            elif got[0] == "in":
                outcomes[i] = _outcome(got)
            else:  # what it wrote to stdout is its value
                text = end.stdout.decode("utf-8", "replace")
                outcomes[i] = Outcome("ok", value=text, cpu_s=got[3])
            result.signal = end.signal
        return result

    def _run_call(self, prog: Program, outcomes: list[Outcome]) -> SandboxResult:
        """One child for all inputs (call and eval modes)."""
        lim, n = self.limits, len(prog.inputs)
        wall = (
            (sum(prog.cpu_limits) + prog.setup_cpu_s) * lim.wall_factor
            + lim.wall_margin_s * (n + 1)
            + KILL_GRACE_S
        )
        end = self._run_child(prog, 0, None, wall)
        result = SandboxResult("crashed", outcomes, exit_codes=[end.code], signal=end.signal)
        if _isolation_failed(end, result):
            return result
        setup_ok: bool | None = None
        finished = False
        for m in end.msgs:
            if m[0] == "ok":
                if 0 <= m[1] < n:
                    outcomes[m[1]] = Outcome("ok", m[2], "", m[3])
            elif m[0] == "setup":
                setup_ok = m[1]
                if not m[1]:
                    result.error, result.setup_line = m[2], m[3]
            elif m[0] == "in" and 0 <= m[1] < n:
                outcomes[m[1]] = _outcome(m)
            elif m[0] == "end":
                finished = True
        running = end.current if 0 <= end.current < n else None
        if running is not None and outcomes[running].status != "not_run":
            running = None  # it ended between two inputs
        cut = self._cut_short(prog, end.current, end)
        if setup_ok is False:
            result.status = "setup_error"
        elif cut is not None and setup_ok is None:
            result.status = "output_limit" if cut.limit == "output" else "setup_error"
            result.error = "" if cut.limit == "output" else "timeout"
        elif cut is not None:
            result.status = "output_limit" if cut.limit == "output" else "timeout"
            if running is not None:
                outcomes[running] = cut
        elif finished and end.code == 0:
            result.status = "ok"
        else:
            result.error = describe_exit(end.code)
            if running is not None:
                outcomes[running] = self._crash_outcome(end)
        return result

    def _cut_short(self, prog: Program, index: int, end: _ChildEnd) -> Outcome | None:
        """The outcome of input ``index`` when a limit ended the child (None otherwise): the
        worker's wall deadline, the CPU limit (SIGXCPU at the soft limit, SIGKILL at the hard
        one) or the output caps."""
        if end.ended == "output_limit" or end.overflow:
            cap = self.limits.stdout_bytes if prog.mode == "stdin" else self.limits.result_bytes
            return Outcome("error", message=f"output exceeds {cap} bytes", limit="output")
        if end.ended == "timeout":
            return Outcome("timeout", cpu_s=end.cpu_s, limit="wall")
        hard = cpu_hard_limit(prog, index)
        if end.signal == signal.SIGXCPU or (
            end.signal == signal.SIGKILL and end.cpu_s >= hard - 0.5
        ):
            return Outcome("timeout", cpu_s=end.cpu_s, limit="cpu")
        return None

    def _crash_outcome(self, end: _ChildEnd) -> Outcome:
        """The input during which the child died on its own (``os._exit``, a signal)."""
        # A death by signal at a high peak is most likely the memory limit (an allocation the
        # interpreter could not turn into MemoryError); the verdict is a failure either way.
        memory = end.signal in _MEMORY_SIGNALS and end.max_rss >= self.limits.memory_bytes // 2
        return Outcome("error", message=describe_exit(end.code), limit="memory" if memory else "")


def _isolation_failed(end: _ChildEnd, result: SandboxResult) -> bool:
    """True (and ``result`` a sandbox_error) when the child died before the program could run:
    its own isolation failed. Never a verdict on the program."""
    failed = next((m[1] for m in end.msgs if m[0] == "isolation"), None)
    if failed is None and (end.current != -2 or end.msgs or end.ended != "exited"):
        return False
    result.status = "sandbox_error"
    result.error = f"sandboxed child could not isolate itself: {failed or describe_exit(end.code)}"
    result.signal = end.signal
    return True


def _outcome(msg: tuple[Any, ...]) -> Outcome:
    """An Outcome from a validated "in" message (see framing._valid_message)."""
    _, _, status, value, cpu, error, line, message, limit = msg
    if status not in ("ok", "error", "timeout", "unencodable"):
        status = "error"
    if limit not in ("", "cpu", "wall", "memory", "output"):
        limit = ""
    return Outcome(status, value if status == "ok" else None, error, cpu, line, message, limit)


def describe_exit(code: int) -> str:
    """A readable account of a wait status code (``os.waitstatus_to_exitcode``)."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown"
        return f"killed by signal {-code} ({name})"
    return f"exited with status {code}" + (" before finishing" if code == 0 else "")


def worker_main(argv: list[str]) -> int:
    """Entry point of a worker process: ``python -m attribution.execution.sandbox IN OUT``."""
    in_fd, out_fd = int(argv[0]), int(argv[1])
    limits, index, preload, options = read_msg(in_fd)
    for name in preload:
        with contextlib.suppress(ImportError):
            __import__(name)
    iso = enter_namespaces(limits.pid_namespace, options.namespaces)
    if iso.pidns:
        alive_r, alive_w = os.pipe()  # EOF on alive_r once the outer process is gone
        pid = os.fork()  # the child is PID 1 of the new namespace and serves the jobs
        if pid > 0:
            os.close(in_fd)
            os.close(out_fd)
            os.close(alive_r)
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)
        # If the outer process is killed, take the namespace (and every sandboxed program in
        # it) down too; the pipe catches a death before prctl took effect.
        os.close(alive_w)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if select.select([alive_r], [], [], 0)[0]:
            os._exit(1)
        os.close(alive_r)
    # Before the root view hides /proc (no PID namespace): the area is created before any
    # child, so every child inherits it, and the memory limit comes on top of it.
    area = ResultArea(limits.result_bytes)
    as_base = _vm_size()
    finish(iso, index, limits.uid_base, list(options.hide), options.landlock)
    worker = Worker(limits, iso, area, as_base)
    write_msg(out_fd, ("ready", tuple(worker.layers), worker.root, tuple(iso.notes), iso.stage))
    try:
        while True:
            msg = read_msg(in_fd)
            if msg is None:
                return 0
            job_id, prog = msg
            try:
                result = worker.run(prog)
            except Exception as exc:  # the worker's own failure: report it, keep serving
                result = SandboxResult(
                    "sandbox_error",
                    [Outcome("not_run") for _ in prog.inputs],
                    f"{type(exc).__name__}: {exc}",
                    layers=tuple(worker.layers),
                )
            try:
                write_msg(out_fd, (job_id, result))
            except (RecursionError, pickle.PicklingError, TypeError, ValueError) as exc:
                for o in result.outcomes:
                    o.value, o.status = None, "unencodable" if o.status == "ok" else o.status
                result.error = f"result not transferable: {type(exc).__name__}"
                write_msg(out_fd, (job_id, result))
    finally:
        if worker.root:
            shutil.rmtree(worker.root, ignore_errors=True)
