"""Bring a killed run back with one command: ``make resume`` (``python -m attribution.resume
[SNAKEMAKE ARGS]`` in the workflow's directory).

After ``kill -9`` of a running Snakemake (a dropped login session, a node failure) the plain
rerun stops at Snakemake's stale lock (``.snakemake/locks``, "Directory cannot be locked"), and
then at the outputs the killed jobs left incomplete. This removes the lock only when no
Snakemake process for this directory is alive (the main process or a job it spawned: removing
the lock of a live run lets two runs write the same files), then reruns; incomplete outputs are
redone (``--rerun-incomplete``, which the profiles set too), and the generate shards,
sandboxed-execution shards and fine-tuning checkpoints keep that cheap.

Live processes are found in ``/proc`` (Linux): a command line that runs Snakemake
(``snakemake ...``, ``python -m snakemake ...``, or a job's ``.snakemake/scripts/`` script)
with this directory as its working directory (or ``--directory``). A Snakemake started on
another host over a shared file system cannot be seen from here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


class ResumeError(RuntimeError):
    """The run cannot be resumed safely; the message says why and what to do."""


@dataclass(frozen=True)
class LiveProcess:
    pid: int
    command: str


def _is_snakemake(argv: list[str]) -> bool:
    """``snakemake ...``, ``python .../snakemake ...``, ``python -m snakemake ...`` (a job
    Snakemake spawned) or ``python .snakemake/scripts/tmpXXX.script.py`` (a script job)."""
    if any(Path(arg).name == "snakemake" for arg in argv[:2]):
        return True
    if any(a == "-m" and b == "snakemake" for a, b in zip(argv[:4], argv[1:5], strict=False)):
        return True
    return any(".snakemake/scripts/" in arg for arg in argv[:3])


def _workdir_of(pid_dir: Path, argv: list[str]) -> Path | None:
    try:
        cwd = Path(os.readlink(pid_dir / "cwd"))
    except OSError:  # gone, or another user's process
        return None
    for flag in ("--directory", "-d"):
        if flag in argv and argv.index(flag) + 1 < len(argv):
            return (cwd / argv[argv.index(flag) + 1]).resolve()
    return cwd.resolve()


def live_snakemake_processes(workdir: str | Path, proc: Path = PROC) -> list[LiveProcess]:
    """Snakemake processes (main or job) whose working directory is ``workdir``."""
    if not proc.is_dir():
        raise ResumeError(
            "cannot check for running Snakemake processes (no /proc on this system): make sure "
            "none runs in this directory, then run `snakemake --unlock` and rerun"
        )
    target = Path(workdir).resolve()
    found = []
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
            continue
        try:
            raw = (pid_dir / "cmdline").read_bytes()
        except OSError:
            continue
        argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
        if argv and _is_snakemake(argv) and _workdir_of(pid_dir, argv) == target:
            found.append(LiveProcess(int(pid_dir.name), " ".join(argv)))
    return sorted(found, key=lambda p: p.pid)


def check_nothing_runs(workdir: str | Path) -> None:
    """Raise ResumeError naming the live Snakemake processes of ``workdir``, if any."""
    live = live_snakemake_processes(workdir)
    if live:
        listing = "\n".join(f"  pid {p.pid}: {p.command[:200]}" for p in live)
        raise ResumeError(
            f"Snakemake is still running in {Path(workdir).resolve()}:\n{listing}\n"
            "Its lock is not stale. Wait for it to finish, or stop it (`kill PID`), then run "
            "`make resume` again."
        )


def resume(args: list[str], workdir: str | Path = ".") -> int:
    """Unlock (when nothing runs here) and rerun ``snakemake ARGS --rerun-incomplete``;
    returns Snakemake's exit status."""
    check_nothing_runs(workdir)
    snakemake = [sys.executable, "-m", "snakemake"]
    unlock = subprocess.run([*snakemake, *args, "--unlock"], cwd=workdir, check=False)
    if unlock.returncode != 0:
        return unlock.returncode
    return subprocess.run([*snakemake, *args, "--rerun-incomplete"], cwd=workdir).returncode


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        return resume(args)
    except ResumeError as exc:
        print(f"resume: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
