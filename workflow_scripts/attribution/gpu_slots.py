"""Local GPU slots: a job that declares ``resources: gpu=N`` takes N free GPUs of this machine.

Snakemake's ``--resources gpu=K`` only counts; it does not say *which* GPU a job may use. Each
GPU here is a lock file on local disk (``{lock_dir}/gpu{id}.lock``); a job takes the first N
whose non-blocking ``flock`` succeeds and sets ``CUDA_VISIBLE_DEVICES`` to them before torch is
imported. The kernel drops a lock when its process ends, however it ends (SIGKILL included), so
a crashed job never leaves a slot taken.

Which GPUs are candidates: those of a ``CUDA_VISIBLE_DEVICES`` the job inherits (the user
exported ``0,1,2,3``, or another tool set it): the job leases N *inside* that set, never all of
it; else every GPU of the machine. Lock files are named after the device ids as written there,
so jobs that see the same ids share them. An empty ``CUDA_VISIBLE_DEVICES`` means no GPU: the
job runs on the CPU. Under SLURM (``SLURM_JOB_ID`` set) the scheduler's assignment is used as
it is. Nothing here imports torch.

Environment: ``ATTRIBUTION_GPU_SLOTS`` (number of slots when no ``CUDA_VISIBLE_DEVICES`` is set;
overrides detection, e.g. fake slots in tests), ``ATTRIBUTION_GPU_LOCK_DIR`` (default
``/tmp/attribution-gpu-slots``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

SLOTS_ENV = "ATTRIBUTION_GPU_SLOTS"
LOCK_DIR_ENV = "ATTRIBUTION_GPU_LOCK_DIR"
DEFAULT_LOCK_DIR = "/tmp/attribution-gpu-slots"

log = logging.getLogger(__name__)


class GpuSlotError(RuntimeError):
    """No GPU slots could be leased (fewer exist than asked, or the wait timed out)."""


@dataclass
class GpuLease:
    """The devices a job may use; ``source`` says where they came from. Keep the object alive
    as long as the job runs: its open lock files are the lease."""

    devices: list[str]
    source: str  # leased | slurm | cpu | none
    _files: list[int] = field(default_factory=list, repr=False)

    def release(self) -> None:
        for fd in self._files:
            os.close(fd)  # closing the descriptor drops the flock
        self._files.clear()


def count_gpus(env: MutableMapping[str, str] | None = None) -> int:
    """GPUs on this machine: ``ATTRIBUTION_GPU_SLOTS`` if set, else what the NVIDIA driver
    lists (no torch import, so CUDA is not initialised before CUDA_VISIBLE_DEVICES is set)."""
    env = os.environ if env is None else env
    if env.get(SLOTS_ENV, "").strip():
        try:
            return int(env[SLOTS_ENV])
        except ValueError:
            raise GpuSlotError(f"{SLOTS_ENV}={env[SLOTS_ENV]!r} is not a number") from None
    proc_dir = Path("/proc/driver/nvidia/gpus")
    if proc_dir.is_dir():
        return len(list(proc_dir.iterdir()))
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True
            ).stdout
        except (subprocess.SubprocessError, OSError):
            return 0
        return sum(1 for line in out.splitlines() if line.startswith("GPU "))
    return 0


def lease_gpus(
    n: int,
    env: MutableMapping[str, str] | None = None,
    lock_dir: str | Path | None = None,
    timeout: float | None = None,
    poll: float = 2.0,
) -> GpuLease:
    """Take ``n`` GPUs for this process and set ``CUDA_VISIBLE_DEVICES`` in ``env`` (default
    ``os.environ``). Waits (polling) while the slots are taken by other jobs; ``timeout``
    seconds (None: forever) then GpuSlotError."""
    env = os.environ if env is None else env
    if "torch" in sys.modules and env is os.environ:
        log.warning("torch was imported before the GPU lease; CUDA_VISIBLE_DEVICES may be ignored")
    n = int(n)
    if n <= 0:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a job that asked for no GPU must not grab one
        return GpuLease([], "none")
    if env.get("SLURM_JOB_ID"):
        return GpuLease(_visible(env), "slurm")
    if env.get("CUDA_VISIBLE_DEVICES") is not None:
        candidates = _visible(env)
        given = f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']!r} gives"
    else:
        candidates = [str(i) for i in range(count_gpus(env))]
        given = "this machine has"
    if not candidates:
        log.info("no GPU visible: running on the CPU")
        return GpuLease([], "cpu")
    if n > len(candidates):
        raise GpuSlotError(f"the job asks for {n} GPU(s) but {given} {len(candidates)}")
    folder = Path(lock_dir or env.get(LOCK_DIR_ENV) or DEFAULT_LOCK_DIR)
    _make_lock_dir(folder)
    deadline = None if timeout is None else time.monotonic() + timeout
    waited = False
    while True:
        files = _try_take(folder, candidates, n)
        if files is not None:
            devices = [device for device, _ in files]
            env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
            log.info(
                "leased GPU slot(s) %s (of %s, locks in %s)",
                ",".join(devices),
                ",".join(candidates),
                folder,
            )
            return GpuLease(devices, "leased", [fd for _, fd in files])
        if deadline is not None and time.monotonic() >= deadline:
            raise GpuSlotError(
                f"no {n} free GPU slot(s) of {len(candidates)} in {folder} after {timeout}s"
            )
        if not waited:
            log.info(
                "waiting for %d free GPU slot(s) of %s (locks in %s)",
                n,
                ",".join(candidates),
                folder,
            )
            waited = True
        time.sleep(poll)


def _visible(env: MutableMapping[str, str]) -> list[str]:
    value = env.get("CUDA_VISIBLE_DEVICES", "")
    return [d for d in value.split(",") if d.strip()]


def _make_lock_dir(folder: Path) -> None:
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        try:  # shared by every user of the machine, like /tmp itself
            folder.chmod(0o1777)
        except OSError:
            pass


def _lock_name(device: str) -> str:
    # ids may be indices, GPU-<uuid> or MIG-<uuid>: keep them readable but path-safe
    return "gpu" + re.sub(r"[^A-Za-z0-9_.-]", "_", device) + ".lock"


def _try_take(folder: Path, candidates: list[str], n: int) -> list[tuple[str, int]] | None:
    """Non-blocking: lock the first ``n`` free slots of ``candidates``, or lock none and
    return None. (flock works on read-only descriptors, so other users can share the lock
    files.)"""
    taken: list[tuple[str, int]] = []
    for device in candidates:
        fd = os.open(folder / _lock_name(device), os.O_RDONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        taken.append((device, fd))
        if len(taken) == n:
            return taken
    for _, fd in taken:
        os.close(fd)
    return None
