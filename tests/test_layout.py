"""The project's required layout is in git (a fresh clone has it) and survives the clean target."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REQUIRED = ("Snakefile", "rules", "workflow_scripts", "config.yaml", "envs", "data", "results",
            "tests", "README.md")  # fmt: skip


def test_required_top_level_entries_are_tracked():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    top = {path.split("/")[0] for path in tracked}
    assert [name for name in REQUIRED if name not in top] == []


def test_clean_results_keeps_the_tracked_readme(tmp_path):
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    for rel in ("results/README.md", "results/m/humanevalplus/metrics.json", "results/.x",
                "data/samples/a.jsonl", "data/raw/a.parquet", "data/references/a.parquet"):  # fmt: skip
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    subprocess.run(["make", "-s", "clean-results"], cwd=tmp_path, check=True, capture_output=True)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["Makefile", "data/samples/a.jsonl", "results/README.md"]
