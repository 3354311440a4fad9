"""Trace selection picks the CRUXEval-O problems the model answered (its greedy sample 0
passed), in prompt order and capped; a forced id outside the dataset is named."""

from __future__ import annotations

import pandas as pd
import pytest

from attribution.tracing.selection import select_problems


def test_answered_problems_in_prompt_order_not_execution_order():
    prompts = pd.DataFrame({"task_id": [f"sample_{i}" for i in range(6)]})
    execs = pd.DataFrame(
        {
            "task_id": ["sample_5", "sample_4", "sample_1", "sample_3", "sample_0", "sample_2"],
            "sample": [0, 0, 0, 0, 0, 0],
            "passed": [True, True, False, True, True, False],
        }
    )
    got = select_problems(execs, prompts, max_problems=3)
    assert list(got["task_id"]) == ["sample_0", "sample_3", "sample_4"]
    assert list(got["rank"]) == [0, 1, 2] and set(got["reason"]) == {"greedy_pass"}
    assert len(select_problems(execs, prompts, max_problems=10)) == 4
    assert select_problems(execs, prompts, max_problems=0).empty


def test_unknown_forced_id_names_known_ids():
    prompts = pd.DataFrame({"task_id": ["sample_0", "sample_1"]})
    execs = pd.DataFrame({"task_id": ["sample_0"], "sample": [0], "passed": [True]})
    with pytest.raises(ValueError, match=r"\['sample_9'\] are not .* e.g. sample_0, sample_1"):
        select_problems(execs, prompts, 2, force=["sample_9"])
