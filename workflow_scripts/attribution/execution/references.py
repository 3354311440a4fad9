"""Reference outputs and timings: the expected values of checkers that run a trusted solution
(HumanEval+, as evalplus does: Liu et al. 2023, section 2) and the CPU time it took, which sets
the per-input time limits.

They are a file in the DAG, ``data/references/{benchmark}.parquet`` (rule ``references``), so
that Snakemake sees them and every execute job of a benchmark uses the same limits. One row per
task: ``task_id``, ``key`` (content hash of everything the outputs depend on; a row whose key
does not match the task is never used), ``recorded`` (inputs recorded from an original-format
``check`` function, or empty), ``expected`` (by suite) and ``cpu_s`` (a JSON object by suite),
``dataset_sha256`` and ``code``.

Values (``recorded``, ``expected``) are pickles of plain values (exact builtin types: tuples
stay tuples, sets stay sets, 5000-digit ints stay ints) read back only through the sandbox's
restricted unpickler (``decode_plain``), the one that already rebuilds values coming out of
untrusted programs: it admits no global but ``complex``, so a file someone else wrote cannot run
code when it is loaded (a pickle opcode can call only what ``find_class`` hands out). Every
execute job reads the file, and HumanEval+ v0.1.10's expected outputs are about 250 MB: this
reads them in 1.2 s of CPU, a tagged-JSON encoding of the same values in 2.7 s.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from attribution.execution.sandbox.values import decode_plain
from attribution.io import write_parquet

COLUMNS = ("task_id", "key", "recorded", "expected", "cpu_s", "dataset_sha256", "code")


class ReferenceError(RuntimeError):
    """Reference outputs are missing, stale or the trusted solution itself failed."""


@dataclass(frozen=True)
class Reference:
    """One task's reference: per suite, the expected values and the CPU seconds per input."""

    key: str
    recorded: list[Any] | None = None
    expected: Mapping[str, list[Any]] = field(default_factory=dict)
    cpu_s: Mapping[str, list[float]] = field(default_factory=dict)


ReferenceTable = dict[str, Reference]  # by task_id


def table_digest(table: Mapping[str, Reference], task_ids: list[str]) -> str:
    """What the verdicts of ``task_ids`` depend on in ``table``: keys and timings (the expected
    values follow from the key and the code)."""
    digest = hashlib.sha256()
    for tid in sorted(task_ids):
        ref = table.get(tid)
        item = None if ref is None else [ref.key, dict(sorted(ref.cpu_s.items()))]
        digest.update(json.dumps([tid, item]).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def write_references(
    table: Mapping[str, Reference], path: str | Path, dataset_sha256: str = "", code: str = ""
) -> Path:
    """Write ``table`` atomically as Parquet (module doc for the columns)."""
    rows = [
        {
            "task_id": tid,
            "key": ref.key,
            "recorded": b"" if ref.recorded is None else _pickle(ref.recorded),
            "expected": _pickle(dict(ref.expected)),
            "cpu_s": json.dumps(dict(ref.cpu_s)),
            "dataset_sha256": dataset_sha256,
            "code": code,
        }
        for tid, ref in table.items()
    ]
    # Values can be large (HumanEval/130's plus outputs are about 100 MB): no dictionary
    # encoding (it makes reading 7x slower), zstd (half the size of snappy, faster to read).
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return write_parquet(frame, path, compression="zstd", use_dictionary=False)


def _pickle(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _expected(value: Any) -> dict[str, list[Any]]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, list) for k, v in value.items()
    ):
        raise ValueError("expected outputs are not a mapping of suite -> list")
    return value


def read_references(path: str | Path) -> ReferenceTable:
    """Read a references file (``write_references``); a file in another format is an error
    that names it."""
    path = Path(path)
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file's name
        raise ReferenceError(f"{path}: not a readable references file ({exc})") from exc
    missing = set(COLUMNS) - set(frame.columns)
    if missing:
        raise ReferenceError(f"{path}: not a references file (no column(s) {sorted(missing)})")
    table: ReferenceTable = {}
    for row in frame.itertuples(index=False):
        try:
            table[str(row.task_id)] = Reference(
                key=str(row.key),
                recorded=decode_plain(row.recorded) if row.recorded else None,
                expected=_expected(decode_plain(row.expected)),
                cpu_s={s: [float(t) for t in v] for s, v in json.loads(row.cpu_s).items()},
            )
        except (ValueError, TypeError, KeyError, pickle.UnpicklingError, EOFError) as exc:
            raise ReferenceError(f"{path}: task {row.task_id}: damaged row ({exc})") from exc
    return table
