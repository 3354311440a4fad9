"""The engine side: a pool of long-lived sandbox workers (``SandboxPool``)."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import warnings
from collections.abc import Iterable, Iterator

from attribution.execution.sandbox.framing import read_msg, write_msg
from attribution.execution.sandbox.isolation import (
    ENV_NO_LANDLOCK,
    ENV_NO_USERNS,
    credential_paths,
    missing_isolation,
)
from attribution.execution.sandbox.records import (
    Outcome,
    Program,
    SandboxLimits,
    SandboxResult,
    WorkerOptions,
)

# Imported by every worker before it forks, so that importing them in a child costs nothing.
PRELOAD = tuple(
    "sys time itertools collections functools math fractions typing random heapq re string "
    "bisect copy operator decimal statistics json datetime hashlib array".split()
)

_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "TZ")


def _library_root() -> str:
    """.../workflow_scripts (this file is .../workflow_scripts/attribution/execution/sandbox/)."""
    path = os.path.abspath(__file__)
    for _ in range(4):
        path = os.path.dirname(path)
    return path


def worker_environment() -> dict[str, str]:
    """A whitelisted environment for workers: nothing secret can reach them or their children."""
    env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
    pkg_root = _library_root()
    env.update(
        {
            "PYTHONPATH": pkg_root,
            "PYTHONHASHSEED": "0",  # set/dict-of-str order identical in every run
            "PYTHONDONTWRITEBYTECODE": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
    )
    return env


def worker_options() -> WorkerOptions:
    """What workers need to know from the engine's environment (which they never see)."""
    project = os.path.dirname(_library_root())
    return WorkerOptions(
        namespaces=os.environ.get(ENV_NO_USERNS, "") != "1",
        landlock=os.environ.get(ENV_NO_LANDLOCK, "") != "1",
        hide=tuple(credential_paths(os.environ, os.getcwd(), project)),
    )


class SandboxUnavailable(RuntimeError):
    """Isolation that ``strict`` mode requires cannot be established on this machine."""


class SandboxIsolationWarning(UserWarning):
    """``best_effort`` mode runs untrusted code with some isolation missing."""


def isolation_problem(layers: tuple[str, ...], notes: tuple[str, ...], mode: str) -> str:
    """The message for missing isolation ("" when nothing required is missing)."""
    missing = missing_isolation(layers)
    if not missing:
        return ""
    why = "; ".join(notes) or "no reason reported"
    head = (
        f"sandbox: no {', no '.join(missing)} isolation for untrusted code on this machine "
        f"(layers in force: {', '.join(layers)}; {why})."
    )
    if mode == "best_effort":
        return head + " Running anyway (execution.isolation: best_effort)."
    return (
        head + " Refusing to run it (execution.isolation: strict). To enable it, allow "
        "unprivileged user namespaces (Debian/Ubuntu: sysctl -w "
        "kernel.unprivileged_userns_clone=1; RHEL and others: sysctl -w "
        "user.max_user_namespaces=16384; Ubuntu >= 23.10 also "
        "kernel.apparmor_restrict_unprivileged_userns=0), or run on a kernel with Landlock "
        "(Linux >= 5.13); or accept weaker isolation with execution.isolation: best_effort "
        "(python -m attribution evaluate --isolation best_effort)."
    )


class _Slot:
    def __init__(
        self,
        index: int,
        limits: SandboxLimits,
        preload: tuple[str, ...],
        options: WorkerOptions,
    ) -> None:
        import subprocess

        self.index = index
        job_r, self.job_w = os.pipe()
        self.res_r, res_w = os.pipe()
        self.proc = subprocess.Popen(
            # -P: no working directory on the import path (nor, then, in the sandbox's view)
            [sys.executable, "-P", "-m", "attribution.execution.sandbox", str(job_r), str(res_w)],
            pass_fds=(job_r, res_w),
            env=worker_environment(),
            stdin=subprocess.DEVNULL,
            close_fds=True,
        )
        os.close(job_r)
        os.close(res_w)
        write_msg(self.job_w, (limits, index, preload, options))
        self.layers: tuple[str, ...] = ()
        self.notes: tuple[str, ...] = ()
        self.root = ""
        self.stage = ""
        self.in_flight: dict[int, Program] = {}

    def wait_ready(self) -> None:
        ready = read_msg(self.res_r)
        if not ready or ready[0] != "ready":
            raise RuntimeError(f"sandbox worker {self.index} failed to start")
        self.layers, self.root, self.notes, self.stage = ready[1:5]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.job_w)
        try:
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError):
            os.close(self.res_r)
        # A killed worker could not remove its (empty) folders itself; the stage of the root
        # view is a mount point only inside the worker's namespace, an empty folder here.
        for folder in (self.root, self.stage):
            if folder:
                with contextlib.suppress(OSError):
                    os.rmdir(folder)


class SandboxPool:
    """A pool of sandbox workers; use as a context manager.

    ``imap_unordered(programs)`` yields ``(index, SandboxResult)`` as programs finish, keeping
    every worker busy. ``preload`` names modules each worker imports before forking (the APPS
    checker adds numpy, which its program prelude imports). A worker gets its next program only
    once it has sent its last result: with large messages in both directions, anything more
    could deadlock on full pipes.

    Once the workers are ready, the pool checks their isolation: with ``limits.isolation``
    "strict" a missing kind (file-system, network, credential) raises ``SandboxUnavailable``
    naming it and how to enable it; with "best_effort" it warns (``SandboxIsolationWarning``,
    shown once per process for the same message) and runs.
    """

    def __init__(
        self,
        workers: int = 1,
        limits: SandboxLimits | None = None,
        preload: tuple[str, ...] = PRELOAD,
        wait: bool = True,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.limits = limits or SandboxLimits()
        self.preload = tuple(preload)
        self.options = worker_options()
        # Started all at once, so their start-up runs in parallel (and, with wait=False, in
        # parallel with whatever the caller does before its first program).
        self.slots = [_Slot(i, self.limits, self.preload, self.options) for i in range(workers)]
        self._ready = False
        if wait:
            self._ensure_ready()

    def _ensure_ready(self) -> None:
        if self._ready:
            return
        try:
            for slot in self.slots:
                slot.wait_ready()
        except BaseException:
            self.close()
            raise
        self._ready = True
        slot = self.slots[0]
        problem = isolation_problem(slot.layers, slot.notes, self.limits.isolation)
        if problem and self.limits.isolation == "strict":
            self.close()
            raise SandboxUnavailable(problem)
        if problem:
            warnings.warn(problem, SandboxIsolationWarning, stacklevel=3)

    @property
    def layers(self) -> tuple[str, ...]:
        self._ensure_ready()
        return self.slots[0].layers

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for slot in self.slots:  # every worker sees EOF first, then all are awaited
            with contextlib.suppress(OSError):
                os.close(slot.job_w)
        for slot in self.slots:
            slot.close()
        self.slots = []

    def run(self, program: Program) -> SandboxResult:
        return next(self.imap_unordered([program]))[1]

    def imap_unordered(self, programs: Iterable[Program]) -> Iterator[tuple[int, SandboxResult]]:
        self._ensure_ready()
        pending = enumerate(programs)
        exhausted = False

        def feed(slot: _Slot) -> None:
            nonlocal exhausted
            if exhausted or slot.in_flight:
                return
            nxt = next(pending, None)
            if nxt is None:
                exhausted = True
                return
            slot.in_flight[nxt[0]] = nxt[1]
            with contextlib.suppress(BrokenPipeError):  # a dead worker shows up as EOF below
                write_msg(slot.job_w, nxt)

        for slot in self.slots:
            feed(slot)
        while any(s.in_flight for s in self.slots):
            by_fd = {s.res_r: s for s in self.slots if s.in_flight}
            ready, _, _ = select.select(list(by_fd), [], [])
            for fd in ready:
                slot = by_fd[fd]
                msg = read_msg(fd)
                if msg is None:  # the worker died: fail its programs, start a new one
                    for job_id, prog in slot.in_flight.items():
                        yield (
                            job_id,
                            SandboxResult(
                                "sandbox_error",
                                [Outcome("not_run") for _ in prog.inputs],
                                "sandbox worker died",
                            ),
                        )
                    self._replace(slot)
                    feed(self.slots[slot.index])
                    continue
                job_id, result = msg
                slot.in_flight.pop(job_id, None)
                feed(slot)
                yield job_id, result

    def _replace(self, slot: _Slot) -> None:
        slot.in_flight.clear()
        slot.close()
        self.slots[slot.index] = _Slot(slot.index, self.limits, self.preload, self.options)
        self.slots[slot.index].wait_ready()
