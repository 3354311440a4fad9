"""Nothing stale, nothing lost, on a finished run of every stage (one tiny built model, its
fine-tuned version, two benchmarks, one traced problem, the figures):

- an edit to an entry script or a library module schedules exactly the jobs of the rules whose
  code imports it (reason: params, via the `code` hash), plus what depends on them; a touch
  that keeps the content schedules nothing (every module's hash mapping is checked directly in
  tests/test_code_hash.py; these dry runs prove the scheduling end to end);
- the whole run killed mid-way (`kill -9` of Snakemake's session) comes back with `make resume`
  to the same final files as the uninterrupted run;
- every result records its provenance, and the comparison warns when compared rows differ.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from attribution import provenance
from attribution.hashing import code_hash, import_closure
from workflow_utils import (
    REPO,
    dry_run,
    job_keys,
    make_workspace,
    merged,
    repo_config,
    run_snakemake,
    snakemake_env,
    write_config,
)

pytestmark = pytest.mark.slow
FINETUNED = "tiny-olmo2-apps"
CHECKPOINT = f"results/finetune/{FINETUNED}/work/checkpoints/checkpoint-2/trainer_state.json"
# Columns and keys that differ between two runs of the same work by design (timings), and the
# fine-tune's record of where it resumed from.
VOLATILE_COLUMNS = {"wall_s", "wall_time_s"}


def small_config() -> dict:
    config = repo_config()
    for settings in config["benchmarks"].values():
        settings.update(n_samples=1, temperature=0.0, ks=[1], max_tasks=2, max_new_tokens=8)
    return merged(
        config,
        {
            "benchmarks": {"cruxeval_i": None, "apps": None},
            "models": {
                "tiny-llama": None,
                "tiny-olmo2": {"build": {"pretrain_steps": 5}},
                FINETUNED: {
                    "finetune": {
                        "max_steps": 4,
                        "save_steps": 2,
                        "logging_steps": 1,
                        "batch_size": 2,
                        "max_length": 256,
                    }
                },
            },
            "trace": {
                "models": ["tiny-olmo2"],
                "samples": 2,
                "max_problems": 1,
                "force_problems": ["sample_1"],
                "kinds": ["hidden"],
                "screen": False,
            },
            "figures": {"bootstrap": {"samples": 200, "seed": 0}},
        },
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> dict:
    """The uninterrupted run, and every job of its DAG by rule."""
    ws = make_workspace(tmp_path_factory.mktemp("rerun") / "ws", small_config())
    run_snakemake(ws, "--resources", "gpu=1", timeout=1500)
    jobs = dry_run(ws, "--forceall")
    by_rule: dict[str, set] = {}
    for key in job_keys(jobs):
        by_rule.setdefault(key[0], set()).add(key)
    return {"ws": ws, "jobs": by_rule}


@pytest.fixture()
def ws(finished, tmp_path) -> Path:
    copy = tmp_path / "ws"
    shutil.copytree(finished["ws"], copy, symlinks=True)
    return copy


def rule_scripts(ws: Path) -> dict[str, str]:
    """rule -> entry script, read from rules/*.smk."""
    out = {}
    for smk in (ws / "rules").glob("*.smk"):
        for block in re.split(r"(?m)^(?=(?:rule|checkpoint) )", smk.read_text()):
            name = re.match(r"(?:rule|checkpoint) (\w+):", block)
            script = re.search(r'script:\s+"\.\./workflow_scripts/(\w+\.py)"', block)
            if name and script:
                out[name.group(1)] = script.group(1)
    return out


def importers(ws: Path, module: str) -> set[str]:
    """The rules whose code hash covers ``module`` (summarize also records the hashes of
    generate, execute and score as its code_version)."""
    root = ws / "workflow_scripts"
    target = (root / module).resolve()
    scripts = rule_scripts(ws)
    rules = {r for r, s in scripts.items() if target in import_closure(s, root)}
    if rules & {"generate", "execute", "score"}:
        rules.add("summarize")
    return rules


@pytest.mark.parametrize(
    "module",
    [
        "score.py",  # an entry script
        "attribution/finetune/packing.py",  # one stage's library
        "attribution/execution/passk.py",  # shared by score and the comparison
        "attribution/io.py",  # nearly everything
        "_entry.py",  # every rule
    ],
)
def test_an_edit_schedules_exactly_the_rules_that_import_it(finished, ws, module):
    path = ws / "workflow_scripts" / module
    path.write_text(path.read_text() + "\n# an edit that changes the content\n")
    direct = importers(ws, module)
    assert direct, f"no rule imports {module}"
    jobs = dry_run(ws)
    scheduled = job_keys(jobs)
    expected = set().union(*(finished["jobs"].get(rule, set()) for rule in direct))
    assert expected <= scheduled, sorted(expected - scheduled)
    by_params = {(j.rule, j.wildcards) for j in jobs if "Params have changed" in j.reason}
    assert by_params and by_params <= expected, sorted(by_params - expected)
    # Everything else runs only because an input is remade. (Snakemake names the params reason
    # only for jobs no upstream job already makes stale.)
    for job in jobs:
        if (job.rule, job.wildcards) not in by_params:
            assert "Input files updated by another job" in job.reason, job
            assert "Params" not in job.reason, job


def test_a_checkout_or_touch_of_every_file_schedules_nothing(ws):
    for folder in ("workflow_scripts", "rules", "schemas", "profiles"):
        for path in (ws / folder).rglob("*"):
            if path.is_file():
                path.write_bytes(path.read_bytes())
    for name in ("Snakefile", "config.yaml"):
        (ws / name).write_bytes((ws / name).read_bytes())
    assert dry_run(ws) == []


def compare_outputs(a: Path, b: Path) -> list[str]:
    """Relative paths of the final outputs under a and b that differ in content (figures:
    present in both; timings and the fine-tune's resume record left out)."""
    names = set()
    for root in (a, b):
        for folder in ("data/raw", "data/prompts", "models", "results"):
            names |= {
                p.relative_to(root).as_posix()
                for p in (root / folder).rglob("*")
                if p.is_file() and "/work/" not in p.as_posix()
            }
    different = []
    for name in sorted(names):
        fa, fb = a / name, b / name
        if not (fa.exists() and fb.exists()):
            different.append(f"{name} (only in one run)")
        elif name.endswith(".parquet"):
            da, db = (pd.read_parquet(f) for f in (fa, fb))
            da, db = (d.drop(columns=[c for c in d if c in VOLATILE_COLUMNS]) for d in (da, db))
            if not da.equals(db):
                different.append(name)
        elif name.endswith(".safetensors"):
            ta, tb = load_file(fa), load_file(fb)
            if set(ta) != set(tb) or any(not torch.equal(ta[k], tb[k]) for k in ta):
                different.append(name)
        elif name.endswith("finetune.json"):
            ja, jb = (json.loads(f.read_text()) for f in (fa, fb))
            for j in (ja, jb):
                j["result"].pop("resumed_from")
            if ja != jb:
                different.append(name)
        elif not name.endswith((".png", ".pdf", ".html")) and fa.read_bytes() != fb.read_bytes():
            different.append(name)
    return different


def test_a_killed_run_comes_back_with_make_resume(finished, tmp_path):
    ws = make_workspace(tmp_path / "ws", small_config())
    env = snakemake_env({"PYTHONPATH": str(ws / "workflow_scripts")})
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--resources", "gpu=1"]
    run = subprocess.Popen(
        cmd,
        cwd=ws,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 900
        while not (ws / CHECKPOINT).exists():  # fine-tuning is half-way
            assert run.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)  # the whole session, as a node failure does
        run.wait(timeout=60)
    assert not (ws / "results/summary/metrics.parquet").exists()

    plain = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=300)
    assert plain.returncode != 0 and "cannot be locked" in plain.stdout + plain.stderr

    resumed = subprocess.run(
        [sys.executable, "-m", "attribution.resume", "--cores", "2", "--resources", "gpu=1"],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    log = (ws / f"logs/finetune/{FINETUNED}.log").read_text()
    assert "resuming from" in log and "checkpoint-2" in log  # not started over
    assert compare_outputs(finished["ws"], ws) == []
    assert dry_run(ws) == []


def test_make_resume_is_the_documented_command():
    readme = (REPO / "README.md").read_text()
    assert "make resume" in readme
    for profile in ("default", "slurm"):
        text = (REPO / "profiles" / profile / "config.yaml").read_text()
        assert re.search(r"(?m)^rerun-incomplete: true$", text), profile


def test_every_result_records_its_provenance(finished):
    ws = finished["ws"]
    scripts = ws / "workflow_scripts"
    gens = pd.read_parquet(ws / "results/tiny-olmo2/cruxeval_o/generations.parquet")
    made = provenance.from_frame(gens)
    assert made["code"] == code_hash("generate.py", scripts)
    assert (made["backend"], made["device"], made["dtype"], made["batch_size"]) == (
        "hf",
        "cpu",
        "float32",
        small_config()["benchmarks"]["cruxeval_o"]["batch_size"],
    )
    assert made["torch_version"] and made["transformers_version"] and not made["nnsight_version"]
    execs = pd.read_parquet(ws / "results/tiny-olmo2/cruxeval_o/executions.parquet")
    assert provenance.from_frame(execs) == {**made, "code": code_hash("execute.py", scripts)}
    metrics = json.loads((ws / "results/tiny-olmo2/cruxeval_o/metrics.json").read_text())
    assert metrics["provenance"] == {**made, "code": code_hash("score.py", scripts)}
    summary = pd.read_parquet(ws / "results/summary/metrics.parquet")
    assert summary["backend"].eq("hf").all() and summary["dtype"].eq("float32").all()
    assert summary["torch_version"].eq(made["torch_version"]).all()
    comparison = pd.read_parquet(ws / "results/summary/comparison.parquet")
    assert comparison["provenance_differs"].eq("").all()
    for name, script in (
        ("problems/sample_1", "causal_trace.py"),
        ("activation_norms", "activation_norms.py"),
        ("summary", "trace_summary.py"),
    ):
        traced = provenance.from_frame(
            pd.read_parquet(ws / f"results/tiny-olmo2/trace/{name}.parquet")
        )
        assert traced["backend"] == "nnsight" and traced["nnsight_version"], name
        assert traced["code"] == code_hash(script, scripts), name
    history = pd.read_parquet(ws / f"results/finetune/{FINETUNED}/history.parquet")
    trained = provenance.from_frame(history)
    assert (trained["backend"], trained["dtype"], trained["batch_size"]) == (
        "trainer",
        "float32",
        2,
    )
    info = json.loads((ws / f"models/{FINETUNED}/finetune.json").read_text())
    assert info["provenance"] == trained


def test_comparison_warns_when_a_model_ran_in_another_dtype(ws):
    config = yaml.safe_load((ws / "config.yaml").read_text())
    config["models"][FINETUNED]["dtype"] = "bfloat16"
    write_config(ws, config)
    run_snakemake(ws, "results/summary/comparison.md", timeout=900)
    comparison = pd.read_parquet(ws / "results/summary/comparison.parquet")
    tuned = comparison[comparison["model"] == FINETUNED]
    assert not tuned.empty
    assert tuned["provenance_differs"].str.contains("dtype: 'bfloat16' vs 'float32'").all()
    assert "## Warnings" in (ws / "results/summary/comparison.md").read_text()
