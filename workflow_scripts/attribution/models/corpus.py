"""Training documents for the tiny models built here: a benchmark's own prompt followed by the
reference answer, for the tasks of the dataset's training part (:mod:`attribution.data.splits`).
Prompt and answer are tokenized apart and then joined, as generation sees them (the prompt
alone, then the model's tokens): joined text would let BPE merge across the boundary (a
prompt's final newline with the answer's indentation) into tokens generation never starts from.

A document is exactly what the benchmark job will show the model plus what a correct model
writes next, so a model trained on it is scored on what it saw: it memorizes, which makes the
demo's scores, selections and traces non-empty, and its held-out part shows that nothing more
than memorization happened.

- ``humanevalplus``: the prompt (signature and docstring) + the canonical solution.
- ``cruxeval_o`` / ``cruxeval_i``: the benchmark prompt (Gu et al. 2024, appendix prompts) +
  ``assert f(<input>) == <output>`` + ``\\n[/ANSWER]`` (the answer and its closing tag).
- ``apps``: the APPS prompt (Hendrycks et al. 2021, section 4) + the first reference solution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from attribution.data.prompts import ROW_BUILDERS, apps_prompt
from attribution.data.records import BENCHMARK_DATASET, records_from_frame
from attribution.data.splits import HeldOut, task_id_of, trained_ids


@dataclass(frozen=True)
class TrainingDocument:
    benchmark: str
    task_id: str
    prompt: str
    answer: str

    @property
    def text(self) -> str:
        return self.prompt + self.answer


def _crux_answer(task: Any) -> str:
    return f"assert f({task.input}) == {task.output}\n[/ANSWER]"


def prompt_and_answer(benchmark: str, task: Any) -> tuple[str, str] | None:
    """(benchmark prompt, reference answer) of one task; None without a reference answer."""
    if benchmark == "humanevalplus":
        return task.prompt, task.canonical_solution
    if benchmark in ("cruxeval_o", "cruxeval_i"):
        return ROW_BUILDERS[benchmark](task)["prompt"], _crux_answer(task)
    if benchmark == "apps":
        return (apps_prompt(task), task.solutions[0]) if task.solutions else None
    raise ValueError(f"unknown benchmark {benchmark!r} (known: {sorted(BENCHMARK_DATASET)})")


def benchmark_documents(
    benchmark: str, frame: pd.DataFrame, held_out: HeldOut | None = None
) -> list[TrainingDocument]:
    """The training documents of ``benchmark`` from its normalized dataset frame
    (``data/raw/<dataset>.parquet``), held-out tasks left out, in dataset order. The split is
    over every task id of the dataset (as the summary's), not only those with an answer."""
    if benchmark not in BENCHMARK_DATASET:
        raise ValueError(f"unknown benchmark {benchmark!r} (known: {sorted(BENCHMARK_DATASET)})")
    tasks = records_from_frame(BENCHMARK_DATASET[benchmark], frame)
    keep = set(trained_ids([task_id_of(t) for t in tasks], held_out))
    docs = []
    for task in tasks:
        pair = prompt_and_answer(benchmark, task)
        if pair is not None and task_id_of(task) in keep:
            docs.append(TrainingDocument(benchmark, task_id_of(task), *pair))
    return docs


def encode_document(tokenizer: Any, doc: TrainingDocument) -> list[int]:
    """Token ids: the prompt as generation encodes it, the answer encoded alone, then EOS."""
    prompt = list(tokenizer(doc.prompt)["input_ids"])
    answer = list(tokenizer(doc.answer, add_special_tokens=False)["input_ids"])
    return prompt + answer + [tokenizer.eos_token_id]
