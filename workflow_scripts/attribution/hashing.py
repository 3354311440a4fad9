"""Content hashes of the code a rule runs, passed to rules as params.

Snakemake's ``code`` rerun trigger sees only a ``script:`` file's mtime, never the modules it
imports. Each rule instead carries ``code_hash(<its entry script>)`` as a param: a hash over the
entry script and its *import closure*, the files under ``workflow_scripts/`` it imports,
directly or through other modules, found from the code itself (``ast``), never from a list. A
real edit to any of them reruns the rule; a checkout or ``touch`` that keeps the content reruns
nothing; a new module or a new import is covered without editing anything.

What counts as an import (:func:`import_closure`):
- ``import a.b`` / ``from a.b import c`` anywhere in a module (functions included), absolute or
  relative, when ``a`` is a module or package under the root (``_entry``, ``attribution``);
  ``c`` counts too when it is a submodule, and so does every package ``__init__.py`` on the way;
- a string constant that names a module under the root (``"attribution.finetune.worker"``):
  the ``python -m`` subprocesses (sandbox workers, torchrun workers); for a package its
  ``__main__.py`` too.
Third-party imports (torch, transformers, ...) are left out: their versions are recorded with
each result (provenance), not hashed.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

LIBRARY_ROOT = Path(__file__).resolve().parent.parent  # workflow_scripts/

_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


def code_hash(script: str | Path, root: Path = LIBRARY_ROOT) -> str:
    """SHA-256 (first 16 hex digits) over ``script`` (relative to ``root`` or absolute) and
    every file of its import closure: paths and contents."""
    root = Path(root).resolve()
    return _files_hash(import_closure(script, root), root)


def import_closure(script: str | Path, root: Path = LIBRARY_ROOT) -> list[Path]:
    """``script`` and every file under ``root`` it imports, transitively, sorted."""
    root = Path(root).resolve()
    start = Path(script)
    start = (start if start.is_absolute() else root / start).resolve()
    if not start.is_file():
        raise FileNotFoundError(f"import_closure: no script {script} (under {root})")
    if not start.is_relative_to(root):
        raise ValueError(f"import_closure: {start} is not under {root}")
    finder = _Finder(root)
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        module = _module_name(path, root)
        for found in _imports(path.read_bytes(), str(path)):
            todo.extend(finder.resolve(found, module, path))
    return sorted(seen)


def _files_hash(files: Iterable[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(files):  # absolute paths under root (import_closure resolves them)
        digest.update(file.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(file.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


# (kind, level, module, names): kind "import" | "from" | "string"
_Found = tuple[str, int, str, tuple[str, ...]]


@lru_cache(maxsize=4096)
def _imports(source: bytes, filename: str) -> tuple[_Found, ...]:
    """Every import statement and dotted-name string constant of one module's source (cached
    by content: an edit that keeps the imports is re-parsed once)."""
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        raise SyntaxError(f"code_hash: cannot parse {filename}: {exc}") from exc
    found: list[_Found] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [("import", 0, alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = tuple(alias.name for alias in node.names if alias.name != "*")
            found.append(("from", node.level, node.module or "", names))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and _DOTTED.match(node.value)
        ):
            found.append(("string", 0, node.value, ()))
    return tuple(found)


def _module_name(path: Path, root: Path) -> str:
    """Dotted name of ``path`` under ``root`` (a package's ``__init__.py`` is the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


class _Finder:
    """Module name -> file under ``root``, memoised for one closure walk."""

    def __init__(self, root: Path):
        self.root = root
        # Top-level modules and packages under root: anything else is third party.
        self.local = {p.stem for p in root.glob("*.py")} | {
            p.parent.name for p in root.glob("*/__init__.py")
        }
        self.files: dict[str, Path | None] = {}

    def module_file(self, dotted: str) -> Path | None:
        if dotted not in self.files:
            file = None
            if dotted.split(".")[0] in self.local:
                base = self.root.joinpath(*dotted.split("."))
                for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                    if candidate.is_file():
                        file = candidate
                        break
            self.files[dotted] = file
        return self.files[dotted]

    def with_parents(self, dotted: str) -> list[Path]:
        """The module's file and the ``__init__.py`` of every package on the way (all run on
        import); [] when the module is not under root (a third-party import)."""
        parts = dotted.split(".")
        if parts[0] not in self.local:
            return []
        files = []
        for i in range(1, len(parts) + 1):
            file = self.module_file(".".join(parts[:i]))
            if file is not None:
                files.append(file)
        return files

    def resolve(self, found: _Found, module: str, path: Path) -> list[Path]:
        kind, level, name, names = found
        if kind == "import":
            return self.with_parents(name)
        if kind == "string":
            target = self.module_file(name)
            if target is None:
                return []
            files = self.with_parents(name)
            main = target.parent / "__main__.py"  # `python -m package` runs its __main__.py
            if target.name == "__init__.py" and main.is_file():
                files.append(main)
            return files
        if level:
            package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            package = package[: len(package) - (level - 1)]
            name = ".".join([*package, name] if name else package)
        files = self.with_parents(name)
        for sub in names:
            if self.module_file(f"{name}.{sub}") is not None:
                files += self.with_parents(f"{name}.{sub}")
        return files
