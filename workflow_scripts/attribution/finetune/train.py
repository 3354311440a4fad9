"""One fine-tuning run with the Hugging Face Trainer; the same code runs as 1 or N processes.

- Model: loaded through :func:`attribution.models.loading.load_model_and_tokenizer`. Full
  fine-tuning keeps fp32 master weights; LoRA keeps the frozen base in the GPU's native half
  precision (fp32 on the CPU) and the adapters in fp32 (peft's default). Mixed precision
  (:func:`training_precision`): bf16 autocast where the GPU has bf16 natively, else fp16 with
  loss scaling, none on the CPU.
- Seeds: ``spec.seed`` is set before the model is loaded and again right before peft adds the
  adapters, so two runs with one seed give the same weights.
- LoRA (Hu et al. 2021) through peft: after training the adapters are merged into the base
  weights (``merge_and_unload``) and the result is saved with ``save_pretrained`` as an
  ordinary model folder: the one way fine-tuned models are benchmarked (no adapter loading).
- Checkpoints: ``<work_dir>/checkpoints/checkpoint-N`` every ``save_steps``; a rerun resumes
  from the last complete one (its trainer_state.json, written last, exists and parses) when the
  job fingerprint (:func:`job_fingerprint`: base content, data content, every setting, code,
  process count, precision) is unchanged, and starts over otherwise. A checkpoint of the final
  step is not trained on again: its weights are loaded and the run goes on to the final
  evaluation and save. Checkpoints are deleted after the final save unless
  ``keep_checkpoints``.
- The final model is written atomically: saved into a scratch folder next to the target, then
  moved in file by file with config.json last (a folder with config.json is complete).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import Trainer, TrainerCallback, TrainerState, TrainingArguments, set_seed

from attribution import provenance
from attribution.finetune.dataset import build_examples
from attribution.finetune.history import WallTimeCallback, history_frame
from attribution.finetune.packing import BlockCollator, BlockDataset, build_blocks, model_inputs
from attribution.finetune.spec import FinetuneSpec, lora_target_modules
from attribution.finetune.tracking import WandbSettings, check_wandb, finish_run, start_run
from attribution.io import write_json, write_parquet
from attribution.models.fingerprint import folder_fingerprint
from attribution.models.loading import (
    dtype_name,
    half_dtype,
    load_model_and_tokenizer,
    native_bf16,
    resolve_source,
)
from attribution.models.saving import save_model_folder

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"


@dataclass(frozen=True)
class FinetuneJob:
    """Everything one run needs: what to train, from where, and where to write."""

    name: str
    spec: FinetuneSpec
    base: str  # a local model folder or a hub id
    data: str  # normalized APPS parquet (data/raw/<dataset>.parquet)
    model_dir: str  # final model folder (models/<name>)
    history: str  # history.parquet
    work_dir: str  # checkpoints, fingerprint, per-rank records, wandb run dir
    base_revision: str | None = None
    wandb: WandbSettings = WandbSettings()
    code: str = ""  # library content hash: a code change invalidates checkpoints
    nproc: int = 1
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["spec"] = self.spec.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneJob:
        data = dict(data)
        data["spec"] = FinetuneSpec.from_config(data["spec"])
        data["wandb"] = WandbSettings(**data["wandb"])
        return cls(**data)

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.work_dir) / "checkpoints"


@dataclass(frozen=True)
class FinetuneResult:
    global_step: int
    resumed_from: str | None
    world_size: int
    dataset: dict[str, int]
    train_blocks: int
    eval_blocks: int
    final_eval_loss: float | None


def job_fingerprint(job: FinetuneJob) -> str:
    """What a checkpoint depends on; a checkpoint of another fingerprint is never resumed: the
    base model's content (a base rebuilt at the same path is another base), the training
    data's content, every setting, the code, the process count and the precision."""
    digest = hashlib.sha256()
    with open(job.data, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    key = {
        "spec": job.spec.to_dict(),
        "base": job.base,
        "base_revision": job.base_revision,
        "base_content": folder_fingerprint(resolve_source(job.base, job.base_revision)),
        "data_sha256": digest.hexdigest(),
        "code": job.code,
        "nproc": job.nproc,
        "precision": training_precision(job.spec.method),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def prepare_work_dir(job: FinetuneJob) -> bool:
    """Keep the checkpoints when they belong to this job, else clear them. Returns whether
    earlier checkpoints were kept. Runs once, before any training process starts."""
    work = Path(job.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    stamp = work / "fingerprint.json"
    fingerprint = job_fingerprint(job)
    previous = json.loads(stamp.read_text()).get("fingerprint") if stamp.exists() else None
    if previous != fingerprint and job.checkpoint_dir.exists():
        log.info("checkpoints in %s belong to another job setting: starting over", work)
        shutil.rmtree(job.checkpoint_dir)
    # Per-run records: a stale one must never be read as this run's.
    shutil.rmtree(work / "ranks", ignore_errors=True)
    (work / "result.json").unlink(missing_ok=True)
    write_json({"fingerprint": fingerprint, "job": job.to_dict()}, stamp)
    return previous == fingerprint


def stamped_fingerprint(job: FinetuneJob) -> str:
    """The fingerprint prepare_work_dir wrote (hashing a big base once is enough)."""
    stamp = Path(job.work_dir) / "fingerprint.json"
    if stamp.exists():
        return str(json.loads(stamp.read_text())["fingerprint"])
    return job_fingerprint(job)


def last_complete_checkpoint(folder: str | Path) -> Path | None:
    """The highest-step ``checkpoint-N`` whose trainer_state.json exists and parses (the
    Trainer writes it last, so a folder without it was cut off while saving)."""
    root = Path(folder)
    if not root.is_dir():
        return None
    found = []
    for path in root.iterdir():
        if path.is_dir() and path.name.startswith(CHECKPOINT_PREFIX):
            suffix = path.name[len(CHECKPOINT_PREFIX) :]
            if suffix.isdigit():
                found.append((int(suffix), path))
    for _, path in sorted(found, reverse=True):
        try:
            json.loads((path / "trainer_state.json").read_text())
        except (OSError, json.JSONDecodeError):
            log.warning("ignoring incomplete checkpoint %s", path)
            continue
        return path
    return None


def checkpoint_is_final(checkpoint: str | Path) -> bool:
    """Whether a complete checkpoint holds the last optimizer step of its run (its
    trainer_state.json has global_step >= max_steps, the run's planned total)."""
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    return int(state.get("max_steps") or 0) > 0 and state["global_step"] >= state["max_steps"]


class FinetuneTrainer(Trainer):
    """Trainer over packed blocks: counts real (non-padding) tokens seen, records which blocks
    this process trained on, and strips those bookkeeping keys before the forward pass."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.seen_block_ids: list[int] = []

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        if model.training and "block_ids" in inputs:
            self.seen_block_ids.extend(int(i) for i in inputs["block_ids"].tolist())
        return super().compute_loss(
            model,
            model_inputs(inputs),
            return_outputs=return_outputs,
            num_items_in_batch=num_items_in_batch,
        )

    # transformers 5.x hook (Trainer._track_num_input_tokens): its "non_padding" mode counts
    # tokens != pad_token_id, wrong when padding reuses EOS, so count the collator's tally.
    def _track_num_input_tokens(self, inputs: dict[str, Any]) -> None:
        tokens = inputs["real_tokens"].sum().to(self.args.device)
        self.state.num_input_tokens_seen += int(self.accelerator.gather(tokens).sum().item())


def _distributed() -> tuple[int, int, int]:
    """(rank, local rank, world size) from the torchrun environment."""
    return (
        int(os.environ.get("RANK", "0")),
        int(os.environ.get("LOCAL_RANK", "0")),
        int(os.environ.get("WORLD_SIZE", "1")),
    )


def training_precision(method: str) -> tuple[str, bool, bool]:
    """(load dtype, bf16 autocast, fp16 autocast) for this machine: bf16 only where the GPU
    has it natively (:func:`~attribution.models.loading.native_bf16`), else fp16 autocast,
    for which the Trainer scales the loss (GradScaler); fp32 on the CPU. Full fine-tuning
    keeps fp32 master weights; LoRA loads the frozen base in the same half precision."""
    if not torch.cuda.is_available():
        return "float32", False, False
    bf16 = native_bf16()
    return ("float32" if method == "full" else dtype_name(half_dtype())), bf16, not bf16


def _apply_lora(model: Any, spec: FinetuneSpec) -> Any:
    from peft import LoraConfig, get_peft_model

    targets = lora_target_modules(spec.lora, model.config.model_type)
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=spec.lora.r,
        lora_alpha=spec.lora.alpha,
        lora_dropout=spec.lora.dropout,
        target_modules=targets,
        bias="none",
    )
    peft_model = get_peft_model(model, config)
    if spec.gradient_checkpointing:
        # Frozen embeddings give no grad to checkpointed blocks without this.
        peft_model.enable_input_require_grads()
    return peft_model


def run_finetune(job: FinetuneJob, callbacks: Sequence[TrainerCallback] = ()) -> FinetuneResult:
    """Train (resuming when a complete checkpoint of this job exists), then on the main
    process save the model folder, history.parquet and ``<work_dir>/result.json``.
    Every process writes ``<work_dir>/ranks/rank<R>.json`` (world size, blocks trained on)."""
    spec = job.spec
    check_wandb(job.wandb)
    rank, local_rank, world_size = _distributed()
    if job.threads:
        torch.set_num_threads(max(1, job.threads // max(1, world_size)))
    device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    load_dtype, bf16, fp16 = training_precision(spec.method)
    set_seed(spec.seed)  # before anything draws random numbers (weights a checkpoint lacks)
    loaded = load_model_and_tokenizer(job.base, job.base_revision, dtype=load_dtype, device=device)
    model, tokenizer = loaded.model, loaded.tokenizer
    model.train()

    frame = pd.read_parquet(job.data)
    train_ex, eval_ex, stats = build_examples(
        frame, tokenizer, spec.max_length, spec.seed, spec.eval_fraction, spec.max_problems
    )
    train_blocks = build_blocks(train_ex, spec.max_length, spec.packing)
    eval_blocks = build_blocks(eval_ex, spec.max_length, spec.packing)
    if rank == 0:
        log.info(
            "%s: %s; %d train blocks, %d eval blocks (packing=%s), world size %d",
            job.name,
            stats,
            len(train_blocks),
            len(eval_blocks),
            spec.packing,
            world_size,
        )
    if spec.method == "lora":
        # The adapters' initial weights come from the global RNG: seed it right here, so two
        # runs with one seed start from the same adapters (the Trainer seeds only later).
        set_seed(spec.seed)
        model = _apply_lora(model, spec)
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )

    args = TrainingArguments(
        output_dir=str(job.checkpoint_dir),
        per_device_train_batch_size=spec.batch_size,
        per_device_eval_batch_size=spec.batch_size,
        gradient_accumulation_steps=spec.grad_accum,
        learning_rate=spec.lr,
        lr_scheduler_type=spec.lr_scheduler,
        warmup_steps=spec.warmup,
        weight_decay=spec.weight_decay,
        num_train_epochs=spec.num_epochs,
        max_steps=spec.max_steps if spec.max_steps is not None else -1,
        logging_steps=spec.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=spec.save_steps,
        save_total_limit=2,
        eval_strategy="steps" if eval_blocks else "no",
        eval_steps=spec.save_steps,
        prediction_loss_only=True,
        seed=spec.seed,
        data_seed=spec.seed,
        bf16=bf16,
        fp16=fp16,
        use_cpu=not torch.cuda.is_available(),
        activation_checkpointing=spec.gradient_checkpointing,
        report_to=["wandb"] if job.wandb.enabled else "none",
        run_name=job.name,
        remove_unused_columns=False,
        include_num_input_tokens_seen="all",  # counted by FinetuneTrainer (real tokens)
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        disable_tqdm=False,
    )
    trainer = FinetuneTrainer(
        model=model,
        args=args,
        train_dataset=BlockDataset(train_blocks),
        eval_dataset=BlockDataset(eval_blocks) if eval_blocks else None,
        data_collator=BlockCollator(pad_id),
        callbacks=[WallTimeCallback(), *callbacks],
    )
    resume = last_complete_checkpoint(job.checkpoint_dir)
    finished = resume is not None and checkpoint_is_final(resume)
    if resume is not None and rank == 0:
        log.info("%s %s", "training finished at" if finished else "resuming from", resume)

    run = None
    if rank == 0:
        run = start_run(
            job.wandb,
            Path(job.work_dir),
            name=job.name,
            run_id=f"{job.name}-{stamped_fingerprint(job)}"[:64],
            config={"spec": spec.to_dict(), "base": job.base, "base_revision": job.base_revision},
        )
    try:
        if finished:
            # Killed after its last checkpoint (during the final evaluation or save): training
            # again would run one step past max_steps when max_steps ends mid-epoch.
            trainer._load_from_checkpoint(str(resume))
            trainer.state = TrainerState.load_from_json(str(resume / "trainer_state.json"))
        else:
            trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        final_eval = trainer.evaluate() if eval_blocks else {}
    finally:
        finish_run(run)

    ranks_dir = Path(job.work_dir) / "ranks"
    write_json(
        {"rank": rank, "world_size": world_size, "block_ids": trainer.seen_block_ids},
        ranks_dir / f"rank{rank}.json",
    )
    result = FinetuneResult(
        global_step=trainer.state.global_step,
        resumed_from=str(resume) if resume else None,
        world_size=world_size,
        dataset=stats.to_dict(),
        train_blocks=len(train_blocks),
        eval_blocks=len(eval_blocks),
        final_eval_loss=final_eval.get("eval_loss"),
    )
    if trainer.is_world_process_zero():
        final = trainer.model
        if spec.method == "lora":
            final = final.merge_and_unload()
        final.config.use_cache = True  # the Trainer turned it off for training
        made = provenance.record(
            code=job.code,
            backend="trainer",
            device=device,
            dtype=load_dtype + ("+bf16-amp" if bf16 else "+fp16-amp" if fp16 else ""),
            batch_size=spec.batch_size,
            libraries=("torch", "transformers", *(("peft",) if spec.method == "lora" else ())),
            gpu_count=world_size if torch.cuda.is_available() else 0,
        )
        info = {"name": job.name, "base": job.base, "base_revision": job.base_revision}
        info.update(spec=spec.to_dict(), result=asdict(result), provenance=made)
        # History first: the model folder's config.json is the job's completion marker.
        history = provenance.with_columns(history_frame(trainer.state.log_history), made)
        write_parquet(history, job.history)
        save_model_folder(final, tokenizer, job.model_dir, {"finetune.json": info})
        write_json(asdict(result), Path(job.work_dir) / "result.json")
        if not spec.keep_checkpoints:
            shutil.rmtree(job.checkpoint_dir, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return result
