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
from typing import Any

from attribution.execution.sandbox.child import child_main
from attribution.execution.sandbox.framing import parse_frames, read_msg, write_all, write_msg
from attribution.execution.sandbox.linux import (
    CLONE_NEWNET,
    CLONE_NEWPID,
    PR_SET_CHILD_SUBREAPER,
    PR_SET_PDEATHSIG,
    expose_interpreter,
    mount,
    prctl,
    private_mount_namespace,
    umount,
    unshare,
)
from attribution.execution.sandbox.records import Outcome, Program, SandboxLimits, SandboxResult


def _vm_size() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


class Worker:
    def __init__(
        self,
        index: int,
        limits: SandboxLimits,
        pidns: bool,
        netns: bool,
        mounts: str,
        mount_ns: bool = False,
    ) -> None:
        self.limits = limits
        self.layers: list[str] = ["rlimits", "fresh_process", "private_tmpdir", "scrubbed_env"]
        self.root = tempfile.mkdtemp(prefix=f"sandbox-w{index}-")
        # Working directories on a private tmpfs: cheap to create and delete, and whatever the
        # programs write never touches the disk (the size caps it too).
        self.tmpfs = mount_ns and mount("tmpfs", self.root, "tmpfs", 0, "size=512m,mode=0711")
        if self.tmpfs:
            self.layers.append("tmpfs_workdir")
        os.chmod(self.root, 0o711)
        self.pidns = pidns
        if pidns:
            self.layers.append("pidns")
        elif prctl(PR_SET_CHILD_SUBREAPER, 1):
            self.layers.append("subreaper")
        if netns:
            self.layers.append("netns")
        if mounts == "hidden_home":
            self.layers.append("hidden_home")
        self.uid: int | None = None
        if os.geteuid() == 0 and mounts != "blocked":
            self.uid = limits.uid_base + index
            self.layers += ["unprivileged_uid", "nproc"]
        self.as_base = _vm_size()

    # -- one child ---------------------------------------------------------------------------

    def _spawn(self, prog: Program, index: int, workdir: str, stdin_data: bytes | None) -> Any:
        res_r, res_w = os.pipe()
        out_r, out_w = os.pipe() if prog.mode == "stdin" else (-1, -1)
        in_fd = -1
        if stdin_data is not None:
            in_fd = os.memfd_create("stdin")
            write_all(in_fd, stdin_data)
            os.lseek(in_fd, 0, os.SEEK_SET)
        pid = os.fork()
        if pid == 0:
            child_main(
                prog, index, self.limits, workdir, self.uid, res_w, in_fd, out_w, self.as_base
            )
        for fd in (res_w, out_w, in_fd):
            if fd >= 0:
                os.close(fd)
        return pid, res_r, out_r

    def _run_child(
        self, prog: Program, index: int, stdin_data: bytes | None, wall_s: float
    ) -> tuple[str, bytes, bytes, int]:
        """Run one child; return (how it ended, result bytes, stdout bytes, exit code)."""
        workdir = tempfile.mkdtemp(dir=self.root)
        if self.uid is not None:
            os.chown(workdir, self.uid, self.uid)
        os.chmod(workdir, 0o700)
        c2, res_r, out_r = self._spawn(prog, index, workdir, stdin_data)
        ended = "exited"
        res_buf, out_buf = bytearray(), bytearray()
        exit_code = -1
        try:
            pidfd = os.pidfd_open(c2)
            streams = {res_r: res_buf}
            if out_r >= 0:
                streams[out_r] = out_buf
            caps = {res_r: self.limits.result_bytes, out_r: self.limits.stdout_bytes}
            deadline = time.monotonic() + wall_s
            exited = False
            grace_until = None
            while streams or not exited:
                now = time.monotonic()
                if now >= deadline or (grace_until is not None and now >= grace_until):
                    ended = "timeout" if not exited else ended
                    break
                wait = [*streams, pidfd] if not exited else list(streams)
                limit_t = deadline if grace_until is None else min(deadline, grace_until)
                ready, _, _ = select.select(wait, [], [], max(0.0, limit_t - now))
                for fd in ready:
                    if fd == pidfd:
                        exited = True
                        # Without a PID namespace a grandchild may hold the pipes open.
                        grace_until = time.monotonic() + 0.5
                        continue
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:
                        del streams[fd]
                        continue
                    streams[fd] += chunk
                    if len(streams[fd]) > caps[fd]:
                        ended = "output_limit"
                        streams.clear()
                        break
                if ended == "output_limit":
                    break
            exit_code = self._kill_tree(c2)
            os.close(pidfd)
        finally:
            for fd in (res_r, out_r):
                if fd >= 0:
                    os.close(fd)
            self._kill_uid()
            self._reap()
            shutil.rmtree(workdir, ignore_errors=True)
        return ended, bytes(res_buf), bytes(out_buf), exit_code

    def _kill_tree(self, c2: int) -> int:
        """Kill the program and everything it started; return the program's exit code."""
        for target in (c2, -c2):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(target, signal.SIGKILL)
        _, status = os.waitpid(c2, 0)
        code = os.waitstatus_to_exitcode(status)
        if self.pidns:
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
        return code

    def _kill_uid(self) -> None:
        """Without a PID namespace, kill whatever still runs under the sandbox uid."""
        if self.pidns or self.uid is None:
            return
        pid = os.fork()
        if pid == 0:
            try:
                os.setresuid(self.uid, self.uid, self.uid)
                for _ in range(100):
                    try:
                        os.kill(-1, signal.SIGKILL)  # every process of this uid but us
                    except ProcessLookupError:
                        break
                    time.sleep(0.001)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)

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
        n = len(prog.inputs)
        outcomes = [Outcome("not_run") for _ in range(n)]
        lim = self.limits
        if prog.mode == "stdin":
            result = SandboxResult("ok", outcomes, layers=tuple(self.layers))
            for i, inp in enumerate(prog.inputs):
                data = inp.encode("utf-8", "surrogateescape") if isinstance(inp, str) else inp
                wall = prog.cpu_limits[i] * lim.wall_factor + lim.wall_margin_s + 1.0
                ended, res, out, code = self._run_child(prog, i, data, wall)
                result.exit_codes.append(code)
                msgs = parse_frames(res)
                setup = next((m for m in msgs if m[0] == "setup"), None)
                if setup is not None and not setup[1]:
                    result.status, result.error = "setup_error", str(setup[2])
                    break
                got = next((m for m in msgs if m[0] == "in" and m[1] == i), None)
                if ended == "output_limit":
                    outcomes[i] = Outcome("error", error="output_limit")
                elif ended == "timeout" or (got is not None and got[2] == "timeout"):
                    outcomes[i] = Outcome("timeout")
                elif got is None or code != 0:
                    outcomes[i] = Outcome("error", error=f"crashed (exit {code})")
                elif got[2] != "ok":
                    outcomes[i] = Outcome(str(got[2]), error=str(got[5]), cpu_s=float(got[4]))
                else:
                    text = out.decode("utf-8", "replace")
                    outcomes[i] = Outcome("ok", value=text, cpu_s=float(got[4]))
            result.wall_s = time.monotonic() - start
            return result

        wall = (
            (sum(prog.cpu_limits) + prog.setup_cpu_s) * lim.wall_factor
            + lim.wall_margin_s * (n + 1)
            + 1.0
        )
        ended, res, _, code = self._run_child(prog, 0, None, wall)
        msgs = parse_frames(res)
        status, error = "crashed", ""
        for m in msgs:
            if m[0] == "setup" and not m[1]:
                status, error = "setup_error", str(m[2])
            elif m[0] == "in" and isinstance(m[1], int) and 0 <= m[1] < n:
                st = m[2] if m[2] in ("ok", "error", "timeout", "unencodable") else "error"
                outcomes[m[1]] = Outcome(st, m[3] if st == "ok" else None, str(m[5]), float(m[4]))
            elif m[0] == "end" and status != "setup_error":
                status = "ok"
        if ended in ("timeout", "output_limit"):
            status = ended
            first = next((i for i, o in enumerate(outcomes) if o.status == "not_run"), None)
            if first is not None and ended == "timeout":
                outcomes[first] = Outcome("timeout")
        elif status == "ok" and code != 0:
            status = "crashed"
        if status == "crashed":
            error = f"exit {code}"
        return SandboxResult(
            status, outcomes, error, time.monotonic() - start, tuple(self.layers), [code]
        )


def worker_main(argv: list[str]) -> int:
    """Entry point of a worker process: ``python -m attribution.execution.sandbox IN OUT``."""
    in_fd, out_fd = int(argv[0]), int(argv[1])
    limits, index, preload = read_msg(in_fd)
    for name in preload:
        with contextlib.suppress(ImportError):
            __import__(name)
    netns = unshare(CLONE_NEWNET)  # the worker needs no network: nor do its children
    pidns = limits.pid_namespace and unshare(CLONE_NEWPID)
    if pidns:
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
    mount_ns = os.geteuid() == 0 and private_mount_namespace()
    mounts = expose_interpreter(mount_ns) if os.geteuid() == 0 else ""
    worker = Worker(index, limits, pidns, netns, mounts, mount_ns)
    write_msg(out_fd, ("ready", tuple(worker.layers), worker.root))
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
        shutil.rmtree(worker.root, ignore_errors=True)
        if worker.tmpfs and umount(worker.root):
            with contextlib.suppress(OSError):
                os.rmdir(worker.root)
