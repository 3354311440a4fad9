"""APPS problems -> tokenized training examples.

Each example is the benchmark's own APPS prompt (:func:`attribution.data.prompts.apps_prompt`,
Hendrycks et al. 2021, section 4) followed by one reference solution and EOS. The loss covers
the solution and EOS only (prompt labels are -100), so the model learns to answer, not to
reproduce problem statements. The solution is drawn from ``solutions`` with a generator seeded
by (seed, problem id): the choice does not depend on row order or on the other problems.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pandas as pd

from attribution.data.prompts import apps_prompt
from attribution.data.records import AppsTask, records_from_frame
from attribution.data.splits import split_problems  # the project's one split (re-exported)

IGNORE_INDEX = -100  # labels ignored by the causal-LM loss (transformers' convention)


@dataclass(frozen=True)
class Example:
    """One tokenized (prompt, solution) pair; ``labels`` is -100 on the prompt."""

    problem_id: str
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class DatasetStats:
    problems: int
    without_solutions: int
    too_long_prompts: int  # prompt alone fills max_length: dropped
    truncated: int  # solution cut at max_length
    train_examples: int
    eval_examples: int

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def choose_solution(task: AppsTask, seed: int) -> str | None:
    """One reference solution, chosen deterministically by (seed, problem id); None if none."""
    if not task.solutions:
        return None
    return random.Random(f"{seed}:{task.problem_id}").choice(task.solutions)


def tokenize_example(
    tokenizer: Any, prompt: str, solution: str, max_length: int, problem_id: str = ""
) -> Example | None:
    """Prompt tokens (with the tokenizer's own special tokens, as generation uses) + solution
    tokens + EOS, cut at ``max_length``. None when not one solution token fits."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token_id; training needs one to end solutions")
    prompt_ids = list(tokenizer(prompt)["input_ids"])
    answer_ids = list(tokenizer(solution, add_special_tokens=False)["input_ids"])
    answer_ids.append(tokenizer.eos_token_id)
    if len(prompt_ids) >= max_length:
        return None
    ids = (prompt_ids + answer_ids)[:max_length]
    labels = [IGNORE_INDEX] * len(prompt_ids) + ids[len(prompt_ids) :]
    return Example(problem_id=problem_id, input_ids=tuple(ids), labels=tuple(labels))


def build_examples(
    frame: pd.DataFrame,
    tokenizer: Any,
    max_length: int,
    seed: int,
    eval_fraction: float,
    max_problems: int | None = None,
) -> tuple[list[Example], list[Example], DatasetStats]:
    """(train, eval, stats) from a normalized APPS frame (``data/raw/<dataset>.parquet``)."""
    tasks: list[AppsTask] = records_from_frame("apps", frame)
    if max_problems is not None:
        tasks = tasks[:max_problems]
    held_out = split_problems([t.problem_id for t in tasks], eval_fraction, seed)
    train: list[Example] = []
    evals: list[Example] = []
    without = too_long = truncated = 0
    for task in tasks:
        solution = choose_solution(task, seed)
        if solution is None:
            without += 1
            continue
        example = tokenize_example(
            tokenizer, apps_prompt(task), solution, max_length, problem_id=task.problem_id
        )
        if example is None:
            too_long += 1
            continue
        if example.input_ids[-1] != tokenizer.eos_token_id:
            truncated += 1
        (evals if task.problem_id in held_out else train).append(example)
    if not train:
        raise ValueError(
            f"no training examples: {len(tasks)} problems, {without} without solutions, "
            f"{too_long} with prompts of max_length ({max_length}) tokens or more"
        )
    stats = DatasetStats(
        problems=len(tasks),
        without_solutions=without,
        too_long_prompts=too_long,
        truncated=truncated,
        train_examples=len(train),
        eval_examples=len(evals),
    )
    return train, evals, stats
