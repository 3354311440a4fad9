"""Dataset loaders: the project's samples, the real release files, hub format, bad rows."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from attribution.data import loaders
from attribution.data.loaders import DatasetFormatError, download_dataset, load_dataset_file
from attribution.data.records import COLUMNS, AppsTask, records_from_frame

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"


@pytest.mark.parametrize(
    ("dataset", "name", "minimum"),
    [
        ("humanevalplus", "humanevalplus.jsonl", 12),
        ("cruxeval", "cruxeval.jsonl", 40),
        ("apps", "apps.jsonl", 12),
    ],
)
def test_samples_load_into_normalized_schema(dataset, name, minimum):
    frame = load_dataset_file(dataset, SAMPLES / name)
    assert list(frame.columns) == list(COLUMNS[dataset])
    assert len(frame) >= minimum
    records = records_from_frame(dataset, frame)
    assert len(records) == len(frame)


def test_sample_apps_has_both_test_styles():
    tasks = records_from_frame("apps", load_dataset_file("apps", SAMPLES / "apps.jsonl"))
    assert any(t.fn_name for t in tasks) and any(t.fn_name is None for t in tasks)
    assert {t.difficulty for t in tasks} == {"introductory", "interview", "competition"}
    assert all(t.inputs and len(t.inputs) == len(t.outputs) for t in tasks)


def test_parquet_round_trip_and_sidecar(tmp_path):
    frame, provenance = download_dataset(
        "cruxeval", {"source": "local", "path": str(SAMPLES / "cruxeval.jsonl")}
    )
    frame.to_parquet(tmp_path / "c.parquet", index=False)
    again = load_dataset_file("cruxeval", tmp_path / "c.parquet")
    pd.testing.assert_frame_equal(frame, again)
    assert provenance["rows"] == len(frame)
    assert len(provenance["source_sha256"]) == 64
    # The content hash depends on content only, not on the file format it came from.
    assert provenance["content_sha256"] == loaders.frame_sha256(again)


def test_gzip_jsonl_and_humaneval_without_plus_inputs(tmp_path):
    row = {
        "task_id": "X/0",
        "prompt": "def f():\n",
        "entry_point": "f",
        "canonical_solution": "    return 1\n",
        "test": "def check(c):\n    assert c() == 1\n",
    }
    path = tmp_path / "he.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps(row) + "\n")
    task = records_from_frame("humanevalplus", load_dataset_file("humanevalplus", path))[0]
    assert task.base_input == [] and task.plus_input == [] and task.atol == 0.0


def test_apps_directory_layout(tmp_path):
    problem = tmp_path / "train" / "0007"
    problem.mkdir(parents=True)
    (problem / "question.txt").write_text("Add two numbers.")
    (problem / "input_output.json").write_text(
        json.dumps({"fn_name": "add", "inputs": [[1, 2]], "outputs": [[3]]})
    )
    (problem / "solutions.json").write_text(json.dumps(["def add(a, b):\n    return a + b\n"]))
    (problem / "metadata.json").write_text(json.dumps({"difficulty": "introductory", "url": "u"}))
    (problem / "starter_code.py").write_text("def add(a, b):\n")
    for path in (tmp_path / "train", problem):
        task: AppsTask = records_from_frame("apps", load_dataset_file("apps", path))[0]
        assert (task.problem_id, task.fn_name, task.outputs, task.starter_code) == (
            "0007",
            "add",
            [[3]],
            "def add(a, b):\n",
        )


@pytest.mark.parametrize(
    ("dataset", "row", "message"),
    [
        (
            "cruxeval",
            {"id": "s1", "code": "def f(): pass", "input": ""},
            "row s1: missing field 'output'",
        ),
        (
            "cruxeval",
            {"id": "s2", "code": 3, "input": "", "output": "1"},
            "row s2: field 'code' should be str",
        ),
        (
            "humanevalplus",
            {
                "task_id": "T/1",
                "prompt": "p",
                "entry_point": "f",
                "canonical_solution": "",
                "test": "",
                "base_input": "[1,",
                "plus_input": [],
            },
            "row T/1: field 'base_input'",
        ),
        (
            "apps",
            {
                "problem_id": 9,
                "question": "q",
                "solutions": "[]",
                "input_output": '{"inputs": [1]}',
                "difficulty": "interview",
            },
            "row 9: field 'input_output' needs keys",
        ),
        (
            "apps",
            {
                "problem_id": 10,
                "question": "q",
                "solutions": "[]",
                "input_output": "",
                "difficulty": "hard",
            },
            "row 10: field 'difficulty' is 'hard'",
        ),
    ],
)
def test_malformed_rows_name_dataset_row_and_field(tmp_path, dataset, row, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DatasetFormatError) as info:
        load_dataset_file(dataset, path)
    assert str(path) in str(info.value) and dataset in str(info.value)
    assert message in str(info.value)


def test_bad_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"id": "a", "code": "", "input": "", "output": ""}\n{"id": \n')
    with pytest.raises(ValueError, match=r"broken.jsonl:2: not valid JSON"):
        load_dataset_file("cruxeval", path)


def test_hub_source_reads_hub_format_repo_folder(tmp_path):
    """datasets.load_dataset on a folder laid out like a hub dataset repo (no network)."""
    repo = tmp_path / "cruxeval-org--cruxeval"
    (repo / "data").mkdir(parents=True)
    rows = [json.loads(line) for line in (SAMPLES / "cruxeval.jsonl").read_text().splitlines()]
    pd.DataFrame(rows).to_parquet(repo / "data" / "test-00000-of-00001.parquet", index=False)
    frame, provenance = download_dataset(
        "cruxeval", {"source": "hub", "repo": str(repo), "revision": "main", "split": "test"}
    )
    assert len(frame) == len(rows) and provenance["revision"] == "main"
    assert frame.iloc[0]["id"] == rows[0]["id"]


def test_hub_apps_reads_jsonl_through_json_builder(tmp_path, monkeypatch):
    """APPS goes through the json builder on the repo's JSONL files (hf:// paths online)."""
    line = (SAMPLES / "apps.jsonl").read_text().splitlines()[0]
    (tmp_path / "test.jsonl").write_text(line + "\n")
    real_paths = loaders.hub_data_files
    seen = {}

    def local_copy(repo, revision, data_files):
        seen["hf"] = real_paths(repo, revision, data_files)
        return [str(tmp_path / data_files)]

    monkeypatch.setattr(loaders, "hub_data_files", local_copy)
    spec = {
        "source": "hub",
        "repo": "codeparrot/apps",
        "revision": "abc123",
        "data_files": "test.jsonl",
    }
    frame, _ = download_dataset("apps", spec)
    assert seen["hf"] == ["hf://datasets/codeparrot/apps@abc123/test.jsonl"]
    assert len(frame) == 1


def test_hub_failure_says_what_to_do():
    with pytest.raises(RuntimeError, match="could not load dataset cruxeval from the hub"):
        download_dataset(
            "cruxeval", {"source": "hub", "repo": "no-such-org/no-such-dataset", "revision": "v1"}
        )


# --- the real benchmark files (../shared/benchmarks; skipped where absent) -------------------


def test_real_humanevalplus_release(shared_benchmarks):
    for version in ("v0.1.10", "v0.1.9"):
        frame = load_dataset_file(
            "humanevalplus", shared_benchmarks / f"humanevalplus/HumanEvalPlus-{version}.jsonl.gz"
        )
        tasks = records_from_frame("humanevalplus", frame)
        assert len(tasks) == 164
        assert all(t.base_input and t.plus_input for t in tasks)
        atols = {t.task_id: t.atol for t in tasks if t.atol}
        assert atols["HumanEval/2"] == pytest.approx(1e-6)


def test_real_cruxeval(shared_benchmarks):
    tasks = records_from_frame(
        "cruxeval", load_dataset_file("cruxeval", shared_benchmarks / "cruxeval/cruxeval.jsonl")
    )
    assert len(tasks) == 800
    assert tasks[0].id == "sample_0" and tasks[0].code.startswith("def f(")


def test_real_apps_files(shared_benchmarks):
    apps = shared_benchmarks / "apps"
    train = records_from_frame("apps", load_dataset_file("apps", apps / "coderl_train"))
    assert {t.problem_id for t in train} == {"0001", "0111", "2287", "2404", "4184"}
    by_id = {t.problem_id: t for t in train}
    assert by_id["2404"].fn_name == "findKthPositive" and by_id["2404"].starter_code.startswith(
        "class Solution"
    )
    assert by_id["0001"].fn_name is None and by_id["0001"].solutions
    selected = load_dataset_file("apps", apps / "mapcoder_selected150.jsonl")
    assert len(selected) == 150
    assert selected.difficulty.value_counts().to_dict() == {
        "interview": 52,
        "introductory": 50,
        "competition": 48,
    }
    assert selected.attrs["renamed_duplicate_ids"]  # the file repeats ids; none is dropped
    examples = load_dataset_file("apps", apps / "coderl_test_example_tests.jsonl")
    assert len(examples) == 5000


def test_format_key_decides_how_a_local_file_is_read(tmp_path):
    """`datasets.*.format` is used: a file without a telling suffix reads with the named
    format; a format that does not fit the path is an error naming both."""
    rows = (SAMPLES / "cruxeval.jsonl").read_bytes()
    (tmp_path / "crux.txt").write_bytes(rows)
    spec = {"source": "local", "path": str(tmp_path / "crux.txt")}
    with pytest.raises(DatasetFormatError, match="unknown dataset format.*`format:`"):
        download_dataset("cruxeval", spec)
    frame, _ = download_dataset("cruxeval", {**spec, "format": "jsonl"})
    expected, _ = download_dataset("cruxeval", {**spec, "path": str(SAMPLES / "cruxeval.jsonl")})
    pd.testing.assert_frame_equal(frame, expected)
    expected.to_parquet(tmp_path / "crux.data", index=False)
    frame, _ = download_dataset(
        "cruxeval", {**spec, "path": str(tmp_path / "crux.data"), "format": "parquet"}
    )
    pd.testing.assert_frame_equal(frame, expected)
    with pytest.raises(DatasetFormatError, match="format apps_dir does not fit a file"):
        download_dataset("cruxeval", {**spec, "format": "apps_dir"})
    # `parquet` on a JSONL file is read as Parquet, not silently as JSONL
    with pytest.raises(Exception, match="(?i)parquet"):
        download_dataset("cruxeval", {**spec, "format": "parquet"})
