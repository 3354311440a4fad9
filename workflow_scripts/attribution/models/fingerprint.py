"""What identifies a model folder's content: a hash over its files (weights, config, tokenizer).

A model rebuilt or fine-tuned again at the same path (other seed, other data) gets another
fingerprint, where its path or revision alone would not change. Files of a Hugging Face cache
snapshot are links to blobs named after their content (SHA-256 for LFS files such as weights,
the git blob hash for small files), so a hub model costs no reading; local files are hashed.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

_BLOB_NAME = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")  # git sha1 or sha256


def folder_fingerprint(folder: str | Path) -> str:
    """SHA-256 (hex) over the sorted relative names and contents of every file in ``folder``
    (subfolders included, hidden files and ``__pycache__`` left out)."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"model folder {root} does not exist")
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or any(p.startswith(".") or p == "__pycache__" for p in rel.parts):
            continue
        digest.update(rel.as_posix().encode() + b"\0")
        digest.update(_content_id(path).encode() + b"\0")
    return digest.hexdigest()


def _content_id(path: Path) -> str:
    target = path.resolve()
    if path.is_symlink() and target.parent.name == "blobs" and _BLOB_NAME.match(target.name):
        return "blob:" + target.name
    digest = hashlib.sha256()
    with open(target, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()
