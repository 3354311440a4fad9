"""`make resume` (attribution/resume.py) on small workflows: a live Snakemake keeps its lock; a
killed one's stale lock goes and the run completes. The whole pipeline killed mid-way and
brought back is in tests/test_rerun.py (slow)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from attribution.resume import ResumeError, check_nothing_runs, live_snakemake_processes, resume

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = textwrap.dedent(
    """
    rule all:
        input: "out/b.txt"

    rule a:
        output: "out/a.txt"
        shell: "sleep 1; echo a > {output}"

    rule b:
        input: "out/a.txt"
        output: "out/b.txt"
        shell: "sleep $(cat pause_s); cat {input} > {output}"
    """
)


def start(argv: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_live_snakemake_processes_of_a_directory(tmp_path):
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    for folder in (here, elsewhere, here / ".snakemake" / "scripts"):
        folder.mkdir(parents=True)
    script = here / ".snakemake" / "scripts" / "tmpab12.generate.py"
    script.write_text("import time\ntime.sleep(60)\n")
    sleeper = "import time; time.sleep(60)"
    procs = {
        "main": start(["bash", "-c", "exec -a snakemake sleep 60"], here),
        "job": start([sys.executable, ".snakemake/scripts/tmpab12.generate.py"], here),
        "other dir": start([sys.executable, "-c", sleeper, "-m", "snakemake"], elsewhere),
        "not snakemake": start([sys.executable, "-c", sleeper], here),
    }
    try:
        deadline = time.monotonic() + 20
        while len(live_snakemake_processes(here)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        found = {p.pid for p in live_snakemake_processes(here)}
        assert found == {procs["main"].pid, procs["job"].pid}
        assert {p.pid for p in live_snakemake_processes(elsewhere)} == {procs["other dir"].pid}
        with pytest.raises(ResumeError, match=rf"(?s)still running .*pid {procs['main'].pid}"):
            check_nothing_runs(here)
    finally:
        for proc in procs.values():
            stop(proc)
    assert live_snakemake_processes(here) == []


def test_resume_after_kill_9_unlocks_and_finishes_but_never_under_a_live_run(tmp_path):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    (tmp_path / "pause_s").write_text("60")  # long enough to be killed in rule b
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1"]
    run = start(cmd, tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "out" / "a.txt").exists():  # rule b is running now
            assert run.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1.0)
        with pytest.raises(ResumeError, match="still running"):
            resume(["--cores", "1"], workdir=tmp_path)  # a live run keeps its lock
        assert list((tmp_path / ".snakemake" / "locks").iterdir())
    finally:
        stop(run)  # kill -9 of the whole session, as a dropped login does
    plain = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert plain.returncode != 0 and "cannot be locked" in plain.stdout + plain.stderr
    (tmp_path / "pause_s").write_text("0")
    assert resume(["--cores", "1"], workdir=tmp_path) == 0
    assert (tmp_path / "out" / "b.txt").read_text() == "a\n"
    locks = tmp_path / ".snakemake" / "locks"
    assert not locks.exists() or not list(locks.iterdir())


def test_make_resume_runs_the_resume_module():
    out = subprocess.run(
        ["make", "-n", "resume", "ARGS=--configfile presets/x.yaml", "BIN=.venv/bin"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "-m attribution.resume --cores" in out and "--configfile presets/x.yaml" in out
