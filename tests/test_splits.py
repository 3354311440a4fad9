"""The held-out part of a dataset (attribution.data.splits) and the build corpus that leaves it
out (attribution.models.corpus): seeded, order-free, the same tasks everywhere it is used."""

from __future__ import annotations

import pytest

from attribution.data.loaders import load_dataset_file
from attribution.data.prompts import format_prompts
from attribution.data.splits import (
    HeldOut,
    dataset_task_ids,
    split_problems,
    task_parts,
    trained_ids,
)
from attribution.models.corpus import benchmark_documents

SAMPLES = {
    "humanevalplus": "data/samples/humanevalplus.jsonl",
    "cruxeval": "data/samples/cruxeval.jsonl",
    "apps": "data/samples/apps.jsonl",
}


@pytest.fixture(scope="module")
def frames(repo_root):
    return {name: load_dataset_file(name, repo_root / path) for name, path in SAMPLES.items()}


def test_held_out_part_is_seeded_sized_and_order_free():
    ids = [f"t{i}" for i in range(44)]
    spec = HeldOut(fraction=0.25, seed=0)
    parts = task_parts(ids, spec)
    held = {t for t, p in parts.items() if p == "held_out"}
    assert len(held) == 11  # ceil(0.25 * 44)
    assert task_parts(list(reversed(ids)), spec) == parts
    assert held != {t for t, p in task_parts(ids, HeldOut(0.25, seed=1)).items() if p != "train"}
    assert held == split_problems(ids, 0.25, 0)  # the fine-tune's eval split is this function
    assert trained_ids(ids, spec) == [t for t in ids if t not in held]  # dataset order kept
    assert trained_ids(ids, None) == ids and set(task_parts(ids, None).values()) == {"train"}
    with pytest.raises(ValueError, match=r"held_out.fraction must be in \(0, 1\)"):
        HeldOut(fraction=1.0)
    assert HeldOut.from_config({"fraction": 0.5}) == HeldOut(0.5, 0)
    assert HeldOut.from_config(None) is None


@pytest.mark.parametrize("benchmark", ["humanevalplus", "cruxeval_o", "cruxeval_i", "apps"])
def test_documents_are_the_benchmark_prompt_and_answer_of_the_trained_part(frames, benchmark):
    dataset = {"cruxeval_o": "cruxeval", "cruxeval_i": "cruxeval"}.get(benchmark, benchmark)
    frame = frames[dataset]
    spec = HeldOut(fraction=0.25, seed=0)
    docs = benchmark_documents(benchmark, frame, spec)
    ids = dataset_task_ids(dataset, frame)
    parts = task_parts(ids, spec)
    assert [d.task_id for d in docs] == [t for t in ids if parts[t] == "train"]
    prompts = format_prompts(benchmark, frame).set_index("task_id")["prompt"]
    for doc in docs:
        assert doc.text.startswith(prompts[doc.task_id])  # what the benchmark job shows
        assert len(doc.text) > len(prompts[doc.task_id])
    if benchmark == "cruxeval_o":
        row = frame.set_index("id").loc[docs[0].task_id]
        assert docs[0].text.endswith(f"assert f({row['input']}) == {row['output']}\n[/ANSWER]")
    held = {t for t, p in parts.items() if p == "held_out"}
    assert held and not held & {d.task_id for d in docs}
    assert len(benchmark_documents(benchmark, frame, None)) == len(ids)


def test_finetune_holds_out_the_same_apps_problems(tiny_model_dir, frames):
    """A fine-tune whose eval_fraction/seed equal datasets.apps.held_out (config.py checks that)
    evaluates on exactly the held-out part and trains on the rest."""
    from attribution.finetune.dataset import build_examples
    from attribution.models.loading import load_tokenizer

    apps = frames["apps"]
    train, evals, _ = build_examples(
        apps, load_tokenizer(tiny_model_dir), 1024, seed=0, eval_fraction=0.25
    )
    parts = task_parts(dataset_task_ids("apps", apps), HeldOut(0.25, seed=0))
    assert {e.problem_id for e in evals} == {t for t, p in parts.items() if p == "held_out"}
    assert {e.problem_id for e in train} == {t for t, p in parts.items() if p == "train"}


@pytest.mark.parametrize(
    ("dataset", "benchmark"),
    [("humanevalplus", "humanevalplus"), ("cruxeval", "cruxeval_o"), ("apps", "apps")],
)
def test_dataset_task_ids_are_the_scored_task_ids(frames, dataset, benchmark):
    """The summary splits the task ids of executions.parquet (= the prompts' task_id)."""
    prompts = format_prompts(benchmark, frames[dataset])
    assert dataset_task_ids(dataset, frames[dataset]) == list(prompts["task_id"].astype(str))
