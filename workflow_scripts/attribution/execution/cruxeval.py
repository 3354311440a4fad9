"""CRUXEval-O / CRUXEval-I checker (Gu et al. 2024, "CRUXEval: A Benchmark for Code Reasoning,
Understanding and Execution", section 2; official ``evaluation/utils_general.py``).

Official rule: a prediction ``g`` passes when ``{code}\\nassert {output} == {g}`` runs without
error (3 s limit), where for -O ``g`` is the predicted output and for -I a whole call
``f(...)``. We evaluate ``g`` in the sandbox (after ``exec(code)``) and compare its value with
``ast.literal_eval(output)`` outside it, so the prediction cannot forge the comparison. The
limit (``time_limit``, CPU seconds) is the benchmark's ``time_limit_s`` setting.

The official script also marks as failed, without running them, -I predictions that contain no
``f(`` and -O predictions that contain ``f({input})`` (calling the function instead of
predicting). We keep every sample in n: ``passed`` applies that rule (the official number),
``passed_execution`` is the plain execution verdict, ``official_skip`` flags the samples the
rule hit.

Answer extraction follows the official ``postprocess_generation``: the text inside
``[ANSWER] ... [/ANSWER]`` if present; for -O the text after ``==``; for -I the text before
``==`` and after ``assert``. A bare answer is used as is.
"""

from __future__ import annotations

import ast
import json
from typing import Any

from attribution.data.records import CruxEvalTask
from attribution.execution.checker import JSONValue, NoReferences
from attribution.execution.sandbox import PRELOAD, Program, SandboxResult
from attribution.execution.verdicts import WRONG_ANSWER, ColumnValue, Verdict, judge_inputs

TIME_LIMIT = 3.0


def extract_answer(mode: str, text: str) -> str:
    """The prediction inside a raw model answer (official postprocessing, see module doc)."""
    if "[ANSWER]" in text:
        text = text.split("[ANSWER]")[1]
    text = text.split("[/ANSWER]")[0].strip()  # the official stop word
    if mode == "input":
        if "==" in text:
            text = text.split("==")[0].strip()
        if "assert" in text:
            text = text.split("assert")[1].strip()
    elif "==" in text:
        text = text.split("==")[1].strip()
    return text.strip()


def official_skip(mode: str, task: CruxEvalTask, prediction: str) -> bool:
    """The official script's rule that fails a prediction without running it."""
    if mode == "input":
        return "f(" not in prediction
    return f"f({task.input})" in prediction


def _short(text: str, size: int = 60) -> str:
    return text if len(text) <= size else text[: size - 3] + "..."


def _where(line: int) -> str:
    return f"line {line} of the task's code"


class CruxEvalChecker(NoReferences):
    """Shared by both directions; ``CruxEvalOutputChecker`` / ``CruxEvalInputChecker`` set
    ``benchmark`` and ``mode``."""

    benchmark = "cruxeval"
    mode = "output"
    preload = PRELOAD
    deterministic = True
    extra_columns: dict[str, ColumnValue] = {
        "passed_execution": False,
        "official_skip": False,
        "prediction": "",
    }

    def __init__(
        self, tasks: list[CruxEvalTask], extract: bool = True, time_limit: float = TIME_LIMIT
    ) -> None:
        if not time_limit > 0:
            raise ValueError(f"{self.benchmark}: time_limit must be > 0, got {time_limit}")
        self.tasks = {t.task_id: t for t in tasks}
        self.extract = extract
        self.time_limit = float(time_limit)
        self.expected: dict[str, Any] = {}
        for t in tasks:
            try:
                self.expected[t.task_id] = ast.literal_eval(t.output)
            except (ValueError, SyntaxError) as exc:
                raise ValueError(
                    f"cruxeval: task {t.task_id}: field 'output' is not a Python literal ({exc})"
                ) from exc

    def task_ids(self) -> list[str]:
        return list(self.tasks)

    def task_columns(self, task_id: str) -> dict[str, ColumnValue]:
        return {}

    def settings(self) -> dict[str, JSONValue]:
        return {"extract": self.extract, "time_limit_s": self.time_limit}

    def prediction(self, completion: str) -> str:
        return extract_answer(self.mode, completion) if self.extract else completion.strip()

    def program(self, task_id: str, completion: str) -> Program:
        return Program(
            "eval",
            self.tasks[task_id].code,
            (self.prediction(completion),),
            (self.time_limit,),
            setup_cpu_s=self.time_limit,
        )

    def judge(self, task_id: str, completion: str, result: SandboxResult) -> Verdict:
        task = self.tasks[task_id]
        pred = self.prediction(completion)
        out = result.outcomes[0]
        match: bool | None = None
        if out.status == "ok":
            try:
                match = bool(self.expected[task_id] == out.value)
            except Exception:  # noqa: BLE001 - an incomparable value is a wrong answer
                match = False
        v = judge_inputs(
            result, [out], [match], [self.time_limit], _where, lambda i: "the prediction"
        )
        skip = official_skip(self.mode, task, pred)
        status, reason = v.status, v.reason
        if status == WRONG_ANSWER and out.status == "ok":
            what = "f(...) with the predicted input" if self.mode == "input" else "the prediction"
            reason = (
                f"wrong answer: {what} evaluates to {_short(repr(out.value))}, expected "
                f"{_short(task.output)}"
            )
        if v.passed and skip:
            rule = "contains no f(" if self.mode == "input" else f"calls f({task.input})"
            status, reason = WRONG_ANSWER, f"official rule: the prediction {rule} (not run)"
        return Verdict(
            passed=v.passed and not skip,
            status=status,
            reason=reason,
            error=v.error,
            details=json.dumps({"outcome": out.status}),
            columns={
                "passed_execution": v.passed,
                "official_skip": skip,
                "prediction": pred,
                "time_limit_s": self.time_limit,
            },
        )


class CruxEvalOutputChecker(CruxEvalChecker):
    benchmark = "cruxeval_o"
    mode = "output"


class CruxEvalInputChecker(CruxEvalChecker):
    benchmark = "cruxeval_i"
    mode = "input"
