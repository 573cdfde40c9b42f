"""The package's import surface: a light ``import sodadata``, the public names, old module names that keep importing.

Old names (``sodadata.<module>`` of a module that moved) resolve through the finder in sodadata/__init__.py to the
same module object, with one DeprecationWarning per name.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import sodadata

REPO = Path(__file__).resolve().parent.parent


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


def test_recipe_module_runs_with_dash_m() -> None:
    proc = subprocess.run([sys.executable, "-m", "sodadata.recipes.emilia", "--help"], capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "--lang" in proc.stdout and not proc.stderr
