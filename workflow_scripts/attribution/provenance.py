"""Provenance of a result: how it was computed, next to the code hash of what computed it.

Greedy text, traces and losses can change with the precision, the GPU model, the batch shape
and the library versions, none of which the file paths or params name. Every writer adds one
record (:func:`record`) as columns (:func:`with_columns`, or a ``provenance`` entry in JSON):

    code                  content hash of the rule's entry script and its imports
    backend               hf | vllm (generation), nnsight (tracing), trainer (fine-tuning)
    device                cuda | cpu
    gpu_name              torch.cuda.get_device_name(), or "" on the CPU
    gpu_count             devices the job used
    dtype                 the effective dtype of the weights (training: + the autocast)
    batch_size            sequences per forward (greedy output can change with it)
    torch_version, transformers_version, nnsight_version, vllm_version, peft_version
                          installed versions of the libraries the job used ("" = not used)

Downstream results carry their input's record (executions and metrics the generations' one), so
the summary has it per row, and the comparison table warns when two compared rows differ in any
field but ``code`` (:func:`differences`).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

LIBRARIES = ("torch", "transformers", "nnsight", "vllm", "peft")
COLUMNS = (
    "code",
    "backend",
    "device",
    "gpu_name",
    "gpu_count",
    "dtype",
    "batch_size",
    *(f"{lib}_version" for lib in LIBRARIES),
)
# What two compared results must share for their difference to mean what it seems to.
COMPARED = tuple(c for c in COLUMNS if c != "code")
_INTEGER = {"gpu_count", "batch_size"}


def library_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""


def device_info(device: Any) -> tuple[str, str, int]:
    """(device type, GPU name, GPU count) of ``device`` (a torch.device, "cuda:0", "cpu")."""
    import torch

    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type != "cuda" or not torch.cuda.is_available():
        return dev.type, "", 0
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    return "cuda", torch.cuda.get_device_name(index), torch.cuda.device_count()


def record(
    *,
    code: str,
    backend: str,
    device: Any,
    dtype: Any,
    batch_size: int | None,
    libraries: Iterable[str],
    gpu_count: int | None = None,
) -> dict[str, Any]:
    """One provenance record (keys COLUMNS). ``libraries``: those the job used (from
    LIBRARIES); ``dtype`` a torch dtype or its name; ``gpu_count`` overrides the visible count
    (e.g. vLLM's tensor-parallel degree)."""
    used = set(libraries)
    unknown = used - set(LIBRARIES)
    if unknown:
        raise ValueError(f"provenance: unknown libraries {sorted(unknown)} (known: {LIBRARIES})")
    kind, gpu_name, count = device_info(device)
    out: dict[str, Any] = {
        "code": str(code),
        "backend": str(backend),
        "device": kind,
        "gpu_name": gpu_name,
        "gpu_count": int(count if gpu_count is None else gpu_count),
        "dtype": str(dtype).removeprefix("torch.") if dtype is not None else "",
        "batch_size": -1 if batch_size is None else int(batch_size),
    }
    for lib in LIBRARIES:
        out[f"{lib}_version"] = library_version(lib) if lib in used else ""
    return out


def with_columns(frame: pd.DataFrame, rec: Mapping[str, Any]) -> pd.DataFrame:
    """``frame`` with the record's fields as constant columns (after its own columns)."""
    missing = set(COLUMNS) - set(rec)
    if missing:
        raise ValueError(f"provenance record lacks {sorted(missing)}")
    out = frame.copy()
    for column in COLUMNS:
        value = rec[column]
        out[column] = pd.Series(
            [value] * len(out), index=out.index, dtype="int64" if column in _INTEGER else object
        )
    return out


def from_frame(frame: pd.DataFrame, where: str = "frame") -> dict[str, Any]:
    """The one record a result's rows carry (ValueError when it has none or several)."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{where}: no provenance columns {missing} (made by an older version?)")
    if frame.empty:
        return {c: (-1 if c in _INTEGER else "") for c in COLUMNS}
    unique = frame[list(COLUMNS)].drop_duplicates()
    if len(unique) != 1:
        raise ValueError(f"{where}: rows with different provenance:\n{unique.to_string()}")
    row = unique.iloc[0]
    return {c: (int(row[c]) if c in _INTEGER else str(row[c])) for c in COLUMNS}


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The COMPARED fields in which two records differ: {field: (a's, b's)}."""
    return {f: (a.get(f), b.get(f)) for f in COMPARED if a.get(f) != b.get(f)}


def describe(diff: Mapping[str, tuple[Any, Any]]) -> str:
    """``dtype: bfloat16 vs float32; gpu_name: ...`` (empty when nothing differs)."""
    return "; ".join(f"{f}: {x!r} vs {y!r}" for f, (x, y) in diff.items())


def _summary_record(summary: pd.DataFrame, model: str, benchmark: str) -> dict[str, Any]:
    rows = summary[(summary["model"] == model) & (summary["benchmark"] == benchmark)]
    if rows.empty:
        return {}
    first = rows.iloc[0]
    return {c: _plain(first[c]) for c in COMPARED if c in rows}


def _plain(value: Any) -> Any:
    if pd.isna(value):
        return None
    return value.item() if hasattr(value, "item") else value


def comparison_differences(summary: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    """For each row of a comparison table (model vs reference on a benchmark): the provenance
    fields in which the two models' summary rows differ, described ("" when none)."""
    cache: dict[tuple[str, str, str], str] = {}
    out = []
    for model, reference, benchmark in zip(
        table["model"], table["reference"], table["benchmark"], strict=True
    ):
        key = (str(model), str(reference), str(benchmark))
        if key not in cache:
            mine = _summary_record(summary, key[0], key[2])
            theirs = _summary_record(summary, key[1], key[2])
            cache[key] = describe(differences(mine, theirs))
        out.append(cache[key])
    return out


def comparison_notes(table: pd.DataFrame) -> list[str]:
    """One warning line per (model, reference, benchmark) whose provenance differs."""
    if "provenance_differs" not in table or table.empty:
        return []
    rows = table[table["provenance_differs"] != ""]
    rows = rows.drop_duplicates(["model", "reference", "benchmark"])
    return [
        f"{r.model} vs {r.reference} on {r.benchmark}: made differently ({r.provenance_differs})"
        for r in rows.itertuples()
    ]


def merged(frame: pd.DataFrame, where: str = "frame") -> dict[str, Any]:
    """The record of rows that may come from several jobs (e.g. per-problem traces): per field
    the distinct values joined by `` | `` (integers stay integers when they agree, else -1)."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{where}: no provenance columns {missing} (made by an older version?)")
    out: dict[str, Any] = {}
    for column in COLUMNS:
        values = sorted({str(v) for v in frame[column].dropna()})
        if column in _INTEGER:
            out[column] = int(values[0]) if len(values) == 1 else -1
        else:
            out[column] = " | ".join(values)
    return out
