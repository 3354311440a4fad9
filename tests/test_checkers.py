"""Checker semantics on small inputs: APPS comparison cascade, CRUXEval extraction and skip
rule, evalplus' oracle, and end-to-end APPS verdicts (class Solution, crash, compile error)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from attribution.data.records import COLUMNS, CruxEvalTask
from attribution.execution.apps import (
    call_expected,
    call_inputs,
    call_output_matches,
    stdin_output_matches,
    wrap_stdin_program,
)
from attribution.execution.cruxeval import extract_answer, official_skip
from attribution.execution.engine import execute_samples
from attribution.execution.humanevalplus import output_matches, program_source
from attribution.execution.scoring import score_executions

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    "stdout, expected, ok",
    [
        ("3\n", "3\n", True),
        ("3   \n\n", "3", True),
        ("1 2\n3 4\n", "1 2\n3 4", True),
        ("  1 2\n3 4  \n", "1 2\n3 4\n", True),
        ("1\n\n2\n", "1\n2\n", True),  # empty lines dropped
        ("0.333333333\n", "0.3333333\n", True),  # np.allclose on float lines
        ("2 1\n", "1 2\n", True),  # official: token sets per line
        ("3\n", "4\n", False),
        ("", "4\n", False),
        ("1.2345\n", "1.2344\n", True),  # rounded to 3 decimals
        ("1.24\n", "1.25\n", False),
        ("yes\n", ["yes"], True),  # list-valued expected output is joined
    ],
)
def test_apps_stdin_cascade(stdout, expected, ok):
    assert stdin_output_matches(stdout, expected) is ok


def test_apps_stdin_malformed_expected_fails_cleanly():
    assert stdin_output_matches("1\n", [1, 2]) is False


def test_apps_call_comparison():
    assert call_output_matches((1, 2), [1, 2])
    assert call_output_matches(5, [5])
    assert call_output_matches([(1, 2)], [[[1, 2]]])
    assert not call_output_matches(6, [5])
    assert call_inputs([{"1": "a"}]) == [{1: "a"}]
    assert call_expected({"2": 3}) == [{2: 3}]


def test_wrap_stdin_program_allows_top_level_return():
    src = wrap_stdin_program("import sys\nn = int(input())\nif n < 0:\n    return\nprint(n)")
    compile(src, "<t>", "exec")
    assert "def code():" in src and src.startswith("import sys\n")


@pytest.mark.parametrize(
    "mode, raw, pred",
    [
        ("output", "[ANSWER]assert f(1) == 'ab'[/ANSWER]", "'ab'"),
        ("output", "'ab'", "'ab'"),
        ("output", "f(1) == [1, 2]\n", "[1, 2]"),
        ("input", "[ANSWER]assert f('x') == 3[/ANSWER] trailing", "f('x')"),
        ("input", "f([1])", "f([1])"),
    ],
)
def test_cruxeval_extraction(mode, raw, pred):
    assert extract_answer(mode, raw) == pred


def test_cruxeval_official_skip_rule():
    task = CruxEvalTask(id="s", code="def f(x):\n    return x", input="1", output="1")
    assert official_skip("output", task, "f(1)")
    assert not official_skip("output", task, "1")
    assert official_skip("input", task, "1")
    assert not official_skip("input", task, "f(1)")


def test_evalplus_oracle():
    assert output_matches("g", [], 1, 1, 0)
    assert output_matches("g", [], 1.0000001, 1.0, 0)  # the 1e-6 rule for floats
    assert not output_matches("g", [], 1.1, 1.0, 0)
    assert not output_matches("g", [], [1.0], (1.0,), 1e-6)  # types must match under atol
    assert output_matches("find_zero", [[-6, 11, -6, 1]], 1.0, 3.0, 1e-4)  # a root, not the one
    assert not output_matches("find_zero", [[-6, 11, -6, 1]], 1.5, 1.0, 1e-4)


def test_program_source_accepts_solution_style():
    from attribution.data.records import HumanEvalPlusTask

    task = HumanEvalPlusTask(
        "t", "from typing import List\n\ndef g(x: List[int]):\n", "g", "", "", "", [], [], 0.0
    )
    assert program_source(task, "    return x") == task.prompt + "    return x"
    full = "def g(x: List[int]):\n    return x\n"
    assert program_source(task, full) == "from typing import List\n\n" + full


def _apps_tasks() -> pd.DataFrame:
    rows = [
        {
            "problem_id": "call",
            "question": "",
            "solutions": "[]",
            "input_output": json.dumps(
                {"fn_name": "twice", "inputs": [[1], [2], [3]], "outputs": [2, [4], 6]}
            ),
            "difficulty": "introductory",
            "url": "",
            "starter_code": "",
        },
        {
            "problem_id": "stdin",
            "question": "",
            "solutions": "[]",
            "input_output": json.dumps({"inputs": ["1 2\n", "5 5\n"], "outputs": ["3\n", "10\n"]}),
            "difficulty": "interview",
            "url": "",
            "starter_code": "",
        },
    ]
    return pd.DataFrame(rows, columns=list(COLUMNS["apps"]))


def test_apps_end_to_end_verdicts(tmp_path):
    samples = pd.DataFrame(
        [
            ("call", 0, "class Solution:\n    def twice(self, x):\n        return 2 * x\n"),
            ("call", 1, "def twice(x):\n    return 2 * x if x != 3 else 0\n"),
            ("call", 2, "def twice(x):\n    raise ValueError\n"),
            ("stdin", 0, "a, b = map(int, input().split())\nprint(a + b)\nexit()\n"),
            ("stdin", 1, "a, b = map(int, input().split())\nif a == 5:\n    1 / 0\nprint(a + b)\n"),
            ("stdin", 2, "print(3\n"),
        ],
        columns=["task_id", "sample", "completion"],
    )
    ex = execute_samples("apps", _apps_tasks(), samples, tmp_path / "ex.parquet", progress=False)
    got = {(r.task_id, r.sample): (r.passed, json.loads(r.details)) for r in ex.itertuples()}
    assert got[("call", 0)] == (True, [True, True, True])
    assert got[("call", 1)] == (False, [True, True, False])
    assert got[("call", 2)] == (False, [-1, -1, -1])
    assert got[("stdin", 0)] == (True, [True, True])
    assert got[("stdin", 1)] == (False, [True, -1])
    assert got[("stdin", 2)] == (False, [-2, -2])
    m = score_executions("apps", ex, [1, 3])
    assert m["pass@1"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert m["pass@3"] == pytest.approx(1.0)
    assert m["by_difficulty"]["introductory"]["test_case_pass_rate"] == pytest.approx(
        (1 + 2 / 3 + 0) / 3
    )
    assert m["by_difficulty"]["interview"]["strict_accuracy"] == pytest.approx(1 / 3)
