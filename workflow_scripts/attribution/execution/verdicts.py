"""What a checker says about one sample: a status from a small fixed set and a reason a person
can read ("wrong answer on plus input 12", "runtime error on test 3: ZeroDivisionError at line 5
of the completion: division by zero", "killed by signal 9 (SIGKILL) on base input 7").

The per-input facts come from the sandbox (``Outcome``: status, exception type, message, line,
which limit ended it; ``SandboxResult``: setup errors with their line, the signal that ended the
process); this module only names them.
"""

from __future__ import annotations

import signal as _signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from attribution.execution.sandbox import Outcome, SandboxResult

# Sample statuses (executions.parquet ``status``; HumanEval+ ``base_status`` / ``plus_status``).
PASS = "pass"
WRONG_ANSWER = "wrong_answer"
RUNTIME_ERROR = "runtime_error"
TIMEOUT = "timeout"
SETUP_ERROR = "setup_error"
MEMORY_LIMIT = "memory_limit"
OUTPUT_LIMIT = "output_limit"
KILLED = "killed"  # ended by a signal (the reason names it)
NOT_RUN = "not_run"  # a suite that never ran because an earlier one timed out
SANDBOX_ERROR = "sandbox_error"  # the sandbox itself failed: not the program's fault
# Samples that never reach the sandbox.
MALFORMED = "malformed"
UNKNOWN_TASK = "unknown_task"
EMPTY_COMPLETION = "empty_completion"

STATUSES = (
    PASS,
    WRONG_ANSWER,
    RUNTIME_ERROR,
    TIMEOUT,
    SETUP_ERROR,
    MEMORY_LIMIT,
    OUTPUT_LIMIT,
    KILLED,
    NOT_RUN,
    SANDBOX_ERROR,
    MALFORMED,
    UNKNOWN_TASK,
    EMPTY_COMPLETION,
)

ColumnValue = str | int | float | bool
LineMap = Callable[[int], str]  # a line of the program -> words ("line 3 of the completion")


@dataclass(frozen=True)
class Verdict:
    """One sample's verdict: ``status`` (one of ``STATUSES``), ``reason`` (empty only for a
    pass), ``error`` (the exception type or sandbox condition, for grouping), ``details`` (JSON:
    per-input verdicts) and the checker's own columns."""

    passed: bool
    status: str
    reason: str = ""
    error: str = ""
    details: str = ""
    columns: Mapping[str, ColumnValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Failure:
    """Why one input failed: a status, a short description and the error name."""

    status: str
    what: str
    error: str = ""


def signal_name(number: int) -> str:
    """``9`` -> ``"signal 9 (SIGKILL)"``."""
    try:
        return f"signal {number} ({_signal.Signals(number).name})"
    except ValueError:
        return f"signal {number}"


def _at_line(line: int | None, where: LineMap) -> str:
    return "" if line is None else f" at {where(line)}"


def _clip(text: str, size: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= size else text[: size - 3] + "..."


def input_failure(
    outcome: Outcome,
    result: SandboxResult,
    cpu_limit: float,
    where: LineMap,
    wrong: str = "wrong answer",
) -> Failure | None:
    """The failure of one input whose outcome is not a plain ``ok`` (``None`` for ``ok``: the
    caller compares the value). ``where`` turns a line of the program into words ("line 3 of
    the completion"); ``wrong`` names a failed comparison (used for unencodable values)."""
    st = outcome.status
    if st == "ok":
        return None
    if st == "timeout":
        if outcome.limit == "wall":
            what = f"timeout (wall-clock limit, for a CPU limit of {cpu_limit:g} s)"
        else:
            what = f"timeout (CPU limit {cpu_limit:g} s)"
        return Failure(TIMEOUT, what, "timeout")
    if st == "unencodable":
        kind = outcome.error or outcome.message or "an unknown type"
        return Failure(WRONG_ANSWER, f"{wrong}: the value cannot be compared ({_clip(kind)})")
    if st == "error":
        if outcome.limit == "memory":
            how = f" ({_clip(outcome.message)})" if outcome.message and not outcome.error else ""
            return Failure(MEMORY_LIMIT, f"memory limit exceeded{how}", "memory_limit")
        if outcome.limit == "output":
            return Failure(OUTPUT_LIMIT, f"output limit exceeded ({outcome.message})", "output")
        if not outcome.error:  # the process died during this input; the message says how
            how = _clip(outcome.message) or "ended without a result"
            if how.startswith("killed by signal"):
                return Failure(KILLED, how, "killed")
            return Failure(RUNTIME_ERROR, f"the program {how}", "exited")
        text = f"{outcome.error}{_at_line(outcome.line, where)}"
        if outcome.message:
            text += f": {_clip(outcome.message)}"
        return Failure(RUNTIME_ERROR, f"runtime error: {text}", outcome.error)
    return process_failure(result)  # not_run: what ended the process decides


def process_failure(result: SandboxResult) -> Failure:
    """Why a program stopped before an input ran (the input's outcome is ``not_run`` and no
    earlier input says why)."""
    if result.status == "timeout":
        return Failure(TIMEOUT, "timeout (the program's limit)", "timeout")
    if result.status == "output_limit":
        return Failure(OUTPUT_LIMIT, "output limit exceeded", "output")
    if result.status == "sandbox_error":
        return Failure(SANDBOX_ERROR, f"sandbox error: {_clip(result.error)}", "sandbox_error")
    if result.signal is not None:
        return Failure(KILLED, f"killed by {signal_name(result.signal)}", "killed")
    detail = _clip(result.error) if result.error else "ended without reporting a result"
    return Failure(RUNTIME_ERROR, f"the program {detail}", "exited")


def setup_failure(result: SandboxResult, where: LineMap) -> Failure:
    """The program could not even be set up (syntax error, an exception at import time, no
    entry point)."""
    if result.error == "timeout":
        return Failure(TIMEOUT, "timeout while defining the program (before any input)", "timeout")
    text = f"{result.error or 'an error'}{_at_line(result.setup_line, where)}"
    return Failure(SETUP_ERROR, f"setup error: {_clip(text)}", result.error)


@dataclass(frozen=True)
class SuiteVerdict:
    """The verdict of one group of inputs (a HumanEval+ suite, APPS' tests, one CRUXEval
    prediction): ``status``, ``reason`` and the per-input pass flags."""

    passed: bool
    status: str
    reason: str
    error: str
    flags: list[bool]


def judge_inputs(
    result: SandboxResult,
    outcomes: Sequence[Outcome],
    matches: Sequence[bool | None],
    cpu_limits: Sequence[float],
    where: LineMap,
    label: Callable[[int], str],
    wrong: str = "wrong answer",
) -> SuiteVerdict:
    """Judge a group of inputs from their outcomes alone (a failure elsewhere in the program
    never changes it). ``matches[i]`` is the comparison of an ``ok`` outcome (None otherwise);
    ``label(i)`` names input i ("plus input 3", "test 2"). The reason names the first failing
    input; a setup error fails every input."""
    if result.status == "setup_error":
        fail = setup_failure(result, where)
        return SuiteVerdict(False, fail.status, fail.what, fail.error, [False] * len(outcomes))
    if len(matches) != len(outcomes):
        raise ValueError(f"{len(outcomes)} outcomes but {len(matches)} comparisons")
    flags = [bool(m) for m in matches]
    for i, outcome in enumerate(outcomes):
        if flags[i]:
            continue
        if outcome.status == "ok":
            fail = Failure(WRONG_ANSWER, wrong)
        else:
            found = input_failure(outcome, result, cpu_limits[i], where, wrong)
            assert found is not None
            fail = found
        return SuiteVerdict(False, fail.status, f"{fail.what} on {label(i)}", fail.error, flags)
    return SuiteVerdict(True, PASS, "", "", flags)
