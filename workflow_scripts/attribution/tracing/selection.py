"""Which CRUXEval-O problems to trace: those the model answers correctly with its greedy sample
(execution-equivalent: the executions file's ``passed``), capped, or a forced list.

``results/{model}/trace/selected.parquet`` columns: ``task_id``, ``reason`` (``greedy_pass`` |
``forced``), ``rank`` (0-based order).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

SELECTED_COLUMNS = ["task_id", "reason", "rank"]


def select_problems(
    executions: pd.DataFrame,
    prompts: pd.DataFrame,
    max_problems: int,
    force: Sequence[str] = (),
    greedy: bool = True,
    source: str = "executions",
) -> pd.DataFrame:
    """Problems to trace, in prompt order.

    ``force`` non-empty: exactly those ids (each must be a prompt's task_id), whatever the model
    answered. Otherwise: the problems whose sample 0 passed, when generation was greedy
    (``greedy``; with sampling, sample 0 is not the model's answer and this is an error), at
    most ``max_problems``. ``source`` names the executions file in error messages.
    """
    if max_problems < 0:
        raise ValueError(f"trace.max_problems must be >= 0, got {max_problems}")
    known = list(prompts["task_id"].astype(str))
    if force:
        unknown = [t for t in force if str(t) not in set(known)]
        if unknown:
            raise ValueError(
                f"trace.force_problems: {unknown} are not CRUXEval-O task ids (the dataset's "
                f"{len(known)} ids are e.g. {', '.join(known[:3])})"
            )
        ids = [str(t) for t in dict.fromkeys(force)]
        return _frame(ids, "forced")
    if not greedy:
        raise ValueError(
            "trace selection needs greedy CRUXEval-O generations (temperature 0): with sampling "
            "the first sample is not the model's answer; set benchmarks.cruxeval_o.temperature "
            "to 0 or list trace.force_problems"
        )
    missing = {"task_id", "sample", "passed"} - set(executions.columns)
    if missing:
        raise ValueError(f"{source}: missing column(s) {sorted(missing)}")
    greedy_rows = executions[executions["sample"] == 0]
    passed = set(greedy_rows.loc[greedy_rows["passed"].astype(bool), "task_id"].astype(str))
    ids = [t for t in known if t in passed][:max_problems]
    return _frame(ids, "greedy_pass")


def _frame(ids: list[str], reason: str) -> pd.DataFrame:
    return pd.DataFrame(
        {"task_id": pd.Series(ids, dtype=object), "reason": reason, "rank": range(len(ids))},
        columns=SELECTED_COLUMNS,
    )
