"""Fine-tuning library: dataset building, packing boundaries, training runs on tiny models."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

from attribution.data.loaders import load_dataset_file
from attribution.data.prompts import apps_prompt
from attribution.data.records import records_from_frame
from attribution.finetune.dataset import (
    IGNORE_INDEX,
    build_examples,
    choose_solution,
    split_problems,
    tokenize_example,
)
from attribution.finetune.history import HISTORY_COLUMNS, history_frame
from attribution.finetune.launch import launch
from attribution.finetune.packing import (
    BlockCollator,
    build_blocks,
    model_inputs,
    pack_lengths,
)
from attribution.finetune.spec import (
    LORA_TARGETS,
    FinetuneSpec,
    FinetuneSpecError,
    lora_target_modules,
)
from attribution.finetune.tracking import WandbConfigError, WandbSettings
from attribution.finetune.train import FinetuneJob, job_fingerprint, last_complete_checkpoint
from attribution.models.loading import load_model_and_tokenizer, load_tokenizer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def apps_frame() -> pd.DataFrame:
    return load_dataset_file("apps", REPO / "data" / "samples" / "apps.jsonl")


@pytest.fixture(scope="module")
def apps_parquet(apps_frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("apps") / "apps.parquet"
    apps_frame.to_parquet(path, index=False)
    return path


def make_job(base: Path, data: Path, out: Path, **spec: object) -> FinetuneJob:
    settings = {
        "base": "tiny",
        "method": "full",
        "max_steps": 12,
        "lr": 3e-3,
        "batch_size": 2,
        "max_length": 640,
        "eval_fraction": 0.25,
        "logging_steps": 1,
        "save_steps": 6,
        "warmup": 0.0,
        "lr_scheduler": "constant",
    }
    settings.update(spec)
    wandb = settings.pop("wandb", WandbSettings())
    nproc = settings.pop("nproc", 1)
    return FinetuneJob(
        name="tiny-ft",
        spec=FinetuneSpec.from_config(settings),
        base=str(base),
        data=str(data),
        model_dir=str(out / "model"),
        history=str(out / "history.parquet"),
        work_dir=str(out / "work"),
        wandb=wandb,
        nproc=nproc,
        threads=2,
    )


# ------------------------------------------------------------------------------------------
# Spec, dataset, packing (no training)


def test_spec_defaults_and_errors():
    spec = FinetuneSpec.from_config({"base": "m", "method": "lora", "lora": {"r": 4}})
    assert (spec.lora.r, spec.lora.alpha, spec.num_epochs) == (4, 32, 1.0)
    with pytest.raises(FinetuneSpecError, match=r"models.x.finetune: unknown key\(s\) \['lrr'\]"):
        FinetuneSpec.from_config({"base": "m", "lrr": 1}, "models.x.finetune")
    with pytest.raises(FinetuneSpecError, match="either epochs or max_steps"):
        FinetuneSpec.from_config({"base": "m", "epochs": 1, "max_steps": 3})
    with pytest.raises(FinetuneSpecError, match="method: 'qlora'"):
        FinetuneSpec.from_config({"base": "m", "method": "qlora"})
    assert "gate_proj" in lora_target_modules(spec.lora, "olmo2")
    with pytest.raises(FinetuneSpecError, match="no default for model type 'mamba'"):
        lora_target_modules(spec.lora, "mamba")


def test_solution_choice_is_seeded_per_problem(apps_frame):
    tasks = records_from_frame("apps", apps_frame)
    multi = [t for t in tasks if len(t.solutions) > 1]
    assert multi, "sample data should have problems with several solutions"
    task = multi[0]
    picks = {choose_solution(task, seed) for seed in range(20)}
    assert picks <= set(task.solutions) and len(picks) > 1  # seed matters
    # Independent of the other problems and of row order.
    assert choose_solution(task, 3) == choose_solution(replace(task), 3)
    reordered = records_from_frame("apps", apps_frame.iloc[::-1])
    again = next(t for t in reordered if t.problem_id == task.problem_id)
    assert choose_solution(again, 3) == choose_solution(task, 3)


def test_example_masks_prompt_and_ends_with_eos(tiny_model_dir, apps_frame):
    tok = load_tokenizer(tiny_model_dir)
    task = records_from_frame("apps", apps_frame)[0]
    prompt = apps_prompt(task)
    ex = tokenize_example(tok, prompt, task.solutions[0], max_length=4096)
    n_prompt = len(tok(prompt)["input_ids"])
    assert ex.labels[:n_prompt] == (IGNORE_INDEX,) * n_prompt
    assert ex.labels[n_prompt:] == ex.input_ids[n_prompt:]
    assert ex.input_ids[-1] == tok.eos_token_id
    assert tok.decode(ex.input_ids[n_prompt:-1]) == task.solutions[0]
    # Cut at max_length; a prompt that fills max_length gives no example.
    short = tokenize_example(tok, prompt, task.solutions[0], max_length=n_prompt + 3)
    assert len(short) == n_prompt + 3 and short.input_ids[-1] != tok.eos_token_id
    assert tokenize_example(tok, prompt, task.solutions[0], max_length=n_prompt) is None


def test_split_is_deterministic_and_partial():
    ids = [str(i) for i in range(40)]
    held = split_problems(ids, 0.1, seed=0)
    assert len(held) == 4 and held == split_problems(list(reversed(ids)), 0.1, seed=0)
    assert held != split_problems(ids, 0.1, seed=1)
    assert split_problems(ids, 0.0, seed=0) == set()
    assert len(split_problems(["a", "b"], 0.9, seed=0)) == 1  # never every problem


def test_build_examples_counts(tiny_model_dir, apps_frame):
    tok = load_tokenizer(tiny_model_dir)
    train, evals, stats = build_examples(apps_frame, tok, 640, seed=0, eval_fraction=0.25)
    assert stats.problems == len(apps_frame) == 12
    assert (stats.train_examples, stats.eval_examples) == (len(train), len(evals)) == (9, 3)
    assert not {e.problem_id for e in train} & {e.problem_id for e in evals}
    assert all(len(e) <= 640 for e in train + evals)
    assert stats.truncated == sum(e.input_ids[-1] != tok.eos_token_id for e in train + evals)


def test_pack_lengths_fits_and_uses_every_example():
    lengths = [500, 30, 470, 60, 250, 250, 990, 10, 5, 1000]
    bins = pack_lengths(lengths, 1000)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 1000 for b in bins)
    assert len(bins) == 4  # 3815 tokens need at least 4 blocks of 1000
    assert pack_lengths(lengths, 1000) == bins  # deterministic
    with pytest.raises(ValueError, match="example 9 has 1000 tokens"):
        pack_lengths(lengths, 999)


def test_packed_block_matches_separate_sequences(tiny_model_dir, apps_frame):
    """Attention boundaries: each example's logits inside a packed block (with padding after
    it) equal its logits when run alone, so examples never see each other."""
    loaded = load_model_and_tokenizer(tiny_model_dir, dtype="float32", device="cpu")
    model, tok = loaded.model, loaded.tokenizer
    model.config.use_cache = False  # as the Trainer runs it
    train, _, _ = build_examples(apps_frame, tok, 640, seed=0, eval_fraction=0.0)
    examples = sorted(train, key=len)[:3]
    blocks = build_blocks(examples, max_length=1200, packing=True)
    assert len(blocks) == 1 and len(blocks[0]) == sum(len(e) for e in examples)
    batch = BlockCollator(tok.eos_token_id, pad_to=len(blocks[0]) + 7)([blocks[0]])
    assert int(batch["real_tokens"][0]) == len(blocks[0])
    with torch.no_grad():
        packed = model(**{k: v for k, v in model_inputs(batch).items() if k != "labels"}).logits
        offset = 0
        for ex in examples:  # a block keeps its examples' order
            alone = model(input_ids=torch.tensor([ex.input_ids])).logits[0]
            segment = packed[0, offset : offset + len(ex)]
            torch.testing.assert_close(segment, alone, atol=2e-4, rtol=1e-4)
            offset += len(ex)
    # Without position-id resets the second example would see the first: the test can fail.
    with torch.no_grad():
        leaky = model(input_ids=batch["input_ids"][:, : len(blocks[0])]).logits[0]
    second = examples[1]
    start = len(examples[0])
    alone = model(input_ids=torch.tensor([second.input_ids])).logits[0]
    assert not torch.allclose(leaky[start : start + len(second)], alone, atol=1e-3)
    # Labels: the first token of every example is not a target.
    labels = batch["labels"][0]
    assert labels[0] == IGNORE_INDEX and labels[len(examples[0])] == IGNORE_INDEX
    assert (labels[len(blocks[0]) :] == IGNORE_INDEX).all()


def test_history_frame_merges_train_and_eval_entries():
    logs = [
        {"loss": 5.0, "learning_rate": 1e-3, "epoch": 0.5, "step": 1, "num_input_tokens_seen": 100},
        {"loss": 4.0, "learning_rate": 1e-3, "epoch": 1.0, "step": 2, "num_input_tokens_seen": 200},
        {"eval_loss": 4.5, "epoch": 1.0, "step": 2, "num_input_tokens_seen": 200},
        {"train_runtime": 3.0, "train_loss": 4.5, "epoch": 1.0, "step": 2},
    ]
    frame = history_frame(logs)
    assert list(frame.columns) == list(HISTORY_COLUMNS)
    assert frame["step"].tolist() == [1, 2]
    assert frame["train_loss"].tolist() == [5.0, 4.0]  # the run's mean (4.5) is not a step
    assert pd.isna(frame["eval_loss"][0]) and frame["eval_loss"][1] == 4.5


def test_last_complete_checkpoint_skips_cut_off_saves(tmp_path):
    for step, complete in ((4, True), (8, True), (12, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (tmp_path / "checkpoint-16").mkdir()
    (tmp_path / "checkpoint-16" / "trainer_state.json").write_text("{not json")
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-8"
    assert last_complete_checkpoint(tmp_path / "missing") is None


# ------------------------------------------------------------------------------------------
# wandb


def test_wandb_online_without_key_fails_fast(tmp_path, apps_parquet, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    # The base does not exist: failing with WandbConfigError proves nothing was loaded first.
    job = make_job(
        tmp_path / "no-such-model", apps_parquet, tmp_path, wandb=WandbSettings("online")
    )
    start = time.monotonic()
    with pytest.raises(WandbConfigError, match="WANDB_API_KEY is not set"):
        launch(job)
    assert time.monotonic() - start < 5
    assert not (tmp_path / "work").exists()


def test_wandb_offline_writes_a_run_dir(tmp_path, tiny_model_dir, apps_parquet, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")  # belt and braces: conftest sets disabled
    job = make_job(
        tiny_model_dir, apps_parquet, tmp_path, max_steps=2, wandb=WandbSettings("offline")
    )
    launch(job)
    runs = list((tmp_path / "work" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("*.wandb")), "the offline run holds its event log"


# ------------------------------------------------------------------------------------------
# Training runs


def test_full_finetune_lowers_the_loss(tmp_path, tiny_model_dir, apps_parquet):
    job = make_job(tiny_model_dir, apps_parquet, tmp_path, max_steps=12)
    result = launch(job)
    history = pd.read_parquet(job.history)
    train = history.dropna(subset=["train_loss"])
    assert result.global_step == 12 and train["step"].max() == 12
    first, last = train["train_loss"].iloc[0], train["train_loss"].tail(3).mean()
    assert last < first - 0.3, (first, last)
    assert history["eval_loss"].notna().any()
    assert history["tokens_seen"].is_monotonic_increasing
    assert history["wall_time_s"].is_monotonic_increasing
    # tokens seen = the real (non-padding) tokens of the blocks trained on.
    seen = json.loads((tmp_path / "work" / "ranks" / "rank0.json").read_text())["block_ids"]
    assert len(seen) == 24  # 12 steps x batch 2
    tok = load_tokenizer(tiny_model_dir)
    train, _, _ = build_examples(pd.read_parquet(apps_parquet), tok, 640, 0, 0.25)
    blocks = build_blocks(train, 640, packing=True)
    assert history["tokens_seen"].iloc[-1] == sum(len(blocks[i]) for i in seen)
    # A loadable model folder whose weights moved; checkpoints were cleaned up.
    loaded = load_model_and_tokenizer(job.model_dir, dtype="float32", device="cpu")
    base = load_model_and_tokenizer(tiny_model_dir, dtype="float32", device="cpu")
    w, w0 = loaded.model.state_dict(), base.model.state_dict()
    assert not torch.equal(w["model.embed_tokens.weight"], w0["model.embed_tokens.weight"])
    assert loaded.model.config.use_cache is True
    info = json.loads((Path(job.model_dir) / "finetune.json").read_text())
    assert info["result"]["global_step"] == 12 and info["base"] == str(tiny_model_dir)
    assert not job.checkpoint_dir.exists()


class _RecordTrainable(TrainerCallback):
    """Records which parameters require grad when training starts."""

    def __init__(self):
        self.names: list[str] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]


def test_lora_trains_only_adapters_and_merges(tmp_path, tiny_llama_dir, apps_parquet):
    job = make_job(
        tiny_llama_dir,
        apps_parquet,
        tmp_path,
        method="lora",
        lr=2e-2,
        max_steps=6,
        lora={"r": 4, "alpha": 8, "dropout": 0.0},
        gradient_checkpointing=True,  # with frozen embeddings: needs input grads enabled
    )
    recorder = _RecordTrainable()
    launch(job, callbacks=[recorder])
    assert recorder.names and all("lora_" in n for n in recorder.names)
    # e.g. base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight
    assert {n.split(".")[-4] for n in recorder.names} == set(LORA_TARGETS["llama"])
    merged = load_model_and_tokenizer(job.model_dir, dtype="float32", device="cpu").model
    base = load_model_and_tokenizer(tiny_llama_dir, dtype="float32", device="cpu").model
    w, w0 = merged.state_dict(), base.state_dict()
    assert set(w) == set(w0), "merged folder is a plain model (no adapter weights)"
    changed = {k for k in w if not torch.equal(w[k], w0[k])}
    assert changed and all(
        any(
            t in k
            for t in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
        )
        for k in changed
    ), sorted(changed)
    assert "model.embed_tokens.weight" not in changed and "lm_head.weight" not in changed


def test_two_process_cpu_run_shards_the_data(tmp_path, tiny_model_dir, apps_parquet):
    # 12 unpacked examples, 2 ranks x batch 2 x 3 steps = one epoch: shards are disjoint.
    job = make_job(
        tiny_model_dir,
        apps_parquet,
        tmp_path,
        nproc=2,
        packing=False,
        eval_fraction=0.0,
        max_steps=3,
        save_steps=100,
    )
    result = launch(job)
    assert result.world_size == 2 and result.global_step == 3
    ranks = [
        json.loads((tmp_path / "work" / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)
    ]
    assert [r["world_size"] for r in ranks] == [2, 2]
    seen0, seen1 = set(ranks[0]["block_ids"]), set(ranks[1]["block_ids"])
    assert len(seen0) == len(seen1) == 6
    assert not seen0 & seen1 and seen0 | seen1 == set(range(12))
    assert Path(job.model_dir, "config.json").exists()


RUNNER = textwrap.dedent(
    """
    import json, sys, time
    from transformers import TrainerCallback
    from attribution.finetune.launch import launch
    from attribution.finetune.train import FinetuneJob

    class Slow(TrainerCallback):  # leave the test time to kill between checkpoints
        def on_step_end(self, args, state, control, **kwargs):
            time.sleep(0.4)

    job = FinetuneJob.from_dict(json.load(open(sys.argv[1])))
    launch(job, callbacks=[Slow()])
    """
)


def test_kill_and_resume_continues_from_checkpoint(tmp_path, tiny_model_dir, apps_parquet):
    job = make_job(tiny_model_dir, apps_parquet, tmp_path, max_steps=9, save_steps=3)
    (tmp_path / "job.json").write_text(json.dumps(job.to_dict()))
    (tmp_path / "runner.py").write_text(RUNNER)
    env = dict(os.environ, PYTHONPATH=str(REPO / "workflow_scripts"))
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "runner.py"), str(tmp_path / "job.json")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    try:
        while last_complete_checkpoint(job.checkpoint_dir) is None:
            assert proc.poll() is None, "training ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = last_complete_checkpoint(job.checkpoint_dir)
    step = int(killed_at.name.split("-")[1])
    assert step < 9 and not Path(job.model_dir, "config.json").exists()

    result = launch(job)  # the rerun, same job
    assert result.resumed_from == str(killed_at)
    assert result.global_step == 9  # the same step count as an uninterrupted run
    history = pd.read_parquet(job.history)
    assert history["step"].tolist() == list(range(1, 10))  # logs from before the kill kept
    assert history["wall_time_s"].is_monotonic_increasing


def test_changed_job_does_not_resume_foreign_checkpoints(tmp_path, tiny_model_dir, apps_parquet):
    job = make_job(tiny_model_dir, apps_parquet, tmp_path, max_steps=2, save_steps=1)
    fake = job.checkpoint_dir / "checkpoint-1"
    fake.mkdir(parents=True)
    (fake / "trainer_state.json").write_text("{}")  # written by some other job setting
    result = launch(job)
    assert result.resumed_from is None and result.global_step == 2


# ------------------------------------------------------------------------------------------
# Exact resume: what a checkpoint depends on, seeds, the final checkpoint

KILL_AFTER_TRAINING = textwrap.dedent(
    """
    import json, os, signal, sys
    from transformers import TrainerCallback
    from attribution.finetune.launch import launch
    from attribution.finetune.train import FinetuneJob

    class Die(TrainerCallback):  # killed after the final checkpoint, before eval and save
        def on_train_end(self, args, state, control, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)

    launch(FinetuneJob.from_dict(json.load(open(sys.argv[1]))), callbacks=[Die()])
    """
)


def weights(folder) -> dict[str, torch.Tensor]:
    return load_model_and_tokenizer(folder, dtype="float32", device="cpu").model.state_dict()


def assert_same_weights(a, b) -> None:
    wa, wb = weights(a), weights(b)
    assert set(wa) == set(wb)
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, different


def test_kill_after_the_final_checkpoint_trains_no_more(tmp_path, tiny_model_dir, apps_parquet):
    """max_steps ends mid-epoch; the job dies after its last checkpoint (during the final
    evaluation or save). The rerun loads that checkpoint and trains nothing more: the same
    step count, weights and history as an uninterrupted run."""
    settings = dict(max_steps=6, save_steps=3, eval_fraction=0.25)
    reference = make_job(tiny_model_dir, apps_parquet, tmp_path / "ref", **settings)
    ref_result = launch(reference)
    steps_per_epoch = -(-ref_result.train_blocks // 2)  # batch 2, one process
    assert 6 % steps_per_epoch != 0, "the test needs max_steps to end mid-epoch"

    job = make_job(tiny_model_dir, apps_parquet, tmp_path / "run", **settings)
    (tmp_path / "job.json").write_text(json.dumps(job.to_dict()))
    (tmp_path / "runner.py").write_text(KILL_AFTER_TRAINING)
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "runner.py"), str(tmp_path / "job.json")],
        env=dict(os.environ, PYTHONPATH=str(REPO / "workflow_scripts")),
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert last_complete_checkpoint(job.checkpoint_dir).name == "checkpoint-6"
    assert not Path(job.model_dir, "config.json").exists()

    result = launch(job)
    assert result.resumed_from == str(job.checkpoint_dir / "checkpoint-6")
    assert result.global_step == ref_result.global_step == 6  # not 7
    assert_same_weights(job.model_dir, reference.model_dir)
    history, ref_history = pd.read_parquet(job.history), pd.read_parquet(reference.history)
    pd.testing.assert_frame_equal(
        history.drop(columns="wall_time_s"), ref_history.drop(columns="wall_time_s")
    )
    assert result.final_eval_loss == pytest.approx(ref_result.final_eval_loss, rel=1e-6)


def test_resumed_run_equals_an_uninterrupted_one(tmp_path, tiny_model_dir, apps_parquet):
    """A stop at a mid-run checkpoint, then a rerun: the final weights equal an uninterrupted
    run's (RNG, optimizer, scheduler and data position all come back)."""
    settings = dict(max_steps=6, save_steps=3)
    reference = make_job(tiny_model_dir, apps_parquet, tmp_path / "ref", **settings)
    launch(reference)

    class StopAt3(TrainerCallback):  # as if killed right after checkpoint-3
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 3:
                control.should_training_stop = True

    job = make_job(
        tiny_model_dir, apps_parquet, tmp_path / "run", keep_checkpoints=True, **settings
    )
    launch(job, callbacks=[StopAt3()])
    shutil.rmtree(job.model_dir)  # what Snakemake does with an incomplete output
    result = launch(job)
    assert result.resumed_from == str(job.checkpoint_dir / "checkpoint-3")
    assert result.global_step == 6
    assert_same_weights(job.model_dir, reference.model_dir)


def test_fingerprint_follows_base_content_data_and_settings(tmp_path, tiny_model_dir, apps_parquet):
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    data = tmp_path / "apps.parquet"
    shutil.copy(apps_parquet, data)
    job = make_job(base, data, tmp_path / "out")
    before = job_fingerprint(job)
    for path in (*base.iterdir(), data):  # a touch or a copy keeps the content
        path.write_bytes(path.read_bytes())
    assert job_fingerprint(job) == before
    changed = {
        "lr": replace(job, spec=replace(job.spec, lr=1e-3)),
        "lora": replace(job, spec=replace(job.spec, lora=replace(job.spec.lora, r=8))),
        "code": replace(job, code="other"),
        "nproc": replace(job, nproc=2),
    }
    for what, other in changed.items():
        assert job_fingerprint(other) != before, what
    frame = pd.read_parquet(data)
    frame.iloc[:-1].to_parquet(data, index=False)
    assert job_fingerprint(job) != before, "data content"
    shutil.copy(apps_parquet, data)
    assert job_fingerprint(job) == before
    tensors = load_file(base / "model.safetensors")
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, base / "model.safetensors", metadata={"format": "pt"})
    assert job_fingerprint(job) != before, "base weights"


def test_rebuilt_base_at_the_same_path_is_not_resumed(tmp_path, tiny_model_dir, apps_parquet):
    base = tmp_path / "models" / "base"
    shutil.copytree(tiny_model_dir, base)
    job = make_job(base, apps_parquet, tmp_path / "out", max_steps=2, save_steps=1)
    job = replace(job, spec=replace(job.spec, keep_checkpoints=True))
    launch(job)
    first = weights(job.model_dir)
    # The base is rebuilt in place: same path, same config, other weights.
    model = load_model_and_tokenizer(base, dtype="float32", device="cpu")
    with torch.no_grad():
        for param in model.model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    from attribution.models.saving import save_model_folder

    save_model_folder(model.model, model.tokenizer, base, {})
    shutil.rmtree(job.model_dir)
    result = launch(job)
    assert result.resumed_from is None and result.global_step == 2
    second = weights(job.model_dir)
    assert not torch.equal(first["model.embed_tokens.weight"], second["model.embed_tokens.weight"])


def test_two_lora_runs_with_one_seed_give_identical_weights(tmp_path, tiny_llama_dir, apps_parquet):
    settings = dict(method="lora", lr=2e-2, max_steps=2, lora={"r": 4, "alpha": 8, "dropout": 0.1})
    runs = [
        make_job(tiny_llama_dir, apps_parquet, tmp_path / name, seed=seed, **settings)
        for name, seed in (("a", 3), ("b", 3), ("c", 4))
    ]
    for i, job in enumerate(runs):
        torch.manual_seed(1000 + i)  # whatever the process's RNG held before must not matter
        launch(job)
    assert_same_weights(runs[0].model_dir, runs[1].model_dir)
    a, c = weights(runs[0].model_dir), weights(runs[2].model_dir)
    assert any(not torch.equal(a[k], c[k]) for k in a), "the seed must matter"
