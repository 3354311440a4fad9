"""Run one model on one benchmark's prompts: requests, seeds, shards, resume, final table.

The work is split into a fixed plan of shards (prompts sorted by length, then cut into chunks)
that depends only on the job's inputs and settings. Each finished shard is written atomically
to ``.{output}.shards/part-NNNNN.parquet``; a rerun after a kill (even SIGKILL) keeps the
shards it finds and generates only the missing ones, with the same requests in the same
batches, so the final file equals an uninterrupted run's. A ``plan.json`` fingerprint next to
the shards discards them when anything they depend on changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from attribution.generation.base import Backend, GenerationRequest, GenerationSettings
from attribution.generation.chat import prompt_text
from attribution.generation.postprocess import completion_from_raw
from attribution.io import write_json, write_parquet
from attribution.provenance import with_columns

log = logging.getLogger(__name__)

GENERATION_COLUMNS = (
    "task_id",
    "sample",
    "prompt_text",
    "raw_output",
    "completion",
    "prompt_tokens",
    "completion_tokens",
    "finish_reason",
    "seed",
    "stop",
    "chat",
    "temperature",
    "top_p",
    "max_new_tokens",
)
SHARD_COLUMNS = ("key", "raw_output", "prompt_tokens", "completion_tokens", "finish_reason")


@dataclass(frozen=True)
class GenerationJob:
    """Everything one generate job's output depends on, apart from the model and prompts."""

    n_samples: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    batch_size: int = 8
    seed: int = 1234
    chat: bool = False
    stop: tuple[str, ...] | None = None  # overrides the completion-style stops of the prompts
    max_tasks: int | None = None
    shard_size: int | None = None  # requests per shard; default 4 batches

    @classmethod
    def from_params(
        cls, benchmark: dict[str, Any], seed: int, chat: bool, **extra: Any
    ) -> GenerationJob:
        """From a config ``benchmarks.{name}`` entry (unknown keys such as ``ks`` ignored)."""
        stop = benchmark.get("stop")
        return cls(
            n_samples=int(benchmark.get("n_samples", cls.n_samples)),
            temperature=float(benchmark.get("temperature", cls.temperature)),
            top_p=float(benchmark.get("top_p", cls.top_p)),
            max_new_tokens=int(benchmark.get("max_new_tokens", cls.max_new_tokens)),
            batch_size=int(benchmark.get("batch_size", cls.batch_size)),
            seed=int(seed),
            chat=bool(chat),
            stop=tuple(stop) if stop else None,
            max_tasks=benchmark.get("max_tasks"),
            **extra,
        )

    @property
    def settings(self) -> GenerationSettings:
        return GenerationSettings(
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
            add_special_tokens=not self.chat,
        )


@dataclass(frozen=True)
class _Work:
    key: str  # "{task_id}\x00{sample}" of the first sample that needs this generation
    request: GenerationRequest
    copies: list[tuple[str, int]] = field(default_factory=list)


def sample_seed(seed: int, task_id: str, sample: int) -> int:
    """The seed of one sample: a function of the job seed, the task and the sample index only,
    so it does not change with task order, batch size or resume."""
    digest = hashlib.sha256(f"{seed}\x00{task_id}\x00{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


def build_requests(
    prompts: pd.DataFrame, tokenizer: Any, job: GenerationJob
) -> tuple[pd.DataFrame, list[_Work]]:
    """The rows of the final table (without outputs) and the distinct generations to run.

    Greedy samples of one task are identical, so a greedy task is generated once and copied.
    """
    missing = {"task_id", "prompt", "instruct_prompt", "response_prefix", "stop"} - set(prompts)
    if missing:
        raise ValueError(f"prompts frame lacks column(s) {sorted(missing)}")
    frame = prompts if job.max_tasks is None else prompts.head(int(job.max_tasks))
    dupes = frame["task_id"][frame["task_id"].duplicated()].tolist()
    if dupes:
        raise ValueError(f"prompts: duplicate task_id(s) {dupes[:5]}")
    rows, work = [], []
    for rec in frame.to_dict(orient="records"):
        text = prompt_text(rec, tokenizer, job.chat)
        if job.chat:
            stop = tuple(rec.get("instruct_stop") if rec.get("instruct_stop") is not None else ())
        else:
            stop = job.stop if job.stop is not None else tuple(rec["stop"])
        first: _Work | None = None
        for sample in range(job.n_samples):
            seed = sample_seed(job.seed, str(rec["task_id"]), sample)
            key = f"{rec['task_id']}\x00{sample}"
            rows.append(
                {
                    "task_id": rec["task_id"],
                    "sample": sample,
                    "prompt_text": text,
                    "seed": seed,
                    "stop": stop,
                    "key": key,
                }
            )
            if first is not None and job.temperature == 0:
                first.copies.append((key, sample))
                continue
            first = _Work(key, GenerationRequest(text, seed, stop))
            work.append(first)
    return pd.DataFrame(rows), work


def plan_shards(work: list[_Work], shard_size: int) -> list[list[_Work]]:
    """Longest prompts first (by characters, a proxy for tokens), cut into fixed chunks."""
    order = sorted(work, key=lambda w: -len(w.request.prompt_text))
    return [order[i : i + shard_size] for i in range(0, len(order), shard_size)]


def shard_dir(out_path: str | Path) -> Path:
    out = Path(out_path)
    return out.parent / f".{out.name}.shards"


def run_generation(
    backend: Backend,
    prompts: pd.DataFrame,
    job: GenerationJob,
    out_path: str | Path,
    fingerprint: dict[str, Any] | None = None,
    on_shard: Callable[[int, int], None] | None = None,
    progress: bool = True,
    provenance: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Generate every (task, sample) of ``prompts`` and write ``out_path`` (Parquet, columns
    GENERATION_COLUMNS, then the ``provenance`` record's columns when given). ``fingerprint``:
    what identifies the model and code (shards made with another one are discarded).
    ``on_shard(done, total)`` is called after each shard."""
    from tqdm import tqdm

    table, work = build_requests(prompts, backend.tokenizer, job)
    shard_size = job.shard_size or 4 * job.batch_size
    shards = plan_shards(work, shard_size)
    folder = shard_dir(out_path)
    _prepare_shards(folder, job, fingerprint or {}, shards)

    done: dict[str, dict[str, Any]] = {}
    todo = []
    for i, shard in enumerate(shards):
        rows = _read_shard(folder / f"part-{i:05d}.parquet", shard)
        if rows is None:
            todo.append(i)
        else:
            done.update(rows)
    if len(todo) < len(shards):
        log.info("resuming: %d of %d shards already done", len(shards) - len(todo), len(shards))
    bar = tqdm(
        total=len(work),
        initial=len(work) - sum(len(shards[i]) for i in todo),
        disable=not progress,
        unit="gen",
    )
    for count, i in enumerate(todo, start=1):
        results = backend.generate([w.request for w in shards[i]], job.settings)
        part = pd.DataFrame(
            [{"key": w.key, **asdict(r)} for w, r in zip(shards[i], results, strict=True)],
            columns=list(SHARD_COLUMNS),
        )
        write_parquet(part, folder / f"part-{i:05d}.parquet")
        done.update(_rows_by_key(part))
        bar.update(len(shards[i]))
        if on_shard is not None:
            on_shard(len(shards) - len(todo) + count, len(shards))
    bar.close()

    final = _assemble(table, work, done, job)
    if provenance is not None:
        final = with_columns(final, provenance)
    write_parquet(final, out_path)
    shutil.rmtree(folder, ignore_errors=True)
    return pd.read_parquet(out_path)  # exactly what the file holds (list columns as read back)


def _prepare_shards(
    folder: Path, job: GenerationJob, fingerprint: dict[str, Any], shards: list[list[_Work]]
) -> None:
    plan = {
        "job": asdict(job),
        "fingerprint": fingerprint,
        "shards": hashlib.sha256(
            json.dumps(
                [[(w.key, w.request.prompt_text, w.request.seed) for w in s] for s in shards]
            ).encode()
        ).hexdigest(),
    }
    plan = json.loads(json.dumps(plan, default=str))
    plan_file = folder / "plan.json"
    if folder.is_dir():
        try:
            same = json.loads(plan_file.read_text()) == plan
        except (OSError, ValueError):
            same = False
        if not same:
            log.info("discarding shards in %s: made with other settings, model or code", folder)
            shutil.rmtree(folder)
    if not folder.is_dir():
        folder.mkdir(parents=True)
        write_json(plan, plan_file)


def _read_shard(path: Path, shard: list[_Work]) -> dict[str, dict[str, Any]] | None:
    """The rows of a finished shard, or None when it is missing, unreadable or incomplete."""
    if not path.is_file():
        return None
    try:
        part = pd.read_parquet(path)
    except Exception:  # noqa: BLE001 - a damaged shard is simply generated again
        log.warning("ignoring unreadable shard %s", path)
        return None
    if list(part["key"]) != [w.key for w in shard]:
        log.warning("ignoring shard %s: it does not hold the planned requests", path)
        return None
    return _rows_by_key(part)


def _rows_by_key(part: pd.DataFrame) -> dict[str, dict[str, Any]]:
    return {rec.pop("key"): rec for rec in part.to_dict(orient="records")}


def _assemble(
    table: pd.DataFrame, work: list[_Work], done: dict[str, dict[str, Any]], job: GenerationJob
) -> pd.DataFrame:
    source = {w.key: w.key for w in work}
    for w in work:
        for key, _ in w.copies:
            source[key] = w.key
    out = table.copy()
    results = [done[source[key]] for key in out["key"]]
    for column in ("raw_output", "prompt_tokens", "completion_tokens", "finish_reason"):
        out[column] = [r[column] for r in results]
    out["stop"] = [list(s) for s in out["stop"]]
    out["completion"] = [
        completion_from_raw(raw, stop)
        for raw, stop in zip(out["raw_output"], out["stop"], strict=True)
    ]
    out["chat"] = job.chat
    out["temperature"] = job.temperature
    out["top_p"] = job.top_p
    out["max_new_tokens"] = job.max_new_tokens
    out["sample"] = out["sample"].astype("int64")
    out["seed"] = out["seed"].astype("int64")
    for column in ("prompt_tokens", "completion_tokens"):
        out[column] = out[column].astype("int64")
    return out[list(GENERATION_COLUMNS)].reset_index(drop=True)
