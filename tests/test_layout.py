"""The package's layout: a folder per stage of the data flow, old module names still importing, a light import.

docs/ARCHITECTURE.md draws the folders. Old names (``sodadata.<module>`` before the folders) resolve through the
finder in sodadata/__init__.py to the same module object, with one DeprecationWarning per name.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import sodadata

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "sodadata"
STAGES = ("read", "encode", "write", "run", "mix", "tools")
TOP_LEVEL = {"__init__.py", "cli.py", "locations.py"}  # what stays in sodadata/ itself
NOT_STAGES = {"recipes", "catalogs", "mixtures"}  # recipes: `python -m sodadata.recipes.<corpus>`; the rest is data


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)


def test_import_sodadata_does_not_import_torch_or_the_mixture_code() -> None:
    proc = _python(
        "import sys, sodadata\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'sodadata.'))))"
    )
    assert proc.returncode == 0, proc.stderr
    loaded = eval(proc.stdout)  # a printed list of module names
    assert not [m for m in loaded if m == "torch" or m.startswith("torch.")], loaded
    assert not [m for m in loaded if "mixture" in m or "packing" in m or "decode" in m], loaded


def test_public_names_are_the_objects_of_their_modules() -> None:
    for name, module in sodadata._LAZY.items():
        assert getattr(sodadata, name) is getattr(importlib.import_module(module), name), name
    from sodadata import MixtureConfig, MixtureStream

    assert MixtureConfig.__name__ == "MixtureConfig" and MixtureStream.__name__ == "MixtureStream"
    with pytest.raises(AttributeError, match="no attribute 'MixtureConfg'"):
        sodadata.MixtureConfg  # noqa: B018


def test_every_old_module_name_is_the_moved_module_with_one_warning() -> None:
    """In a fresh interpreter: each old name (import statement, from-import, importlib) is the new module object."""
    assert sodadata._MOVED, "the layout change fills sodadata._MOVED with every module that moved"
    proc = _python(
        "import importlib, json, warnings, sodadata\n"
        "out = {}\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    for old, new in sodadata._MOVED.items():\n"
        "        first = importlib.import_module('sodadata.' + old)\n"
        "        again = importlib.import_module('sodadata.' + old)\n"
        "        exec(f'from sodadata import {old} as attr')\n"
        "        real = importlib.import_module(new)\n"
        "        out[old] = [first is real, again is real, attr is real, real.__name__, real.__spec__.name]\n"
        "print(json.dumps({'modules': out, 'warnings': [(w.category.__name__, str(w.message), w.filename)\n"
        "                                               for w in caught]}))\n"
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    for old, new in sodadata._MOVED.items():
        assert got["modules"][old] == [True, True, True, new, new], old
    messages = [message for category, message, _ in got["warnings"] if category == "DeprecationWarning"]
    assert sorted(messages) == sorted(
        f"sodadata.{old} moved to {new}: import it from there (the old name will go)" for old, new in sodadata._MOVED.items()
    )
    assert {filename for *_, filename in got["warnings"]} == {"<string>"}, "the warning points at the user's import"


def test_old_name_finder_gives_the_same_module_and_warns_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mechanism on a name of this test's own, so it runs in-process whatever the table holds."""
    import sodadata.cli as real

    monkeypatch.setitem(sodadata._MOVED, "old_cli_for_test", "sodadata.cli")
    monkeypatch.delitem(sys.modules, "sodadata.old_cli_for_test", raising=False)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first = importlib.import_module("sodadata.old_cli_for_test")
            import sodadata.old_cli_for_test as again  # type: ignore[import-not-found]

            from sodadata import old_cli_for_test  # type: ignore[attr-defined]
        assert first is real and old_cli_for_test is real and again is real
        assert real.__spec__.name == "sodadata.cli" and real.__name__ == "sodadata.cli"
        assert [str(w.message) for w in caught] == [
            "sodadata.old_cli_for_test moved to sodadata.cli: import it from there (the old name will go)"
        ]
        assert caught[0].category is DeprecationWarning and caught[0].filename == __file__
    finally:
        sys.modules.pop("sodadata.old_cli_for_test", None)
        sodadata.__dict__.pop("old_cli_for_test", None)
    with pytest.raises(ModuleNotFoundError, match=r"sodadata\.no_such_module"):
        importlib.import_module("sodadata.no_such_module")


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_module_or_folder_is_named_like_a_standard_library_module() -> None:
    named = {p.stem for p in _modules()} | {p.name for p in PACKAGE.rglob("*") if p.is_dir()}
    assert not sorted(named & set(sys.stdlib_module_names) - {"__init__", "__main__"})


def test_every_module_lives_in_a_stage_folder() -> None:
    outside = [
        p.relative_to(PACKAGE).as_posix()
        for p in _modules()
        if not (
            (p.parent == PACKAGE and p.name in TOP_LEVEL)
            or p.relative_to(PACKAGE).parts[0] in (*STAGES, *NOT_STAGES)
        )
    ]
    assert not outside, f"add each to a stage folder (docs/ARCHITECTURE.md): {outside}"
    for stage in STAGES:
        init = PACKAGE / stage / "__init__.py"
        doc = importlib.import_module(f"sodadata.{stage}").__doc__
        assert init.is_file() and doc and doc.strip(), f"sodadata/{stage}/__init__.py says what the stage is"
        assert "import" not in init.read_text(), f"sodadata/{stage}/__init__.py re-exports nothing"


# What each folder may import (besides sodadata/cli.py, locations.py and the package itself): the stages before it.
MAY_IMPORT = {
    "read": set(),
    "encode": {"read"},
    "write": {"read", "encode"},
    "run": {"read", "encode", "write"},
    "mix": {"read", "encode", "write"},
    "tools": {"read", "encode", "write", "run", "mix"},
    "recipes": {"read", "encode", "write", "run"},
}


def _imported_folders(path: Path) -> dict[str, int]:
    """sodadata folders a module imports at run time (imports under ``if TYPE_CHECKING:`` are for type hints only)."""
    tree = ast.parse(path.read_text())
    type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                 for stmt in node.body for n in ast.walk(stmt)}
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        names = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "sodadata" and len(parts) > 1 and parts[1] in MAY_IMPORT:
                found.setdefault(parts[1], node.lineno)
    return found


def test_stages_import_only_the_stages_before_them() -> None:
    wrong = []
    for p in _modules():
        folder = p.relative_to(PACKAGE).parts[0]
        if folder in MAY_IMPORT:
            wrong += [f"sodadata/{p.relative_to(PACKAGE).as_posix()}:{line} imports sodadata.{other}"
                      for other, line in sorted(_imported_folders(p).items())
                      if other != folder and other not in MAY_IMPORT[folder]]
    assert not wrong, "a stage imports a later one (docs/ARCHITECTURE.md): " + "; ".join(wrong)


def test_architecture_map_names_every_module() -> None:
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    for stage in STAGES:
        assert f"sodadata/{stage}/" in text, stage
        for p in (PACKAGE / stage).glob("*.py"):
            if p.name != "__init__.py":
                assert p.name in text, f"docs/ARCHITECTURE.md does not name sodadata/{stage}/{p.name}"


def test_recipe_module_runs_with_dash_m() -> None:
    proc = subprocess.run([sys.executable, "-m", "sodadata.recipes.emilia", "--help"], capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "--lang" in proc.stdout and not proc.stderr
