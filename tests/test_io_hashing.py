"""Atomic writes (code hashes: tests/test_code_hash.py)."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from attribution.io import atomic_path, write_json, write_parquet


def test_failed_write_leaves_nothing_that_looks_complete(tmp_path):
    target = tmp_path / "out" / "x.parquet"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("killed")
    assert not target.exists()
    assert os.listdir(target.parent) == []


def test_write_parquet_and_json(tmp_path):
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    pd.testing.assert_frame_equal(
        pd.read_parquet(write_parquet(frame, tmp_path / "f.parquet")), frame
    )
    assert (
        write_json({"b": 1, "a": [1.5]}, tmp_path / "m.json").read_text()
        == '{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}\n'
    )
