"""Reference outputs and timings: the expected values of checkers that run a trusted solution
(HumanEval+, as evalplus does: Liu et al. 2023, section 2) and the CPU time it took, which sets
the per-input time limits.

They are a file in the DAG, ``data/references/{benchmark}.parquet`` (rule ``references``), so
that Snakemake sees them and every execute job of a benchmark uses the same limits. One row per
task: ``task_id``, ``key`` (content hash of everything the outputs depend on; a row whose key
does not match the task is never used), ``recorded`` (inputs recorded from an original-format
``check`` function, or empty), ``expected`` and ``cpu_s`` (JSON objects by suite),
``dataset_sha256`` and ``code``.

Values are stored as tagged JSON (``encode_value``): lists as arrays, every other container as a
one-key object (``{"$tuple": [...]}``, ``{"$set": ...}``, ``{"$dict": [[k, v], ...]}``,
``{"$bytes": base64}``, ``{"$complex": [re, im]}``, ``{"$float": "nan"}``, ``{"$int": hex}``
for ints too long for JSON's decimal form), so that tuples stay
tuples and sets stay sets. Reading it back builds plain values only: unlike a pickle, a file
someone else wrote cannot run code when it is loaded.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from attribution.io import write_parquet

FORMAT_VERSION = 1
COLUMNS = ("task_id", "key", "recorded", "expected", "cpu_s", "dataset_sha256", "code")
_ATOMS = (type(None), bool, int, str)
_PLAIN = {type(None), bool, int, str, float}
_INT_BITS = 10_000  # about 3000 decimal digits; larger ints are stored in hex


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


def encode_value(value: Any) -> Any:
    """A plain Python value -> JSON-compatible data that keeps its exact type (module doc)."""
    t = type(value)
    if t is int and value.bit_length() > _INT_BITS:
        return {"$int": hex(value)}  # JSON's decimal form is capped at 4300 digits
    if t in _ATOMS:
        return value
    if t is float:
        return value if math.isfinite(value) else {"$float": repr(value)}
    if t is list:
        kinds = set(map(type, value))
        if kinds <= _PLAIN and (not kinds & {int, float} or all(map(_plain, value))):
            return value  # the common case (lists of numbers or strings): nothing to tag
        return [encode_value(v) for v in value]
    if t is tuple:
        return {"$tuple": [encode_value(v) for v in value]}
    if t is dict:
        return {"$dict": [[encode_value(k), encode_value(v)] for k, v in value.items()]}
    if t is set or t is frozenset:
        return {f"${t.__name__}": [encode_value(v) for v in value]}
    if t is bytes:
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if t is complex:
        return {"$complex": [encode_value(value.real), encode_value(value.imag)]}
    raise TypeError(f"cannot store a value of type {t.__module__}.{t.__qualname__}")


def _plain(value: Any) -> bool:
    """Stored as it is: no tag needed (finite floats, ints of a printable size)."""
    t = type(value)
    if t is float:
        return math.isfinite(value)
    return t is not int or value.bit_length() <= _INT_BITS


def decode_value(data: Any) -> Any:
    """Inverse of ``encode_value``; anything it does not know is an error, never code."""
    if isinstance(data, list):
        if set(map(type, data)) <= _PLAIN:
            return data
        return [decode_value(v) for v in data]
    if not isinstance(data, dict):
        return data
    if len(data) != 1:
        raise ValueError(f"not an encoded value: {str(data)[:80]}")
    ((tag, body),) = data.items()
    if tag == "$tuple":
        return tuple(decode_value(v) for v in body)
    if tag == "$dict":
        return {decode_value(k): decode_value(v) for k, v in body}
    if tag == "$set":
        return {decode_value(v) for v in body}
    if tag == "$frozenset":
        return frozenset(decode_value(v) for v in body)
    if tag == "$bytes":
        return base64.b64decode(body)
    if tag == "$complex":
        return complex(decode_value(body[0]), decode_value(body[1]))
    if tag == "$int":
        return int(body, 16)
    if tag == "$float" and body in ("nan", "inf", "-inf"):
        return float(body)
    raise ValueError(f"unknown value tag {tag!r}")


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
            "recorded": "" if ref.recorded is None else json.dumps(encode_value(ref.recorded)),
            "expected": json.dumps({s: encode_value(v) for s, v in ref.expected.items()}),
            "cpu_s": json.dumps(dict(ref.cpu_s)),
            "dataset_sha256": dataset_sha256,
            "code": code,
        }
        for tid, ref in table.items()
    ]
    # Values can be large (HumanEval/130's plus outputs are 124 MB of JSON): no dictionary
    # encoding (it makes reading 7x slower), zstd (half the size of snappy, faster to read).
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return write_parquet(frame, path, compression="zstd", use_dictionary=False)


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
                recorded=decode_value(json.loads(row.recorded)) if row.recorded else None,
                expected={s: decode_value(v) for s, v in json.loads(row.expected).items()},
                cpu_s={s: [float(t) for t in v] for s, v in json.loads(row.cpu_s).items()},
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise ReferenceError(f"{path}: task {row.task_id}: damaged row ({exc})") from exc
    return table
