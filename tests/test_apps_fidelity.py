"""APPS: non-text expected outputs (normalized or rejected at load, never a silent fail) and the
two comparison modes, reported side by side."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from attribution.data.loaders import DatasetFormatError, normalize_rows
from attribution.data.records import COLUMNS
from attribution.execution.apps import (
    stdin_output_matches,
    strict_call_matches,
    strict_stdin_matches,
)
from attribution.execution.engine import execute_samples
from attribution.execution.scoring import score_executions

pytestmark = pytest.mark.timeout(300)


def _mapcoder_row(pid: str, tests: list[dict]) -> dict:
    return {
        "name": pid,
        "id": int(pid),
        "description": "Print f(x).",
        "difficulty": "introductory",
        "sample_io": tests[:1],
        "test_list": tests,
        "starter_code": "def f(x):\n\t",
    }


def test_mapcoder_non_text_outputs_are_normalized_to_printed_text():
    tests = [
        {"input": "[1]", "output": [100]},
        {"input": "[2]", "output": [True]},
        {"input": "[3]", "output": [[1, 2]]},
        {"input": "[4]", "output": [None]},
        {"input": "[5]", "output": ["Zonk"]},
    ]
    frame = normalize_rows("apps", [_mapcoder_row("3554", tests)])
    io = json.loads(frame["input_output"].iloc[0])
    assert io["outputs"] == ["100", "True", "[1, 2]", "None", "Zonk"]
    assert frame.attrs["normalized_expected_outputs"] == {"3554": 4}


def test_non_text_tests_of_stdin_problems_are_rejected_naming_problem_and_field():
    row = {
        "problem_id": "77",
        "question": "q",
        "solutions": "[]",
        "input_output": json.dumps({"inputs": ["1\n", "2\n"], "outputs": ["1\n", 2]}),
        "difficulty": "interview",
    }
    with pytest.raises(DatasetFormatError, match=r"row 77: field 'input_output.outputs\[1\]'"):
        normalize_rows("apps", [row])
    two = _mapcoder_row("5", [{"input": "1", "output": ["a", "b"]}])
    with pytest.raises(DatasetFormatError, match=r"row 5: field 'test_list\[0\].output'"):
        normalize_rows("apps", [two])
    # call-based problems keep their values (they are compared as values)
    call = dict(row, input_output=json.dumps({"fn_name": "f", "inputs": [[1]], "outputs": [2]}))
    assert len(normalize_rows("apps", [call])) == 1


def test_normalized_problem_is_scored_on_the_printed_value(tmp_path):
    frame = normalize_rows(
        "apps",
        [_mapcoder_row("9", [{"input": "3", "output": [True]}, {"input": "4", "output": [False]}])],
    )
    samples = pd.DataFrame(
        {
            "task_id": "9",
            "sample": [0, 1],
            "completion": [
                "x = int(input())\nprint(x % 2 == 1)\n",
                "x = int(input())\nprint(x)\n",
            ],
        }
    )
    ex = execute_samples("apps", frame, samples, tmp_path / "ex.parquet", progress=False)
    assert list(ex["passed"]) == [True, False]
    assert ex["reason"].iloc[1] == "wrong answer on test 0"


@pytest.mark.shared
def test_real_mapcoder_file_has_74_normalized_problems(shared_benchmarks):
    from attribution.data.loaders import load_dataset_file

    frame = load_dataset_file("apps", shared_benchmarks / "apps/mapcoder_selected150.jsonl")
    normalized = frame.attrs["normalized_expected_outputs"]
    assert len(frame) == 150 and len(normalized) == 74
    for io in frame["input_output"]:
        assert all(isinstance(o, str) for o in json.loads(io)["outputs"])


# ------------------------------------------------------------------------------------------------
# Comparison modes


@pytest.mark.parametrize(
    "stdout, expected, official, strict",
    [
        ("Yes\nNo\n", "Yes\nNo\n", True, True),
        ("No\nYes\n", "Yes\nNo\n", True, False),  # official: sets of per-line token sets
        ("1 2\n", "2 1\n", True, False),  # official: token sets per line
        ("  1   2 \n\n3\n", "1 2\n3\n", True, True),  # whitespace and blank lines only
        ("1 2 3\n", "1 2\n3\n", False, False),  # line breaks count
        ("0.333333333\n", "0.3333333\n", True, False),  # official float rule; strict: exact
        ("yes\n", "YES\n", False, False),
    ],
)
def test_official_and_strict_stdin_comparison(stdout, expected, official, strict):
    assert stdin_output_matches(stdout, expected) is official
    assert strict_stdin_matches(stdout, expected) is strict


def test_strict_float_tolerance_and_call_based_values():
    assert strict_stdin_matches("0.333333333\n", "0.3333333\n", 1e-6)
    assert not strict_stdin_matches("0.34\n", "0.3333333\n", 1e-6)
    assert strict_stdin_matches("1000000.1\n", "1000000\n", 1e-6)  # relative for large values
    assert not strict_stdin_matches("abc\n", "abd\n", 0.5)
    assert strict_call_matches((1, 2), [1, 2])  # a tuple is a list in JSON
    assert strict_call_matches(5, [5])  # APPS wraps return values in a list
    assert not strict_call_matches(1, [1, 2])  # official: output == expected[0] passes
    assert not strict_call_matches(1, [True])  # bools compare with bools only
    assert strict_call_matches([0.1 + 0.2], [0.3], 1e-9)
    assert not strict_call_matches([0.1 + 0.2], [0.3])


def _apps_tasks() -> pd.DataFrame:
    io = {"inputs": ["2\n", "3\n"], "outputs": ["Yes\nNo\n", "No\nYes\n"]}
    row = {
        "problem_id": "2064",
        "question": "",
        "solutions": "[]",
        "input_output": json.dumps(io),
        "difficulty": "interview",
        "url": "",
        "starter_code": "",
    }
    return pd.DataFrame([row], columns=list(COLUMNS["apps"]))


@pytest.mark.parametrize("mode", ["official", "strict"])
def test_both_verdicts_recorded_and_reported_whatever_the_mode(tmp_path, mode):
    samples = pd.DataFrame(
        {
            "task_id": "2064",
            "sample": [0, 1],
            "completion": [
                "n = int(input())\nprint('Yes' if n == 2 else 'No')\nprint('No' if n == 2 else 'Yes')\n",
                "input()\nprint('Yes')\nprint('No')\n",  # the same lines whatever the input
            ],
        }
    )
    ex = execute_samples(
        "apps",
        _apps_tasks(),
        samples,
        tmp_path / "ex.parquet",
        progress=False,
        checker_options={"comparison": mode},
    )
    assert list(ex["passed_official"]) == [True, True]
    assert list(ex["passed_strict"]) == [True, False]
    assert list(ex["passed"]) == list(ex[f"passed_{mode}"])
    assert list(ex["tests_passed_strict"]) == [2, 1]
    assert set(ex["comparison"]) == {mode}
    if mode == "strict":
        assert ex["reason"].iloc[1] == "wrong answer on test 1"
    m = score_executions("apps", ex, [1, 2])
    assert m["comparison"] == mode
    assert m["by_comparison"]["official"]["pass@1"] == 1.0
    assert m["by_comparison"]["strict"]["pass@1"] == 0.5
    assert m["by_comparison"]["strict"]["test_case_pass_rate"] == pytest.approx(0.75)
    assert m["lenient_passes"] == 1
    assert m["pass@1"] == m["by_comparison"][mode]["pass@1"]
