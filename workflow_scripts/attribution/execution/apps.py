"""APPS checker (Hendrycks et al. 2021, "Measuring Coding Challenge Competence With APPS",
section 3; official ``eval/testing_util.py`` and ``test_one_solution.py``).

Per test the official harness records True / False, -1 (runtime error or the 4 s timeout) or,
for the whole program, -2 (compile error). We reproduce its comparison rules:

* call-based problems (``fn_name``; a ``class Solution`` is instantiated first): tuples become
  lists; pass when ``output == expected`` or ``output == expected[0]``, or when a list of tuples
  equals ``expected[0]`` as a list of lists; dict keys of a dict argument/output are turned back
  into ints (JSON made them strings).
* standard-input problems: the program's stdout lines are compared with the expected text by the
  official cascade: stripped text, per-line stripped lines, non-empty lines, floats with
  ``np.allclose``, and finally sets of whitespace-separated tokens per line (also rounded to 3
  decimals when numeric).

Programs get the official import prelude, and stdin programs the official wrapping into a
function ``code()`` (``wrap_stdin_program``). Differences: each stdin test runs in a fresh
process with the input on file descriptor 0 (the official harness patches ``sys.stdin`` inside
one process), ``__name__`` is ``"__main__"`` (officially ``"tmp_sol"``, which silently skips
every ``if __name__ == "__main__":`` block; pass ``main_name="tmp_sol"`` for that behaviour),
and the 4 s limit is CPU time (the benchmark's ``time_limit_s`` setting). A crash fails its
test; nothing else stands in for a result.

Comparison modes (``benchmarks.apps.comparison``): ``official`` is the cascade above (it matches
published APPS numbers). ``strict`` compares standard output line by line after whitespace
normalization (blank lines dropped, each line's whitespace-separated tokens must be equal), with
an optional float tolerance for tokens that are both numbers (``|a - b| <= tol * max(1, |b|)``);
call-based outputs must equal the expected value (or the single element of a one-element
expected list, APPS' wrapping of return values), tuples read as lists, no other fallback. Both
verdicts are recorded for every sample (``passed_official``, ``passed_strict``); ``passed``
follows the configured mode. The cascade's last step compares *sets* of per-line token sets,
so an output holding both a ``Yes`` and a ``No`` line can pass a test expecting ``Yes`` then
``No`` in another order (two false positives on problem 2064 in MapCoder's published runs).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from attribution.data.records import AppsTask
from attribution.execution.checker import JSONValue, NoReferences
from attribution.execution.sandbox import PRELOAD, Program, SandboxResult
from attribution.execution.verdicts import ColumnValue, LineMap, Verdict, judge_inputs

TIME_LIMIT = 4.0
COMPARISONS = ("official", "strict")
PRELUDE = (
    "import sys\nimport time\nimport itertools\n"
    "from itertools import accumulate, product, permutations, combinations\nimport collections\n"
    "from collections import Counter, OrderedDict, deque, defaultdict, ChainMap\n"
    "from functools import lru_cache\nimport math\n"
    "from math import sqrt, sin, cos, tan, ceil, fabs, floor, gcd, exp, log, log2\n"
    "import fractions\nfrom typing import List, Tuple\nimport numpy as np\nimport random\n"
    "import heapq\nfrom heapq import *\n"
)
COMPILE_ERROR, RUNTIME_ERROR = -2, -1


def wrap_stdin_program(code: str) -> str:
    """The official transformation of a standard-input program: import lines stay at module
    level until the first other line; everything from there on becomes the body of ``code()``
    (one tab deeper), after ``stdin = sys.stdin`` and ``stdout = sys.stdout``. A top-level
    ``return`` is therefore legal, as in the official harness."""
    lines = []
    for line in code.split("\n"):
        is_import = line.startswith("from ") or line.startswith("import ")
        lines.append(line + "\n" if is_import else "\t" + line + "\n")
    out, started = "", False
    for line in lines:
        if line.startswith("\t") and not started:
            out += "stdin = sys.stdin\nstdout = sys.stdout\ndef code():\n" + line
            started = True
        elif started and (line.startswith("from ") or line.startswith("import ")):
            out += "\t" + line
        else:
            out += line
    return out


def _int_keys(d: dict[Any, Any]) -> dict[Any, Any]:
    return {int(k): v for k, v in d.items()}


def call_inputs(inputs: Any) -> list[Any]:
    """Official input fix-up: a leading dict argument gets its JSON string keys back as ints."""
    try:
        if isinstance(inputs[0], dict):
            return [_int_keys(inputs[0])]
    except Exception:
        pass
    return list(inputs)


def call_expected(expected: Any) -> Any:
    """Official output fix-up (dict keys to ints)."""
    try:
        if isinstance(expected, dict):
            expected = [_int_keys(expected)]
    except Exception:
        pass
    try:
        if isinstance(expected[0], dict):
            expected = [_int_keys(expected[0])]
    except Exception:
        pass
    return expected


def call_output_matches(output: Any, expected: Any) -> bool:
    """Official comparison for call-based problems."""
    try:
        if isinstance(output, tuple):
            output = list(output)
        ok = output == expected
        if isinstance(expected, list) and expected:
            ok = ok or (output == expected[0])
        try:
            if isinstance(output[0], tuple):
                ok = ok or ([list(x) for x in output] == expected[0])
        except Exception:
            pass
        return bool(ok)
    except Exception:
        return False


def _stripped_equal(a: str, b: str) -> bool:
    return a.strip() == b.strip()


def stdin_output_matches(stdout: str, expected: Any) -> bool:
    """Official comparison cascade for standard-input problems (see module doc). An expected
    value that is not text (a malformed test) fails instead of stopping the whole run."""
    try:
        return _stdin_cascade(stdout, expected)
    except Exception:
        return False


def _stdin_cascade(stdout: str, expected: Any) -> bool:
    output: list[Any] = stdout.splitlines()
    exp: Any = "\n".join(expected) if isinstance(expected, list) else expected
    if not isinstance(exp, str):
        return False
    if _stripped_equal("\n".join(output), exp):
        return True
    if _stripped_equal("\n".join(o.strip() for o in output), exp):
        return True
    if output == [exp]:
        return True
    exp_lines = [x.strip() for x in exp.split("\n") if len(x)]
    if output == [exp_lines] or output == exp_lines:
        return True
    output = [o for o in output if len(o)]
    if output == [exp_lines] or output == exp_lines:
        return True
    try:
        out_f = [float(e) for e in output]
        gt_f = [float(e) for e in exp_lines]
        if len(out_f) == len(gt_f) and np.allclose(out_f, gt_f):
            return True
    except Exception:
        pass
    exp_sets = [set(line.split()) for line in exp_lines]
    if output == exp_sets:
        return True
    out_sets = [set(toks) for toks in (o.split() for o in output) if len(toks)]
    ok = False
    try:
        ok = {frozenset(s) for s in out_sets} == {frozenset(s) for s in exp_sets}
    except Exception:
        pass
    try:
        ok = ok or (
            {frozenset(round(float(t), 3) for t in s) for s in out_sets}
            == {frozenset(round(float(t), 3) for t in s) for s in exp_sets}
        )
    except Exception:
        pass
    return bool(ok)


# ------------------------------------------------------------------------------------------------
# The strict comparison (see the module doc)


def _number_equal(a: str, b: str, tol: float | None) -> bool:
    if tol is None:
        return False
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    if math.isnan(x) or math.isnan(y):
        return False
    return abs(x - y) <= tol * max(1.0, abs(y))


def _token_lines(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line.strip()]


def strict_stdin_matches(stdout: str, expected: str | list[str], tol: float | None = None) -> bool:
    """Same non-blank lines with the same tokens (numbers within ``tol`` when given)."""
    exp = "\n".join(expected) if isinstance(expected, list) else expected
    out_lines, exp_lines = _token_lines(stdout), _token_lines(exp)
    if len(out_lines) != len(exp_lines):
        return False
    for out, ref in zip(out_lines, exp_lines, strict=True):
        if len(out) != len(ref):
            return False
        if any(a != b and not _number_equal(a, b, tol) for a, b in zip(out, ref, strict=True)):
            return False
    return True


def _as_lists(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_as_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_lists(v) for k, v in value.items()}
    return value


def _values_equal(out: Any, exp: Any, tol: float | None) -> bool:
    if isinstance(out, bool) or isinstance(exp, bool):
        return type(out) is type(exp) and out == exp
    if isinstance(out, int | float) and isinstance(exp, int | float):
        if out == exp:
            return True
        return tol is not None and abs(out - exp) <= tol * max(1.0, abs(exp))
    if isinstance(out, list) and isinstance(exp, list):
        return len(out) == len(exp) and all(
            _values_equal(a, b, tol) for a, b in zip(out, exp, strict=True)
        )
    if isinstance(out, dict) and isinstance(exp, dict):
        return out.keys() == exp.keys() and all(_values_equal(out[k], exp[k], tol) for k in exp)
    return type(out) is type(exp) and out == exp


def strict_call_matches(output: Any, expected: Any, tol: float | None = None) -> bool:
    """The return value equals the expected one (or the only element of a one-element
    expected list); tuples compare as lists, bools only with bools."""
    out = _as_lists(output)
    if _values_equal(out, expected, tol):
        return True
    return (
        isinstance(expected, list) and len(expected) == 1 and _values_equal(out, expected[0], tol)
    )


# ------------------------------------------------------------------------------------------------
# The checker


def _stdin_text(value: Any) -> str:
    return "\n".join(value) if isinstance(value, list) else value


class AppsChecker(NoReferences):
    benchmark = "apps"
    deterministic = False
    extra_columns: dict[str, ColumnValue] = {
        "difficulty": "",
        "tests_passed": 0,
        "tests_total": 0,
        "passed_official": False,
        "passed_strict": False,
        "tests_passed_official": 0,
        "tests_passed_strict": 0,
        "comparison": "",
    }
    preload = (*PRELOAD, "numpy")  # the official prelude imports numpy in every program

    def __init__(
        self,
        tasks: list[AppsTask],
        time_limit: float = TIME_LIMIT,
        main_name: str = "__main__",
        comparison: str = "official",
        float_tolerance: float | None = None,
    ) -> None:
        if comparison not in COMPARISONS:
            raise ValueError(f"apps: comparison must be one of {COMPARISONS}, got {comparison!r}")
        if not time_limit > 0:
            raise ValueError(f"apps: time_limit must be > 0, got {time_limit}")
        if float_tolerance is not None and not float_tolerance >= 0:
            raise ValueError(f"apps: float_tolerance must be >= 0, got {float_tolerance}")
        self.tasks = {t.task_id: t for t in tasks}
        self.time_limit = float(time_limit)
        self.main_name = main_name
        self.comparison = comparison
        self.float_tolerance = None if float_tolerance is None else float(float_tolerance)

    def task_ids(self) -> list[str]:
        return list(self.tasks)

    def task_columns(self, task_id: str) -> dict[str, ColumnValue]:
        """Task-level columns, also for samples that never ran (empty or malformed)."""
        task = self.tasks[task_id]
        return {
            "difficulty": task.difficulty,
            "tests_total": len(task.inputs),
            "comparison": self.comparison,
        }

    def settings(self) -> dict[str, JSONValue]:
        return {
            "time_limit_s": self.time_limit,
            "main_name": self.main_name,
            "comparison": self.comparison,
            "float_tolerance": self.float_tolerance,
        }

    def program(self, task_id: str, completion: str) -> Program:
        task = self.tasks[task_id]
        n = len(task.inputs)
        limits = (self.time_limit,) * n
        if task.fn_name:
            return Program(
                "call",
                PRELUDE + completion,
                tuple(call_inputs(i) for i in task.inputs),
                limits,
                entry=task.fn_name,
                instantiate="Solution" if "class Solution" in completion else "",
                setup_cpu_s=self.time_limit,
            )
        return Program(
            "stdin",
            PRELUDE + wrap_stdin_program(completion),
            tuple(_stdin_text(i) for i in task.inputs),
            limits,
            entry="code",
            main_name=self.main_name,
        )

    def _line_map(self, task: AppsTask, completion: str) -> LineMap:
        prelude = PRELUDE.count("\n")
        # wrap_stdin_program inserts three lines before the first line that is not an import.
        lines = completion.split("\n")
        leading = next(
            (i for i, ln in enumerate(lines) if not ln.startswith(("from ", "import "))),
            len(lines),
        )

        def where(line: int) -> str:
            own = line - prelude
            if own < 1:
                return f"line {line} of the official import prelude"
            if not task.fn_name and own > leading:
                own -= 3
            return f"line {max(own, 1)} of the completion"

        return where

    def test_results(self, task: AppsTask, result: SandboxResult, mode: str) -> list[Any]:
        """The official per-test list: True/False, -1 (runtime error/timeout), -2 (compile),
        with the comparison of ``mode``."""
        if result.status == "setup_error":
            return [COMPILE_ERROR] * len(task.inputs)
        tol = self.float_tolerance
        out: list[Any] = []
        for o, exp in zip(result.outcomes, task.outputs, strict=True):
            if o.status != "ok":
                out.append(RUNTIME_ERROR)
            elif task.fn_name:
                expected = call_expected(exp)
                if mode == "strict":
                    out.append(strict_call_matches(o.value, expected, tol))
                else:
                    out.append(call_output_matches(o.value, expected))
            elif mode == "strict":
                out.append(strict_stdin_matches(o.value, exp, tol))
            else:
                out.append(stdin_output_matches(o.value, exp))
        return out

    def judge(self, task_id: str, completion: str, result: SandboxResult) -> Verdict:
        task = self.tasks[task_id]
        by_mode = {m: self.test_results(task, result, m) for m in COMPARISONS}
        results = by_mode[self.comparison]
        matches = [r if isinstance(r, bool) else None for r in results]
        v = judge_inputs(
            result,
            result.outcomes,
            matches,
            [self.time_limit] * len(results),
            self._line_map(task, completion),
            _test_label,
        )
        counts = {m: sum(1 for r in rs if r is True) for m, rs in by_mode.items()}
        passed = {m: bool(rs) and counts[m] == len(rs) for m, rs in by_mode.items()}
        return Verdict(
            passed=passed[self.comparison],
            status=v.status if results else "wrong_answer",
            reason=v.reason if results else "the problem has no tests",
            error=v.error,
            details=json.dumps(results),
            columns={
                "difficulty": task.difficulty,
                "tests_passed": counts[self.comparison],
                "tests_total": len(results),
                "passed_official": passed["official"],
                "passed_strict": passed["strict"],
                "tests_passed_official": counts["official"],
                "tests_passed_strict": counts["strict"],
                "time_limit_s": self.time_limit,
                "comparison": self.comparison,
            },
        )


def _test_label(index: int) -> str:
    return f"test {index}"
