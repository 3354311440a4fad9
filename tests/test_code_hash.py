"""Code hashes derived from each entry script's import closure (attribution/hashing.py).

Checked directly for every module (cheap): the closure equals what Python's own static import
finder (modulefinder) reaches, and editing any module changes exactly the hashes of the entry
scripts whose closure holds it. The DAG check that every `script:` rule carries its script's
hash is one dry run here; end-to-end scheduling on a finished run is in tests/test_rerun.py.
"""

from __future__ import annotations

import modulefinder
import re
import shutil
from pathlib import Path

import pytest

from attribution.hashing import LIBRARY_ROOT, code_hash, import_closure
from workflow_utils import make_workspace, run_snakemake

ENTRY_SCRIPTS = sorted(p.name for p in LIBRARY_ROOT.glob("*.py") if p.name != "_entry.py")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


def rel(paths, root: Path = LIBRARY_ROOT) -> set[str]:
    return {Path(p).resolve().relative_to(root.resolve()).as_posix() for p in paths}


def modulefinder_closure(script: Path, root: Path) -> set[str]:
    """The files under ``root`` that Python's modulefinder (an independent static import finder:
    it reads bytecode, not the ast) reaches from ``script``, plus the modules the reached code
    starts by name (``python -m attribution.x``: a string ``"attribution.x"``, which no import
    finder sees) and what those import in turn."""
    finder = modulefinder.ModuleFinder(path=[str(root)])
    finder.run_script(str(script))
    started: set[str] = set()
    while True:
        files = _files(finder, root)
        names = launched_by_name(files, root) - started
        if not names:
            return files
        for name in sorted(names):
            finder.import_hook(name)
            started.add(name)


def _files(finder: modulefinder.ModuleFinder, root: Path) -> set[str]:
    found = [m.__file__ for m in finder.modules.values() if m.__file__]
    return rel([f for f in found if Path(f).resolve().is_relative_to(root.resolve())], root)


def launched_by_name(files: set[str], root: Path) -> set[str]:
    """Dotted names of the local modules that ``files`` name in a string (for a package also
    its ``__main__``, what ``python -m package`` runs)."""
    out = set()
    for name in files:
        text = (root / name).read_text()
        for dotted in re.findall(r"[\"']((?:_entry|attribution)(?:\.\w+)+)[\"']", text):
            module = root.joinpath(*dotted.split("."))
            if module.with_suffix(".py").is_file():
                out.add(dotted)
            elif (module / "__init__.py").is_file():
                out.add(dotted)
                if (module / "__main__.py").is_file():
                    out.add(f"{dotted}.__main__")
    return out


@pytest.mark.parametrize("script", ENTRY_SCRIPTS)
def test_closure_is_what_the_script_imports(script):
    closure = rel(import_closure(script))
    assert script in closure and "_entry.py" in closure
    assert closure == modulefinder_closure(LIBRARY_ROOT / script, LIBRARY_ROOT)


def test_subprocess_modules_are_in_the_closure():
    # torchrun starts attribution.finetune.worker, the sandbox pool `-m` its worker module
    assert "attribution/finetune/worker.py" in rel(import_closure("finetune.py"))
    sandbox = rel(import_closure("execute.py"))
    assert any(name.startswith("attribution/execution/sandbox") for name in sandbox)


def test_every_module_edit_changes_exactly_the_hashes_of_its_importers(tmp_path):
    """For every file under workflow_scripts/: a content edit changes the hash of exactly the
    entry scripts whose closure holds it; rewriting the same bytes (a checkout, a touch)
    changes none."""
    root = tmp_path / "workflow_scripts"
    shutil.copytree(LIBRARY_ROOT, root, ignore=_IGNORE)
    closures = {s: rel(import_closure(s, root), root) for s in ENTRY_SCRIPTS}
    before = {s: code_hash(s, root) for s in ENTRY_SCRIPTS}
    modules = sorted(p for p in root.rglob("*.py"))
    assert len(modules) > 40
    covered = set()
    for module in modules:
        name = module.relative_to(root).as_posix()
        original = module.read_bytes()
        module.write_bytes(original)  # same content, new mtime
        assert {s: code_hash(s, root) for s in ENTRY_SCRIPTS} == before, name
        module.write_bytes(original + b"\n# an edit\n")
        changed = {s for s in ENTRY_SCRIPTS if code_hash(s, root) != before[s]}
        module.write_bytes(original)
        assert changed == {s for s in ENTRY_SCRIPTS if name in closures[s]}, name
        covered |= {name} if changed else set()
    # The hashes the workflow uses cover the library, not a sample of it.
    library = {m.relative_to(root).as_posix() for m in modules}
    assert len(covered) > 0.8 * len(library), sorted(library - covered)


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_closure_follows_every_kind_of_import(tmp_path):
    root = write_tree(
        tmp_path,
        {
            "entry.py": "import os\nfrom _entry import setup\nfrom lib.a import f\n",
            "_entry.py": "import logging\n",
            "lib/__init__.py": "",
            "lib/a.py": "from . import b\nfrom .sub.c import g\n\ndef f():\n    import lib.lazy\n",
            "lib/b.py": "from lib import d\n",  # `from package import submodule`
            "lib/d.py": "import numpy\n",  # third party: not followed
            "lib/lazy.py": "cmd = ['python', '-m', 'lib.tool']\n",  # started by name
            "lib/tool/__init__.py": "",
            "lib/tool/__main__.py": "from ..b import x\n",  # relative, two levels
            "lib/sub/__init__.py": "from .. import b\n",
            "lib/sub/c.py": "from .e import *\n",
            "lib/sub/e.py": "",
            "lib/unused.py": "",
        },
    )
    assert rel(import_closure("entry.py", root), root) == {
        "entry.py",
        "_entry.py",
        "lib/__init__.py",
        "lib/a.py",
        "lib/b.py",
        "lib/d.py",
        "lib/lazy.py",
        "lib/tool/__init__.py",
        "lib/tool/__main__.py",
        "lib/sub/__init__.py",
        "lib/sub/c.py",
        "lib/sub/e.py",
    }
    before = code_hash("entry.py", root)
    (root / "lib/unused.py").write_text("x = 1\n")
    assert code_hash("entry.py", root) == before
    (root / "lib/sub/e.py").write_text("x = 1\n")
    assert code_hash("entry.py", root) != before
    # A new import is covered without editing any list.
    (root / "lib/d.py").write_text("import numpy\nfrom lib import unused\n")
    assert "lib/unused.py" in rel(import_closure("entry.py", root), root)


def test_unparsable_module_and_missing_script_are_named(tmp_path):
    root = write_tree(tmp_path, {"entry.py": "import lib\n", "lib.py": "def f(:\n"})
    with pytest.raises(SyntaxError, match="lib.py"):
        code_hash("entry.py", root)
    with pytest.raises(FileNotFoundError, match="nope.py"):
        code_hash("nope.py", root)
    with pytest.raises(ValueError, match="is not under"):
        code_hash(Path(__file__), root)


def test_a_rule_without_its_script_hash_fails_the_dag(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    rules = ws / "rules" / "benchmark.smk"
    text = rules.read_text()
    assert 'code=code_of("score.py"),' in text
    rules.write_text(text.replace('code=code_of("score.py"),', 'code=code_of("execute.py"),'))
    proc = run_snakemake(ws, "--dry-run", check=False)
    assert proc.returncode != 0
    assert "score (a script rule) must pass params code=code_of('score.py')" in (
        proc.stdout + proc.stderr
    )
