"""Every failure has a status from the fixed set and a reason a person can read; base and plus
verdicts are independent; full-program completions keep the prompt's helpers. Real programs
through the real sandbox."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from attribution.data.records import COLUMNS
from attribution.execution.checker import Checker, checker_class, make_checker
from attribution.execution.engine import execute_samples
from attribution.execution.humanevalplus import program_source, prompt_context
from attribution.execution.sandbox import SandboxLimits
from attribution.execution.verdicts import STATUSES

pytestmark = pytest.mark.timeout(300)

PROMPT = 'def f(x):\n    """Return x + 1."""\n'


def _he_tasks(prompt: str = PROMPT, entry: str = "f", plus: int = 4) -> pd.DataFrame:
    row = {
        "task_id": "T/0",
        "prompt": prompt,
        "entry_point": entry,
        "canonical_solution": "    return x + 1\n",
        "test": "",
        "contract": "",
        "base_input": json.dumps([[1], [2], [3]]),
        "plus_input": json.dumps([[10 + i] for i in range(plus)]),
        "atol": 0.0,
    }
    return pd.DataFrame([row], columns=list(COLUMNS["humanevalplus"]))


def _run(tmp_path, benchmark, tasks, completions, **kwargs) -> list[dict]:
    samples = pd.DataFrame(
        {"task_id": kwargs.pop("task_id", "T/0"), "sample": range(len(completions)),
         "completion": completions}
    )  # fmt: skip
    ex = execute_samples(
        benchmark, tasks, samples, tmp_path / "ex.parquet", workers=2, progress=False, **kwargs
    )
    rows = ex.sort_values("sample").to_dict(orient="records")
    for row in rows:  # the contract of every row
        assert row["status"] in STATUSES, row
        assert row["passed"] == (row["status"] == "pass"), row
        assert bool(row["reason"]) != row["passed"], row
        assert "exit 70" not in row["reason"] and "exit -24" not in row["reason"], row
    return rows


def test_plus_input_that_ends_the_process_keeps_the_base_verdict(tmp_path):
    """A candidate that passes every base input and then runs a long C-level call (no Python
    timer can interrupt it: the CPU rlimit kills the process) or kills itself on a plus input:
    the base verdict stands, plus names the input and what ended it."""
    body = "    if x == {k}:\n        {stmt}\n    return x + 1\n"
    rows = _run(
        tmp_path,
        "humanevalplus",
        _he_tasks(),
        [
            body.format(k=11, stmt="sum(range(10**10))"),
            body.format(k=12, stmt="import os, signal; os.kill(os.getpid(), signal.SIGKILL)"),
            body.format(k=13, stmt="import os; os._exit(0)"),
        ],
        checker_options={"min_time_limit": 0.5},
    )
    for row in rows:
        assert row["base_passed"] and row["base_status"] == "pass", row
        assert not row["plus_passed"] and not row["passed"], row
    long, killed, exited = rows
    assert long["status"] == long["plus_status"] == "timeout"
    assert long["reason"] == "timeout (CPU limit 0.5 s) on plus input 1", long
    assert killed["plus_status"] == "killed"
    assert killed["reason"] == "killed by signal 9 (SIGKILL) on plus input 2", killed
    assert exited["plus_status"] == "runtime_error"
    assert exited["reason"].startswith("the program exited with status 0") and exited[
        "reason"
    ].endswith("on plus input 3"), exited
    assert json.loads(long["details"]) == {"base": [True] * 3, "plus": [True, False, False, False]}


def test_base_timeout_leaves_plus_not_run_with_the_cause(tmp_path):
    (row,) = _run(
        tmp_path,
        "humanevalplus",
        _he_tasks(),
        ["    while x == 2:\n        pass\n    return x + 1\n"],
        checker_options={"min_time_limit": 0.3},
    )
    assert (row["base_status"], row["plus_status"]) == ("timeout", "not_run")
    assert row["base_reason"] == "timeout (CPU limit 0.3 s) on base input 1"
    assert row["plus_reason"] == f"not run: the program stopped earlier ({row['base_reason']})"
    assert row["time_limit_s"] == 0.3


def test_every_kind_of_failure_has_its_status_and_reason(tmp_path):
    completions = [
        "    return x + 1\n",  # pass
        "    return x + (x != 3)\n",  # wrong answer on base input 2
        "    return x + 1 if x < 11 else x\n",  # wrong answer on plus input 1 only
        "    y = 0\n    return x + 1 // y\n",  # ZeroDivisionError at line 2 of the completion
        "    return x + 1\n  bad indent\n",  # IndentationError at line 2 of the completion
        "    return x + 1\nundefined_name\n",  # NameError while defining, line 2
        "    return bytearray(1 << 40)\n",  # memory limit
        '    return "x" * (80 << 20)\n',  # result above the result cap: output limit
    ]
    rows = _run(
        tmp_path,
        "humanevalplus",
        _he_tasks(),
        completions,
        limits=SandboxLimits(result_bytes=16 << 20),
    )
    got = [(r["status"], r["reason"]) for r in rows]
    assert got[0] == ("pass", "")
    assert got[1] == ("wrong_answer", "wrong answer on base input 2")
    assert rows[2]["base_passed"] and got[2] == ("wrong_answer", "wrong answer on plus input 1")
    assert got[3] == (
        "runtime_error",
        "runtime error: ZeroDivisionError at line 2 of the completion: integer division or "
        "modulo by zero on base input 0",
    )
    assert got[4] == (
        "setup_error",
        "setup error: IndentationError at line 2 of the completion",
    )
    assert got[5] == ("setup_error", "setup error: NameError at line 2 of the completion")
    assert got[6][0] == "memory_limit" and got[6][1].startswith("memory limit exceeded"), got[6]
    assert got[6][1].endswith("on base input 0")
    assert got[7][0] == "output_limit" and "on base input 0" in got[7][1], got[7]


def test_apps_reasons_name_the_test_and_the_completion_line(tmp_path):
    tasks = pd.DataFrame(
        [
            {
                "problem_id": "p",
                "question": "",
                "solutions": "[]",
                "input_output": json.dumps({"inputs": ["1\n", "0\n"], "outputs": ["1\n", "0\n"]}),
                "difficulty": "interview",
                "url": "",
                "starter_code": "",
            }
        ],
        columns=list(COLUMNS["apps"]),
    )
    rows = _run(
        tmp_path,
        "apps",
        tasks,
        [
            "import sys\nn = int(input())\nprint(1 // n)\n",  # ZeroDivisionError on test 1
            "n = int(input())\nprint('x' * (1 << 22))\n",  # stdout above the cap
            "print(int(input())\n",  # SyntaxError
        ],
        task_id="p",
        limits=SandboxLimits(stdout_bytes=1 << 20),
    )
    assert rows[0]["reason"] == (
        "runtime error: ZeroDivisionError at line 3 of the completion: integer division or "
        "modulo by zero on test 1"
    )
    assert rows[1]["status"] == "output_limit" and rows[1]["reason"].endswith("on test 0")
    assert rows[2]["status"] == "setup_error"
    assert rows[2]["reason"].startswith("setup error: SyntaxError at line 1 of the completion")
    assert all(r["time_limit_s"] == 4.0 for r in rows)


def test_cruxeval_reasons(tmp_path):
    tasks = pd.DataFrame(
        [{"id": "c", "code": "def f(x):\n    return x * 2\n", "input": "3", "output": "6"}],
        columns=list(COLUMNS["cruxeval"]),
    )
    rows = _run(
        tmp_path,
        "cruxeval_o",
        tasks,
        ["6", "7", "f(3)", "undefined"],
        task_id="c",
        checker_options={"time_limit": 1.5},
    )
    assert [r["status"] for r in rows] == ["pass", "wrong_answer", "wrong_answer", "runtime_error"]
    assert rows[1]["reason"] == "wrong answer: the prediction evaluates to 7, expected 6"
    assert rows[2]["reason"] == "official rule: the prediction calls f(3) (not run)"
    assert rows[2]["passed_execution"] and not rows[2]["passed"]
    assert rows[3]["reason"].startswith("runtime error: NameError")
    assert {r["time_limit_s"] for r in rows} == {1.5}


# ------------------------------------------------------------------------------------------------
# Full-program completions keep the prompt's helpers (HumanEval/10, 32, 38, 50)

HELPER_PROMPT = (
    "import math\n\n\ndef helper(x):\n    return x + 1\n\n\n"
    'def f(x):\n    """Return helper(x)."""\n'
)


def test_full_program_keeps_prompt_helpers_it_does_not_redefine(tmp_path):
    tasks = _he_tasks(HELPER_PROMPT)
    uses_helper = "def f(x):\n    return helper(x)\n"
    redefines = "def helper(x):\n    return x - 1\n\ndef f(x):\n    return helper(x) + 2\n"
    rows = _run(tmp_path, "humanevalplus", tasks, [uses_helper, redefines])
    assert [r["status"] for r in rows] == ["pass", "pass"]
    checker = make_checker("humanevalplus", tasks)
    task = checker.tasks["T/0"]
    source = program_source(task, redefines)
    assert source.count("def helper") == 1 and "return x - 1" in source
    assert "import math" in prompt_context(task, redefines)


@pytest.mark.shared
def test_real_prompts_with_helpers(shared_benchmarks, tmp_path):
    """HumanEval/10, 32, 38, 50: a whole-program canonical solution (the prompt's entry point
    with its body, no helpers) passes because the helpers are kept."""
    from attribution.data.loaders import load_dataset_file

    tasks = load_dataset_file(
        "humanevalplus", shared_benchmarks / "humanevalplus/HumanEvalPlus-v0.1.10.jsonl.gz"
    )
    ids = ["HumanEval/10", "HumanEval/32", "HumanEval/38", "HumanEval/50"]
    tasks = tasks[tasks["task_id"].isin(ids)].reset_index(drop=True)
    helpers = {"HumanEval/10": "is_palindrome", "HumanEval/32": "poly",
               "HumanEval/38": "encode_cyclic", "HumanEval/50": "encode_shift"}  # fmt: skip
    rows = []
    for t in tasks.itertuples():
        header = t.prompt[t.prompt.index(f"def {t.entry_point}(") :]
        full = header + t.canonical_solution
        assert f"def {helpers[t.task_id]}(" not in full
        rows.append((t.task_id, 0, full))
    samples = pd.DataFrame(rows, columns=["task_id", "sample", "completion"])
    ex = execute_samples(
        "humanevalplus", tasks, samples, tmp_path / "ex.parquet", workers=2, progress=False
    )
    assert ex["passed"].all(), ex[["task_id", "status", "reason"]]


def test_every_checker_implements_the_protocol(repo_root):
    """Same members and method signatures as ``Checker`` (no probing in the engine)."""
    import inspect

    from attribution.data.loaders import load_dataset_file

    methods = {
        name: list(inspect.signature(getattr(Checker, name)).parameters)
        for name in dir(Checker)
        if not name.startswith("_") and inspect.isfunction(getattr(Checker, name))
    }
    attributes = set(Checker.__annotations__)
    assert {"program", "judge", "settings", "reference_programs"} <= set(methods)
    for benchmark, dataset in (("humanevalplus", "humanevalplus"), ("cruxeval_o", "cruxeval"),
                               ("cruxeval_i", "cruxeval"), ("apps", "apps")):  # fmt: skip
        tasks = load_dataset_file(dataset, repo_root / f"data/samples/{dataset}.jsonl")
        checker = make_checker(benchmark, tasks)
        assert isinstance(checker, checker_class(benchmark)) and checker.benchmark == benchmark
        for name, params in methods.items():
            got = list(inspect.signature(getattr(type(checker), name)).parameters)
            assert got == params, (benchmark, name, got)
        assert all(hasattr(checker, a) for a in attributes), benchmark
        json.dumps(checker.settings())  # plain JSON: it goes into the shards' fingerprint


def test_scoring_never_loads_the_execution_engine(repo_root):
    """score and execute share no code: scoring imports neither the engine nor the sandbox."""
    import os
    import subprocess
    import sys

    code = (
        "import json, sys; import attribution.execution.scoring; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('attribution'))))"
    )
    env = {**os.environ, "PYTHONPATH": str(repo_root / "workflow_scripts")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    loaded = json.loads(out)
    assert "attribution.execution.engine" not in loaded
    assert not any(m.startswith("attribution.execution.sandbox") for m in loaded)
    assert not any(m.startswith("attribution.execution.humanevalplus") for m in loaded)
