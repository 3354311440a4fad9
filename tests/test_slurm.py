"""Cluster execution: profiles/slurm against a real slurmctld, and the profiles' own promises.

The ``slurm``-marked tests need the single-node cluster of ``tests/slurm/up.sh`` and run with
``pytest --slurm`` (CI does both). They submit a small slice of the real pipeline through
``profiles/slurm`` merged with ``tests/slurm/profile/config.yaml`` (the edits a user makes:
partition, account; plus what a cluster without slurmdbd needs), and compare its outputs with a
local run of the same slice. Every Snakemake call runs under ``timeout -k`` so that a scheduler
that never answers fails the test instead of hanging it.

The other tests need no cluster: a dry run with the SLURM profile shows the resources each job
would be submitted with, and the plugin's own sbatch-argument code turns them into GPU flags.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from workflow_utils import make_workspace, merged, repo_config, snakemake_env

REPO = Path(__file__).resolve().parents[1]
SLURM_PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
TEST_OVERRIDES = REPO / "tests" / "slurm" / "profile" / "config.yaml"
PROBE_SNAKEFILE = REPO / "tests" / "slurm" / "Snakefile"
PRESET = REPO / "presets" / "olmo2-7b.yaml"
# An untrained tiny model (built in a second): local and cluster outputs must be equal, not good.
FAST_CONFIG = {"models": {"tiny-olmo2": {"build": {"pretrain_steps": 0}}}}
MODEL = "models/tiny-olmo2"
# The slice submitted to the cluster: download (a localrule), prompts, references (the canonical
# solutions, run in the sandbox), build_model, generate (gpu=1), execute (the sandbox) and score,
# for one model on one benchmark.
SLICE_TARGET = "results/tiny-olmo2/humanevalplus/metrics.json"
SLICE_OUTPUTS = [
    "data/raw/humanevalplus.parquet",
    "data/prompts/humanevalplus.parquet",
    "data/references/humanevalplus.parquet",
    "results/tiny-olmo2/humanevalplus/generations.parquet",
    "results/tiny-olmo2/humanevalplus/executions.parquet",
]
TIMEOUT_S = 300
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+)")


# --- helpers -----------------------------------------------------------------------------------


def write_test_profile(folder: Path) -> Path:
    """profiles/slurm with the test-cluster overrides merged in (per rule and per resource:
    Snakemake itself merges profiles per top-level key only), as a profile folder."""
    profile = merged(
        yaml.safe_load(SLURM_PROFILE.read_text()), yaml.safe_load(TEST_OVERRIDES.read_text())
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return folder


def snakemake(
    args: list[str], cwd: Path, timeout_s: int, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run Snakemake under ``timeout -k`` (a hung scheduler must fail the test, not stall it)."""
    cmd = ["timeout", "-k", "10", str(timeout_s), sys.executable, "-m", "snakemake", *args]
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=snakemake_env())
    output = result.stdout + result.stderr
    assert result.returncode not in (124, 137), f"snakemake timed out after {timeout_s}s:\n{output}"
    if check:
        assert result.returncode == 0, f"snakemake failed ({result.returncode}):\n{output}"
    return result


def dry_run_jobs(output: str) -> list[dict]:
    """Jobs of a dry run with the resources and wildcards Snakemake prints for each.
    (tests/workflow_utils.parse_dry_run reads rules and wildcards only.)"""
    jobs: list[dict] = []
    for line in output.splitlines():
        head = re.fullmatch(r"(?:local)?rule (\w+):", line)
        if head:
            jobs.append({"rule": head.group(1), "resources": {}, "wildcards": {}})
        elif jobs and line.startswith(("    resources: ", "    wildcards: ")):
            key, values = line.strip().split(": ", 1)
            jobs[-1][key] = dict(pair.split("=", 1) for pair in values.split(", "))
    return jobs


class _Resources(dict):
    """The attribute-and-get access the plugin uses on ``job.resources``."""

    def __getattr__(self, name: str):
        return self[name]


def sbatch_gpu_arguments(resources: dict[str, str]) -> str:
    """The GPU and CPU part of the sbatch call the plugin builds for these job resources."""
    from snakemake_executor_plugin_slurm.utils import set_gres_string
    from snakemake_executor_plugin_slurm_jobstep import get_cpu_setting

    typed = {k: int(v) if v.isdigit() else v for k, v in resources.items()}
    # threads only matter for jobs without cpus_per_gpu (the profile sets it for GPU rules)
    job = SimpleNamespace(resources=_Resources(typed), threads=1)
    gpu_job = bool(typed.get("gpu")) or "gpu" in str(typed.get("gres", ""))
    return f"{get_cpu_setting(job, gpu_job)}{set_gres_string(job)}"


def scontrol_job(jobid: str) -> dict[str, str]:
    """``scontrol show job`` as a dict (finished jobs stay for MinJobAge, set by up.sh)."""
    out = subprocess.run(
        ["scontrol", "-o", "show", "job", jobid], capture_output=True, text=True, check=True
    ).stdout
    return dict(field.split("=", 1) for field in out.split() if "=" in field)


# --- the profiles, no cluster needed -------------------------------------------------------------


def test_default_profile_is_local_and_drops_code_trigger():
    """profiles/default is loaded without a flag, stays local and has no `code` trigger."""
    result = snakemake(["-n", "--nolock"], cwd=REPO, timeout_s=120)
    assert "workflow specific profile profiles/default" in result.stderr
    profile = yaml.safe_load((REPO / "profiles/default/config.yaml").read_text())
    assert "executor" not in profile
    assert "code" not in profile["rerun-triggers"]
    # Keys the SLURM profile sets must stay out of it, so `--profile profiles/slurm` still works
    # next to this automatically loaded workflow profile (which wins key by key).
    slurm = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    assert set(profile) & {"resources", "default-resources", "set-resources"} == set()
    assert set(profile) & set(slurm) <= {
        "rerun-triggers",
        "rerun-incomplete",
        "printshellcmds",
        "show-failed-logs",
    }


@pytest.mark.slow
def test_touching_an_entry_script_reruns_nothing_under_the_default_profile(tmp_path):
    """Drop of the `code` trigger, for real: a touch with the same content reruns nothing,
    while the same touch without the profile (Snakemake's defaults) would rerun the job."""
    work = make_workspace(tmp_path / "wf")
    target = "data/raw/humanevalplus.parquet"
    snakemake(["--cores", "1", target], cwd=work, timeout_s=180)
    (work / "workflow_scripts" / "download_dataset.py").touch()

    with_profile = snakemake(["-n", "--cores", "1", target], cwd=work, timeout_s=120)
    assert "Nothing to be done" in with_profile.stdout + with_profile.stderr

    without = snakemake(
        ["-n", "--cores", "1", "--workflow-profile", "none", target], cwd=work, timeout_s=120
    )
    out = without.stdout + without.stderr
    assert "download_dataset" in out and "Code has changed" in out, out


@pytest.mark.parametrize("flag", ["--profile", "--workflow-profile"])
def test_slurm_dry_run_of_olmo2_preset_requests_gpus_for_gpu_rules_only(flag):
    """`snakemake -n --profile profiles/slurm` on the OLMo-2 preset lists sbatch-ready jobs:
    GPU rules in the GPU partition with the preset's GPU counts, CPU jobs with none. With
    `--profile`, the automatically loaded profiles/default must not override any of that."""
    preset = yaml.safe_load(PRESET.read_text())
    result = snakemake(
        ["-n", "-F", "--nolock", flag, "profiles/slurm", "--configfile", str(PRESET)],
        cwd=REPO,
        timeout_s=180,
    )
    jobs = dry_run_jobs(result.stdout)
    rules = {job["rule"] for job in jobs}
    # (a dry run prints every job as `rule`: that downloads stay on the login node as
    # localrules is checked by the cluster run below)
    assert {"download_dataset", "generate", "execute", "finetune", "activation_norms"} <= rules

    def expected_gpus(job: dict) -> int:
        wc = job["wildcards"]
        if job["rule"] == "generate":
            bench = preset["benchmarks"][wc["benchmark"]]
            return bench.get("gpus", preset["generation"]["gpus"])
        if job["rule"] == "finetune":
            return preset["models"][wc["model"]]["finetune"].get("gpus", 1)
        return 1

    gpu_rules = {"generate", "finetune", "causal_trace", "activation_norms"}
    for job in jobs:
        res = job["resources"]
        if job["rule"] in gpu_rules:
            n = expected_gpus(job)
            assert res["gpu"] == str(n), job
            assert res["slurm_partition"] == "gpu", job
            cpus = res["cpus_per_gpu"]
            assert sbatch_gpu_arguments(res) == f"--cpus-per-gpu={cpus} --gpus={n}"
            # the GPU model is a profile edit: the plugin turns it into --gpus=MODEL:N
            assert sbatch_gpu_arguments(dict(res, gpu_model="h100")).endswith(f"--gpus=h100:{n}")
        else:
            assert res["gpu"] == "0", job
            assert res["slurm_partition"] == "cpu", job
            assert "--gpus" not in sbatch_gpu_arguments(res)
        assert res["slurm_account"] == "CHANGE_ME", job


# --- a real SLURM cluster (tests/slurm/up.sh) ------------------------------------------------


@pytest.fixture(scope="module")
def slurm_cluster() -> str:
    """The test cluster's node name; fails (not skips) when --slurm was given without one."""
    if shutil.which("sinfo") is None:
        pytest.fail("--slurm given but SLURM is not installed: run `bash tests/slurm/up.sh`")
    result = subprocess.run(["sinfo", "-h", "-o", "%n %T"], capture_output=True, text=True)
    if result.returncode != 0 or not re.search(r"\b(idle|mixed|allocated)", result.stdout):
        pytest.fail(
            "--slurm given but no idle SLURM node: run `bash tests/slurm/up.sh` "
            f"(sinfo said: {result.stdout.strip() or result.stderr.strip()})"
        )
    return result.stdout.split()[0]


@pytest.fixture(scope="module")
def slurm_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_profile(tmp_path_factory.mktemp("profile") / "slurm-test")


@pytest.mark.slurm
@pytest.mark.slow
def test_pipeline_slice_through_sbatch_matches_local_run(slurm_cluster, slurm_profile, tmp_path):
    """download -> prompts, references, build_model -> generate [gpu=1] -> execute -> score for one model
    and benchmark: through sbatch, each job completed in SLURM's records, and every output
    (the model's files included) equal to a local run's."""
    config = merged(repo_config(), FAST_CONFIG)
    cluster = make_workspace(tmp_path / "cluster", config=config)
    local = make_workspace(tmp_path / "local", config=config)

    # Side by side: the cluster run spends most of its time between status polls.
    # (targets first: --resources takes every value that follows it)
    with ThreadPoolExecutor(max_workers=2) as pool:
        cluster_run = pool.submit(
            snakemake,
            [SLICE_TARGET, "--workflow-profile", str(slurm_profile), "--verbose"],
            cwd=cluster,
            timeout_s=TIMEOUT_S,
        )
        local_run = pool.submit(
            snakemake,
            [SLICE_TARGET, "--cores", "2", "--resources", "gpu=1"],
            cwd=local,
            timeout_s=TIMEOUT_S,
        )
        log = cluster_run.result().stdout + cluster_run.result().stderr
        local_run.result()

    # Every job but the download went through sbatch; the GPU job asked SLURM for one GPU.
    calls = {}
    for line in log.splitlines():
        if line.startswith("sbatch call: "):
            rule = re.search(r"--comment rule_([a-z_]+?)_wildcards", line)[1]
            calls[rule] = line
    assert set(calls) == {
        "format_prompts",
        "references",
        "build_model",
        "generate",
        "execute",
        "score",
    }
    assert "localrule download_dataset" in log
    assert all(" -p debug " in call for call in calls.values())
    assert " --gpus=1" in calls["generate"]
    assert all("--gpus" not in call for rule, call in calls.items() if rule != "generate")
    # ... and SLURM ran them: each one COMPLETED on the test node; the generate job held a GPU.
    jobids = SUBMITTED.findall(log)
    assert len(jobids) == len(calls)
    records = [scontrol_job(jobid) for jobid in jobids]
    for record in records:
        assert record["JobState"] == "COMPLETED", record
        assert record["NodeList"] == slurm_cluster
    generate_job = next(r for r in records if r["Comment"].startswith("rule_generate"))
    assert generate_job["TresPerJob"] == "gres:gpu:1"

    # Same outputs as the local run.
    for rel in SLICE_OUTPUTS:
        a, b = pd.read_parquet(cluster / rel), pd.read_parquet(local / rel)
        timing = [c for c in ("wall_s", "cpu_s") if c in a.columns]  # measured, not computed
        pd.testing.assert_frame_equal(a.drop(columns=timing), b.drop(columns=timing))
    for path in sorted((local / MODEL).iterdir()):
        assert (cluster / MODEL / path.name).read_bytes() == path.read_bytes(), path.name
    metrics = json.loads((cluster / SLICE_TARGET).read_text())
    assert metrics == json.loads((local / SLICE_TARGET).read_text())
    assert metrics["counts"]["samples"] > 0


@pytest.fixture(scope="module")
def probe_run(slurm_cluster, slurm_profile, tmp_path_factory) -> SimpleNamespace:
    """Two gpu=1 probe jobs and one failing job, submitted together (--keep-going)."""
    work = tmp_path_factory.mktemp("probe")
    result = snakemake(
        [
            "-s",
            str(PROBE_SNAKEFILE),
            "--workflow-profile",
            str(slurm_profile),
            "--keep-going",
            "--verbose",
            "probe/gpu_0.json",
            "probe/gpu_1.json",
            "probe/never.txt",
        ],
        cwd=work,
        timeout_s=150,
        check=False,
    )
    return SimpleNamespace(work=work, result=result, log=result.stdout + result.stderr)


@pytest.mark.slurm
def test_gpu_jobs_get_distinct_devices_from_slurm(probe_run):
    """Two gpu=1 jobs running at once see different CUDA_VISIBLE_DEVICES, set by SLURM, and
    the local GPU-slot lease keeps them."""
    records = [json.loads((probe_run.work / f"probe/gpu_{i}.json").read_text()) for i in (0, 1)]
    devices = {r["CUDA_VISIBLE_DEVICES"] for r in records}
    assert devices == {"0", "1"}, records
    assert all(r["SLURM_JOB_ID"] for r in records)
    # the pipeline's GPU lease stepped aside and used what SLURM gave
    for r in records:
        assert r["lease_source"] == "slurm" and r["lease_devices"] == [r["CUDA_VISIBLE_DEVICES"]]
    # SLURM held both allocations at once, so it really gave out two GPUs side by side
    jobs = [scontrol_job(r["SLURM_JOB_ID"]) for r in records]
    starts = [datetime.fromisoformat(j["StartTime"]) for j in jobs]
    ends = [datetime.fromisoformat(j["EndTime"]) for j in jobs]
    assert max(starts) < min(ends), jobs
    gpu_calls = [c for c in probe_run.log.splitlines() if "rule_gpu_probe" in c and "sbatch" in c]
    assert len(gpu_calls) == 2 and all("--gpus=1" in c for c in gpu_calls), gpu_calls
    assert all(j["TresPerJob"] == "gres:gpu:1" for j in jobs)


@pytest.mark.slurm
def test_failing_job_fails_the_run_instead_of_hanging(probe_run):
    """A job that exits 1 is reported as failed by its SLURM state, well within the timeout."""
    assert probe_run.result.returncode == 1, probe_run.log
    assert "Error in rule fail" in probe_run.log
    assert re.search(r"SLURM-job '\d+' failed, SLURM status is: 'FAILED'", probe_run.log)
    assert not (probe_run.work / "probe/never.txt").exists()
    assert (probe_run.work / "logs/fail.log").read_text().strip() == "failing on purpose"
