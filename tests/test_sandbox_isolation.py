"""Isolation policy: ``strict`` refuses where the sandbox cannot isolate, ``best_effort`` warns;
the fallback without user namespaces; the layers reach executions, metrics.json and the
summary. The environment switches make a machine look like one that forbids user namespaces
(ATTRIBUTION_SANDBOX_NO_USERNS=1) and has no Landlock (ATTRIBUTION_SANDBOX_NO_LANDLOCK=1)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pandas as pd
import pytest

from attribution.data.records import COLUMNS
from attribution.execution import cli
from attribution.execution.engine import execute_samples
from attribution.execution.sandbox import (
    ENV_NO_LANDLOCK,
    ENV_NO_USERNS,
    Program,
    SandboxIsolationWarning,
    SandboxLimits,
    SandboxPool,
    SandboxUnavailable,
    layers_in_force,
    missing_isolation,
)
from attribution.execution.sandbox.linux import landlock_abi
from attribution.execution.scoring import score_executions
from attribution.summary import Run, summarize
from sandbox_helpers import leftover_processes

pytestmark = pytest.mark.timeout(120)

PROG = Program("call", "def f(x):\n    return x + 1\n", ([1],), (1.0,), entry="f")


@pytest.fixture
def nothing_available(monkeypatch):
    monkeypatch.setenv(ENV_NO_USERNS, "1")
    monkeypatch.setenv(ENV_NO_LANDLOCK, "1")


def test_strict_refuses_and_names_the_missing_isolation(nothing_available):
    with pytest.raises(SandboxUnavailable) as err:
        SandboxPool(1, SandboxLimits(isolation="strict"))
    text = str(err.value)
    assert "no file-system, no credential isolation" in text
    assert "network" not in text.split("isolation")[0]  # seccomp still refuses sockets
    assert "kernel.unprivileged_userns_clone=1" in text and "user.max_user_namespaces" in text
    assert "execution.isolation: best_effort" in text and "--isolation best_effort" in text
    assert f"{ENV_NO_USERNS}=1" in text  # why namespaces are missing


def test_best_effort_warns_once_and_runs(nothing_available):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(2):  # two pools in one job (references, candidates): one warning
            with SandboxPool(1, SandboxLimits(isolation="best_effort")) as pool:
                res = pool.run(PROG)
                assert res.outcomes[0].value == 2
                assert missing_isolation(pool.layers) == ["file-system", "credential"]
    shown = [w for w in caught if issubclass(w.category, SandboxIsolationWarning)]
    assert len(shown) == 1
    assert "no file-system, no credential isolation" in str(shown[0].message)
    assert "best_effort" in str(shown[0].message)


def test_without_user_namespaces_the_fallback_or_a_refusal(monkeypatch):
    monkeypatch.setenv(ENV_NO_USERNS, "1")
    if landlock_abi() < 1:  # no Landlock on this kernel: strict must refuse
        with pytest.raises(SandboxUnavailable, match="file-system"):
            SandboxPool(1)
        return
    with SandboxPool(1) as pool:
        assert {"landlock_fs", "seccomp_net"} <= set(pool.layers)
        assert not {"netns", "pidns", "readonly_fs", "userns"} & set(pool.layers)
        assert pool.run(PROG).outcomes[0].value == 2
        assert leftover_processes(pool) == []


def test_unknown_isolation_mode_is_rejected():
    with pytest.raises(ValueError, match="isolation must be one of"):
        SandboxLimits(isolation="loose")


def _tasks() -> pd.DataFrame:
    row = {
        "task_id": "T/0",
        "prompt": "def add(a, b):\n",
        "entry_point": "add",
        "canonical_solution": "    return a + b\n",
        "test": "",
        "contract": "",
        "base_input": json.dumps([[1, 2]]),
        "plus_input": json.dumps([[3, 4]]),
        "atol": 0.0,
    }
    return pd.DataFrame([row], columns=list(COLUMNS["humanevalplus"]))


SAMPLES = pd.DataFrame({"task_id": ["T/0"], "sample": [0], "completion": ["    return a + b\n"]})


def test_engine_passes_isolation_and_records_the_layers(tmp_path, nothing_available, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # any reference cache
    out = tmp_path / "ex.parquet"
    with pytest.raises(SandboxUnavailable):
        execute_samples("humanevalplus", _tasks(), SAMPLES, out, limits=SandboxLimits())
    assert not out.exists()
    with pytest.warns(SandboxIsolationWarning):
        limits = SandboxLimits(isolation="best_effort")
        frame = execute_samples("humanevalplus", _tasks(), SAMPLES, out, limits=limits)
    assert bool(frame["passed"].iat[0])
    metrics = score_executions("humanevalplus", frame)
    metrics["sandbox"] = layers_in_force(frame["layers"])  # as the score rule and the CLI do
    assert metrics["sandbox"]["missing"] == ["file-system", "credential"]
    assert "seccomp_net" in metrics["sandbox"]["layers"]
    assert "landlock_fs" not in metrics["sandbox"]["layers"]
    # The summary carries them next to each score.
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "ds.json").write_text(json.dumps({"content_sha256": "abc"}))
    run = Run("m", "m", None, "humanevalplus", str(tmp_path / "metrics.json"))
    summary = summarize([run], {"humanevalplus": tmp_path / "ds.json"}, "v1")
    assert set(summary["sandbox_layers"]) == {",".join(metrics["sandbox"]["layers"])}


def test_cli_isolation_flag(tmp_path, nothing_available, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # reference cache
    dataset = tmp_path / "he.jsonl"
    row = _tasks().iloc[0].to_dict()
    row["base_input"], row["plus_input"] = (
        json.loads(row["base_input"]),
        json.loads(row["plus_input"]),
    )
    dataset.write_text(json.dumps(row) + "\n")
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"task_id": "T/0", "completion": "    return a + b\n"}) + "\n")
    args = ["--benchmark", "humanevalplus", "--dataset", str(dataset), "--samples", str(samples)]
    args += ["--out", str(tmp_path / "ex.parquet"), "--workers", "1", "--no-progress"]
    assert cli.main(args) == 2
    assert "execution.isolation: best_effort" in capsys.readouterr().err
    with pytest.warns(SandboxIsolationWarning):
        assert (
            cli.main([*args, "--isolation", "best_effort", "--metrics", str(tmp_path / "m.json")])
            == 0
        )
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["sandbox"]["missing"] == ["file-system", "credential"]


def test_without_landlock_seccomp_refuses_sockets_and_signals(nothing_available):
    """Kernels without Landlock's signal scope: seccomp refuses every signal and socket."""
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    src = (
        "import os, signal, socket\n"
        "def f(pid):\n"
        "    out = []\n"
        "    for act in (lambda: os.kill(pid, signal.SIGKILL), lambda: socket.socket()):\n"
        "        try:\n"
        "            act()\n"
        "            out.append('done')\n"
        "        except OSError as exc:\n"
        "            out.append(type(exc).__name__)\n"
        "    return out\n"
    )
    try:
        with (
            pytest.warns(SandboxIsolationWarning),
            SandboxPool(1, SandboxLimits(isolation="best_effort")) as pool,
        ):
            assert {"seccomp_net", "seccomp_signals"} <= set(pool.layers)
            res = pool.run(Program("call", src, ([decoy.pid],), (1.0,), entry="f"))
        assert res.outcomes[0].value == ["PermissionError", "PermissionError"]
        assert decoy.poll() is None
    finally:
        decoy.kill()
        decoy.wait()


def test_an_import_path_below_tmp_keeps_the_root_view(tmp_path):
    """A venv or project in a job's scratch folder under /tmp: the root view still holds (it
    once failed there and fell back silently), /tmp shows none of the host's files, and the
    program still has a private, writable working directory."""
    import shutil
    from pathlib import Path

    from test_sandbox import namespaces_permitted

    if not str(tmp_path).startswith("/tmp/"):
        pytest.skip(f"the test's folder {tmp_path} is not below /tmp")
    if not namespaces_permitted():
        pytest.skip("this kernel forbids the namespaces the root view needs")
    library = Path(__file__).resolve().parents[1] / "workflow_scripts" / "attribution"
    shutil.copytree(library, tmp_path / "lib" / "attribution")
    (tmp_path / "host-file").write_text("host")
    script = f"""
import json, os, tempfile
from attribution.execution.sandbox import Program, SandboxLimits, SandboxPool
src = '''def f():
    import os, tempfile
    with tempfile.NamedTemporaryFile("w", delete=False) as fh:
        fh.write("x")
    return [os.path.exists({str(tmp_path / "host-file")!r}), sorted(os.listdir("/tmp")),
            os.path.dirname(fh.name)]
'''
with SandboxPool(1, SandboxLimits(isolation="strict")) as pool:
    res = pool.run(Program("call", src, ([],), (2.0,), entry="f"))
    print(json.dumps([list(pool.layers), res.status, res.outcomes[0].value]))
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path / "lib")},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    layers, status, (host_visible, tmp_listing, workdir) = json.loads(out.stdout)
    assert status == "ok"
    assert {"readonly_fs", "private_tmp", "hidden_home"} <= set(layers)
    assert not host_visible
    assert tmp_listing == [str(tmp_path).split("/")[2]]  # only the bound import path's top
    assert workdir != "/tmp"
