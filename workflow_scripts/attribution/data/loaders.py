"""Load benchmark datasets from the hub or local files into one normalized frame per dataset.

Accepted inputs (``load_dataset_file`` picks by suffix and columns):
- HumanEval+: the evalplus release JSONL(.gz) (base_input/plus_input/atol), the original
  HumanEval JSONL (tests only: empty input lists), or Parquet of either.
- CRUXEval: ``cruxeval.jsonl`` (code, input, output, id) or Parquet.
- APPS: rows in the Hugging Face ``codeparrot/apps`` schema (JSONL or Parquet), the original
  directory layout (``NNNN/question.txt, input_output.json, solutions.json, metadata.json,
  starter_code.py``), MapCoder's ``selected150.jsonl`` and CodeRL's example-test JSONL.
  Standard-input problems (no ``fn_name``) must have text tests: each input and output a string
  or a list of lines (the official harness joins lists with newlines); anything else is
  rejected naming the problem and the test. MapCoder's file is the one exception, normalized by
  ``mapcoder_expected_text`` (see there).

Hub sources go through ``datasets.load_dataset`` with a pinned revision; APPS reads its JSONL
files with the ``json`` builder from ``hf://datasets/...`` paths (its loading script is dead).
A malformed row raises DatasetFormatError naming the dataset, the row id and the field.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from attribution.data.records import APPS_DIFFICULTIES, COLUMNS, ID_COLUMN
from attribution.io import read_jsonl


log = logging.getLogger(__name__)


class DatasetFormatError(ValueError):
    """A dataset row or file does not have the expected format."""


# --------------------------------------------------------------------------------------------
# Row normalizers: one per dataset and source format; each returns a dict with COLUMNS[dataset].


def _require(dataset: str, row: dict[str, Any], row_id: str, field: str, kind: type) -> Any:
    if field not in row or row[field] is None:
        raise DatasetFormatError(f"{dataset}: row {row_id}: missing field {field!r}")
    value = row[field]
    if not isinstance(value, kind):
        raise DatasetFormatError(
            f"{dataset}: row {row_id}: field {field!r} should be {kind.__name__}, "
            f"got {type(value).__name__}"
        )
    return value


def _json_list(dataset: str, row_id: str, field: str, value: Any) -> str:
    """Inputs are stored as JSON text; accept a list or JSON text of a list."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(f"{dataset}: row {row_id}: field {field!r}: {exc}") from exc
    if not isinstance(value, list):
        raise DatasetFormatError(f"{dataset}: row {row_id}: field {field!r} should be a list")
    return json.dumps(value)


def normalize_humanevalplus(row: dict[str, Any], index: int) -> dict[str, Any]:
    ds = "humanevalplus"
    row_id = str(row.get("task_id", f"#{index}"))
    out = {
        "task_id": _require(ds, row, row_id, "task_id", str),
        "prompt": _require(ds, row, row_id, "prompt", str),
        "entry_point": _require(ds, row, row_id, "entry_point", str),
        "canonical_solution": _require(ds, row, row_id, "canonical_solution", str),
        "test": _require(ds, row, row_id, "test", str),
        "contract": row.get("contract") or "",
    }
    has_inputs = "base_input" in row or "plus_input" in row
    out["base_input"] = _json_list(ds, row_id, "base_input", row["base_input"]) if has_inputs else "[]"
    out["plus_input"] = _json_list(ds, row_id, "plus_input", row.get("plus_input", [])) if has_inputs else "[]"
    try:
        out["atol"] = float(row.get("atol") or 0.0)
    except (TypeError, ValueError) as exc:
        raise DatasetFormatError(f"{ds}: row {row_id}: field 'atol' is not a number") from exc
    return out


def normalize_cruxeval(row: dict[str, Any], index: int) -> dict[str, Any]:
    ds = "cruxeval"
    row_id = str(row.get("id", f"#{index}"))
    return {f: _require(ds, row, row_id, f, str) for f in ("id", "code", "input", "output")}


def normalize_apps(row: dict[str, Any], index: int) -> dict[str, Any]:
    """Rows in the HF schema; MapCoder and CodeRL-example rows are converted to it."""
    ds = "apps"
    if "test_list" in row and "description" in row:
        row = _apps_from_mapcoder(row)
    elif "example_input_output" in row:
        row = _apps_from_coderl_examples(row)
    row_id = str(row.get("problem_id", f"#{index}"))
    if "problem_id" not in row:
        raise DatasetFormatError(f"{ds}: row {row_id}: missing field 'problem_id'")
    question = _require(ds, row, row_id, "question", str)
    solutions = row.get("solutions") or "[]"
    if not isinstance(solutions, str):
        solutions = json.dumps(solutions)
    try:
        sol_list = json.loads(solutions) if solutions.strip() else []
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(f"{ds}: row {row_id}: field 'solutions': {exc}") from exc
    if not isinstance(sol_list, list) or not all(isinstance(s, str) for s in sol_list):
        raise DatasetFormatError(f"{ds}: row {row_id}: field 'solutions' is not a list of strings")
    io = row.get("input_output") or ""
    if not isinstance(io, str):
        io = json.dumps(io)
    if io.strip():
        try:
            io_obj = json.loads(io)
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(f"{ds}: row {row_id}: field 'input_output': {exc}") from exc
        if not isinstance(io_obj, dict) or not {"inputs", "outputs"} <= set(io_obj):
            raise DatasetFormatError(
                f"{ds}: row {row_id}: field 'input_output' needs keys 'inputs' and 'outputs'"
            )
        if len(io_obj["inputs"]) != len(io_obj["outputs"]):
            raise DatasetFormatError(
                f"{ds}: row {row_id}: field 'input_output' has {len(io_obj['inputs'])} inputs "
                f"but {len(io_obj['outputs'])} outputs"
            )
        if not io_obj.get("fn_name"):
            _check_stdin_tests(row_id, io_obj)
    difficulty = _require(ds, row, row_id, "difficulty", str)
    if difficulty not in APPS_DIFFICULTIES and difficulty != "unknown":
        raise DatasetFormatError(
            f"{ds}: row {row_id}: field 'difficulty' is {difficulty!r}, expected one of "
            f"{list(APPS_DIFFICULTIES)}"
        )
    out = {
        "problem_id": str(row["problem_id"]),
        "question": question,
        "solutions": json.dumps(sol_list),
        "input_output": io,
        "difficulty": difficulty,
        "url": row.get("url") or "",
        "starter_code": row.get("starter_code") or "",
    }
    if row.get("_normalized_tests"):
        out["_normalized_tests"] = row["_normalized_tests"]
    return out


def mapcoder_expected_text(value: Any) -> str:
    """The expected stdout of one of MapCoder's stdin-converted tests, as text.

    MapCoder converted APPS' call-based problems to standard input (each argument on a line, as
    Python writes it) and tells the model to print the function's result, but kept the returned
    value itself as the expected output: 74 of the 150 problems of ``selected150.jsonl`` expect
    an int, bool, float, list, dict or None. Such a value is normalized to ``str(value)``, the
    text ``print(value)`` writes (``True``, ``[1, 2]``, ``None``), which is also how MapCoder's
    own prompt shows the expected output to the model (``f"...{output[0]}"``). ExecEval, which
    produced MapCoder's published numbers, instead rejects such a job, so ``is_solved`` is false
    for every sample of these problems (README, "Differences from the official scorers").
    """
    return value if isinstance(value, str) else str(value)


def _apps_from_mapcoder(row: dict[str, Any]) -> dict[str, Any]:
    """MapCoder's selected150: tests are stdin-converted ({"input": text, "output": [text]});
    ``output`` is ExecEval's list of acceptable outputs, always one here."""
    row_id = str(row.get("id") or row.get("name"))
    tests = row["test_list"]
    if isinstance(tests, str):
        tests = json.loads(tests)
    inputs, outputs, normalized = [], [], []
    for i, test in enumerate(tests):
        where = f"apps: row {row_id}: field 'test_list[{i}]"
        if not isinstance(test, dict) or not {"input", "output"} <= set(test):
            raise DatasetFormatError(f"{where}' needs keys 'input' and 'output'")
        if not isinstance(test["input"], str):
            raise DatasetFormatError(
                f"{where}.input' should be text, got {type(test['input']).__name__}"
            )
        accepted = test["output"] if isinstance(test["output"], list) else [test["output"]]
        if len(accepted) != 1:
            raise DatasetFormatError(
                f"{where}.output' lists {len(accepted)} acceptable outputs; exactly one is "
                "supported"
            )
        if not isinstance(accepted[0], str):
            normalized.append(i)
        inputs.append(test["input"])
        outputs.append(mapcoder_expected_text(accepted[0]))
    return {
        "problem_id": row_id,
        "question": row["description"],
        "solutions": "[]",
        "input_output": json.dumps({"inputs": inputs, "outputs": outputs}),
        "difficulty": row.get("difficulty", "unknown"),
        "url": "",
        "starter_code": row.get("starter_code") or "",
        "_normalized_tests": normalized,
    }


def _is_text(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(v, str) for v in value)
    )


def _check_stdin_tests(row_id: str, io_obj: dict[str, Any]) -> None:
    """A standard-input problem's tests must be text (or lists of lines): never compared with
    a program's output as something else, which would fail every sample silently."""
    for field in ("inputs", "outputs"):
        for i, value in enumerate(io_obj[field]):
            if not _is_text(value):
                raise DatasetFormatError(
                    f"apps: row {row_id}: field 'input_output.{field}[{i}]' is "
                    f"{type(value).__name__}, but a standard-input problem (no fn_name) needs "
                    "text or a list of lines"
                )


def _apps_from_coderl_examples(row: dict[str, Any]) -> dict[str, Any]:
    """CodeRL's example tests (problem_id + example_input_output): tests only, no question."""
    io = row["example_input_output"]  # null for the 63 problems without example tests
    if io is None:
        io = ""
    return {
        "problem_id": str(row["problem_id"]),
        "question": "",
        "solutions": "[]",
        "input_output": io if isinstance(io, str) else json.dumps(io),
        "difficulty": row.get("difficulty", "unknown"),
        "url": "",
        "starter_code": "",
    }


NORMALIZERS: dict[str, Callable[[dict[str, Any], int], dict[str, Any]]] = {
    "humanevalplus": normalize_humanevalplus,
    "cruxeval": normalize_cruxeval,
    "apps": normalize_apps,
}


def normalize_rows(dataset: str, rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Normalize raw rows; duplicate ids are an error (they would silently merge results)."""
    if dataset not in NORMALIZERS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(NORMALIZERS)}")
    normalize = NORMALIZERS[dataset]
    records = [normalize(dict(row), i) for i, row in enumerate(rows)]
    if not records:
        raise DatasetFormatError(f"{dataset}: no rows")
    # How many tests per row had their expected output normalized to text (MapCoder APPS file).
    normalized = {
        i: len(r.pop("_normalized_tests")) for i, r in enumerate(records) if "_normalized_tests" in r
    }
    frame = pd.DataFrame.from_records(records, columns=list(COLUMNS[dataset]))
    # Real files repeat ids (MapCoder's APPS selected150 lists problem 2886 twice, and its
    # published score counts both): keep every row, make the id unique with a visible suffix,
    # and record the renaming in frame.attrs (the download stage writes it to the sidecar).
    id_col = ID_COLUMN[dataset]
    seen: dict[str, int] = {}
    renamed: list[str] = []
    ids = []
    for task_id in frame[id_col]:
        seen[task_id] = seen.get(task_id, 0) + 1
        if seen[task_id] > 1:
            renamed.append(f"{task_id}#{seen[task_id]}")
            ids.append(renamed[-1])
        else:
            ids.append(task_id)
    frame[id_col] = ids
    frame.attrs["renamed_duplicate_ids"] = renamed
    frame.attrs["normalized_expected_outputs"] = {ids[i]: tests for i, tests in normalized.items()}
    if normalized:
        log.warning(
            "%s: expected outputs of %d problems normalized to text (MapCoder's stdin-converted "
            "call-based tests; see mapcoder_expected_text)",
            dataset,
            len(normalized),
        )
    return frame


# --------------------------------------------------------------------------------------------
# Sources


def read_apps_directory(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows from the original APPS layout: ``path`` is one problem folder or a folder of them."""
    root = Path(path)
    problem_dirs = [root] if (root / "question.txt").exists() else sorted(
        p for p in root.iterdir() if p.is_dir() and (p / "question.txt").exists()
    )
    if not problem_dirs:
        raise DatasetFormatError(f"apps: {root} holds no problem folder with a question.txt")
    rows = []
    for pdir in problem_dirs:
        row: dict[str, Any] = {"problem_id": pdir.name, "question": (pdir / "question.txt").read_text()}
        meta_path = pdir / "metadata.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        row["difficulty"] = meta.get("difficulty", "unknown")
        row["url"] = meta.get("url", "")
        sol = pdir / "solutions.json"
        row["solutions"] = sol.read_text() if sol.exists() else "[]"
        io = pdir / "input_output.json"
        row["input_output"] = io.read_text() if io.exists() else ""
        starter = pdir / "starter_code.py"
        row["starter_code"] = starter.read_text() if starter.exists() else ""
        rows.append(row)
    return rows


# A local entry's `format` (schemas/config.schema.yaml): auto picks by the path's suffix.
FORMATS = ("auto", "jsonl", "json", "parquet", "apps_dir")


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format ``auto`` means for ``path``: a folder is the APPS layout, else the suffix."""
    p = Path(path)
    if p.is_dir():
        return "apps_dir"
    name = p.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".json"):
        return "json"
    raise DatasetFormatError(
        f"{p}: unknown dataset format (expected jsonl, jsonl.gz, json, parquet or an APPS "
        "folder); name it with the entry's `format:`"
    )


def read_rows(path: str | os.PathLike[str], fmt: str = "auto") -> list[dict[str, Any]]:
    """Raw rows of a local file: .jsonl, .jsonl.gz, .json (list), .parquet, or an APPS folder.
    ``fmt`` (a config entry's ``format``) overrides the guess from the suffix."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"dataset file {p} does not exist")
    if fmt not in FORMATS:
        raise DatasetFormatError(f"{p}: unknown format {fmt!r} (expected one of {FORMATS})")
    fmt = detect_format(p) if fmt == "auto" else fmt
    if (fmt == "apps_dir") != p.is_dir():
        what = "a folder" if p.is_dir() else "a file"
        raise DatasetFormatError(f"{p}: format {fmt} does not fit {what}")
    if fmt == "apps_dir":
        return read_apps_directory(p)
    if fmt == "jsonl":
        return read_jsonl(p)
    if fmt == "parquet":
        return pd.read_parquet(p).to_dict(orient="records")
    data = json.loads(p.read_text())
    if isinstance(data, list):
        return data
    raise DatasetFormatError(f"{p}: a .json dataset must be a list of rows")


def load_dataset_file(
    dataset: str, path: str | os.PathLike[str], fmt: str = "auto"
) -> pd.DataFrame:
    """Load a local dataset file/folder into the normalized frame of ``dataset``."""
    try:
        return normalize_rows(dataset, read_rows(path, fmt))
    except DatasetFormatError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise DatasetFormatError(f"{path}: {exc}") from exc


def hub_data_files(repo: str, revision: str, data_files: str | list[str]) -> list[str]:
    """``hf://`` paths for files in a hub dataset repo at a pinned revision."""
    files = [data_files] if isinstance(data_files, str) else list(data_files)
    return [f"hf://datasets/{repo}@{revision}/{f}" for f in files]


def load_hub_dataset(dataset: str, spec: dict[str, Any]) -> pd.DataFrame:
    """Load from the hub at the pinned revision (``datasets.load_dataset``)."""
    import datasets

    repo, revision, split = spec["repo"], spec["revision"], spec.get("split", "test")
    try:
        if spec.get("data_files"):
            files = hub_data_files(repo, revision, spec["data_files"])
            ds = datasets.load_dataset("json", data_files={split: files}, split=split)
        else:
            ds = datasets.load_dataset(repo, revision=revision, split=split)
    except Exception as exc:  # noqa: BLE001 - re-raised with what the user needs
        raise RuntimeError(
            f"could not load dataset {dataset} from the hub ({repo}@{revision}, split {split}): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. Offline? "
            "Run the download rule where the internet is (it is a localrule under SLURM) or "
            "use `source: local` with a downloaded file."
        ) from exc
    return normalize_rows(dataset, ds.to_list())


def sha256_of(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, or of a folder's files (sorted relative paths and contents)."""
    p = Path(path)
    digest = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            digest.update(f.relative_to(p).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def frame_sha256(frame: pd.DataFrame) -> str:
    """Hash of the normalized content (what results depend on), independent of the source."""
    digest = hashlib.sha256()
    for row in frame.itertuples(index=False):
        digest.update(json.dumps(list(row), default=str).encode())
    return digest.hexdigest()


def download_dataset(dataset: str, spec: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Load one configured dataset; returns the frame and its provenance sidecar.

    ``spec["kind"]`` names the format when the entry is not named after one (``apps_train``)."""
    kind = spec.get("kind", dataset)
    if spec["source"] == "local":
        frame = load_dataset_file(kind, spec["path"], spec.get("format", "auto"))
        provenance = {"source": "local", "path": spec["path"], "source_sha256": sha256_of(spec["path"])}
    elif spec["source"] == "hub":
        frame = load_hub_dataset(kind, spec)
        provenance = {
            "source": "hub",
            "repo": spec["repo"],
            "revision": spec["revision"],
            "split": spec.get("split", "test"),
            "data_files": spec.get("data_files"),
        }
    else:
        raise ValueError(f"datasets.{dataset}.source: unknown source {spec['source']!r}")
    provenance.update(
        dataset=dataset,
        kind=kind,
        rows=len(frame),
        content_sha256=frame_sha256(frame),
        renamed_duplicate_ids=frame.attrs.get("renamed_duplicate_ids", []),
        normalized_expected_outputs=frame.attrs.get("normalized_expected_outputs", {}),
    )
    return frame, provenance
