"""Local GPU slots with fake slots (ATTRIBUTION_GPU_SLOTS): no GPU needed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from attribution.gpu_slots import GpuSlotError, lease_gpus

REPO = Path(__file__).resolve().parents[1]


def fake_env(n: int, **extra: str) -> dict[str, str]:
    return {"ATTRIBUTION_GPU_SLOTS": str(n), **extra}


def test_two_leases_get_different_devices_and_a_third_waits(tmp_path):
    first = lease_gpus(1, env=(e1 := fake_env(2)), lock_dir=tmp_path)
    second = lease_gpus(1, env=(e2 := fake_env(2)), lock_dir=tmp_path)
    assert {e1["CUDA_VISIBLE_DEVICES"], e2["CUDA_VISIBLE_DEVICES"]} == {"0", "1"}
    assert first.source == second.source == "leased"
    with pytest.raises(GpuSlotError, match="no 1 free GPU slot"):
        lease_gpus(1, env=fake_env(2), lock_dir=tmp_path, timeout=0)
    first.release()
    third = lease_gpus(1, env=(e3 := fake_env(2)), lock_dir=tmp_path, timeout=0)
    assert e3["CUDA_VISIBLE_DEVICES"] == e1["CUDA_VISIBLE_DEVICES"]
    second.release()
    third.release()


def test_a_job_with_two_gpus_takes_two_slots(tmp_path):
    lease = lease_gpus(2, env=(env := fake_env(3)), lock_dir=tmp_path)
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"
    with pytest.raises(GpuSlotError):
        lease_gpus(2, env=fake_env(3), lock_dir=tmp_path, timeout=0)
    lease.release()
    with pytest.raises(GpuSlotError, match="asks for 4 GPU"):
        lease_gpus(4, env=fake_env(3), lock_dir=tmp_path)


def test_scheduler_devices_are_kept(tmp_path):
    env = {"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "3"}
    lease = lease_gpus(1, env=env, lock_dir=tmp_path)
    assert (lease.source, lease.devices, env["CUDA_VISIBLE_DEVICES"]) == ("slurm", ["3"], "3")
    assert not list(tmp_path.iterdir())  # no lock taken


def test_leases_stay_inside_an_exported_device_set(tmp_path):
    """CUDA_VISIBLE_DEVICES=0,1,2,3 exported in the shell: each job takes N of those four,
    never all of them; the ids are the given ones, not 0..N-1."""
    leases, seen = [], []
    for _ in range(4):
        env = {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}
        leases.append(lease_gpus(1, env=env, lock_dir=tmp_path, timeout=0))
        seen.append(env["CUDA_VISIBLE_DEVICES"])
    assert sorted(seen) == ["0", "1", "2", "3"]
    assert all(lease.source == "leased" for lease in leases)
    with pytest.raises(GpuSlotError, match="no 1 free GPU slot"):
        lease_gpus(1, env={"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, lock_dir=tmp_path, timeout=0)
    for lease in leases:
        lease.release()
    env = {"CUDA_VISIBLE_DEVICES": "5,7", "ATTRIBUTION_GPU_SLOTS": "8"}  # the given set wins
    pair = lease_gpus(2, env=env, lock_dir=tmp_path, timeout=0)
    assert pair.devices == ["5", "7"] and env["CUDA_VISIBLE_DEVICES"] == "5,7"
    with pytest.raises(GpuSlotError, match=r"asks for 3 GPU\(s\) but CUDA_VISIBLE_DEVICES='5,7'"):
        lease_gpus(3, env={"CUDA_VISIBLE_DEVICES": "5,7"}, lock_dir=tmp_path)
    pair.release()
    uuid = "GPU-8b1d0c4e-1f2a-4c3b-9d8e-7f6a5b4c3d2e"
    env = {"CUDA_VISIBLE_DEVICES": f"{uuid},MIG-1/2/3"}
    lease = lease_gpus(2, env=env, lock_dir=tmp_path, timeout=0)
    assert env["CUDA_VISIBLE_DEVICES"] == f"{uuid},MIG-1/2/3"
    assert {p.name for p in tmp_path.iterdir()} >= {f"gpu{uuid}.lock", "gpuMIG-1_2_3.lock"}
    lease.release()


def test_no_gpu_means_cpu_and_gpu0_jobs_see_none(tmp_path):
    env = fake_env(0)
    assert lease_gpus(1, env=env, lock_dir=tmp_path).source == "cpu"
    assert "CUDA_VISIBLE_DEVICES" not in env
    env = {"CUDA_VISIBLE_DEVICES": ""}  # hidden on purpose: no GPU
    assert lease_gpus(1, env=env, lock_dir=tmp_path).source == "cpu"
    env = fake_env(2)
    assert lease_gpus(0, env=env, lock_dir=tmp_path).source == "none"
    assert env["CUDA_VISIBLE_DEVICES"] == ""


def test_sigkilled_holder_frees_its_slots(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from attribution.gpu_slots import lease_gpus; "
            "lease = lease_gpus(2); print('held', flush=True); time.sleep(60)",
        ],
        env=dict(
            os.environ,
            PYTHONPATH=str(REPO / "workflow_scripts"),
            ATTRIBUTION_GPU_SLOTS="2",
            ATTRIBUTION_GPU_LOCK_DIR=str(tmp_path),
        ),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(GpuSlotError):
            lease_gpus(1, env=fake_env(2), lock_dir=tmp_path, timeout=0)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    lease = lease_gpus(2, env=fake_env(2), lock_dir=tmp_path, timeout=5, poll=0.1)
    assert lease.devices == ["0", "1"]
    lease.release()


SNAKEFILE = textwrap.dedent(
    """
    rule all:
        input: expand("out/{i}.json", i=[1, 2])

    rule gpu_job:
        output: "out/{i}.json"
        resources: gpu=1
        script: "job.py"
    """
)
JOB = textwrap.dedent(
    """
    import json, os, sys, time
    sys.path.insert(0, os.environ["LIBRARY"])
    from attribution.gpu_slots import lease_gpus
    lease = lease_gpus(snakemake.resources.gpu)
    start = time.time()
    time.sleep(2.0)
    json.dump({"devices": os.environ["CUDA_VISIBLE_DEVICES"], "start": start,
               "end": time.time()}, open(snakemake.output[0], "w"))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("budget", [2, 1])
def test_snakemake_gpu_jobs_get_distinct_slots(tmp_path, budget):
    a, b = _two_gpu_jobs(tmp_path, budget, ATTRIBUTION_GPU_SLOTS="2", CUDA_VISIBLE_DEVICES=None)
    overlap = min(a["end"], b["end"]) > max(a["start"], b["start"])
    if budget == 2:
        assert overlap, (a, b)  # both ran at once ...
        assert a["devices"] != b["devices"]  # ... on different slots
        assert {a["devices"], b["devices"]} == {"0", "1"}
    else:
        assert not overlap, (a, b)  # gpu=1: one at a time


@pytest.mark.slow
def test_snakemake_jobs_lease_inside_an_exported_set(tmp_path):
    """`export CUDA_VISIBLE_DEVICES=4,6` then snakemake with gpu=2: two gpu=1 jobs run at once,
    one on 4 and one on 6 (before: both saw 4,6)."""
    a, b = _two_gpu_jobs(tmp_path, 2, CUDA_VISIBLE_DEVICES="4,6", ATTRIBUTION_GPU_SLOTS=None)
    assert min(a["end"], b["end"]) > max(a["start"], b["start"])  # at once
    assert {a["devices"], b["devices"]} == {"4", "6"}


def _two_gpu_jobs(tmp_path, budget: int, **env_changes: str | None) -> tuple[dict, dict]:
    """Run the two gpu=1 probe jobs under ``--resources gpu=budget`` (``None`` unsets a
    variable); what each job saw."""
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    (tmp_path / "job.py").write_text(JOB)
    env = dict(
        os.environ,
        LIBRARY=str(REPO / "workflow_scripts"),
        ATTRIBUTION_GPU_LOCK_DIR=str(tmp_path / "locks"),
    )
    env.pop("SLURM_JOB_ID", None)
    for name, value in env_changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", "--resources", f"gpu={budget}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tuple(json.loads((tmp_path / f"out/{i}.json").read_text()) for i in (1, 2))
