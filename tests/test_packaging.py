"""A non-editable wheel works on its own: catalogs, mixture recipes and the C loop ship inside the package.

The wheel is built from a copy of the package's sources (not the checkout, whose ``build/`` could hold stale
files), installed with ``--no-deps`` into a fresh virtual environment, and every command runs from an empty folder
with no ``PYTHONPATH``: only the installed wheel can answer. The new environment sees the dependencies of the
environment running the tests through a path-only ``.pth`` line (the same effect as ``--system-site-packages`` for
a venv made from a venv, without reinstalling torch); a path line does not run the editable install's finder, and
the new environment's own site-packages comes first, which the test checks with ``sodadata.__file__``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import sodadata.encode.codes

REPO = Path(__file__).resolve().parent.parent


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.slow
def test_wheel_installed_alone_has_catalogs_and_mixtures(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "sodadata", src / "sodadata", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copytree(REPO / "train", src / "train", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    wheels = tmp_path / "wheels"
    # --no-build-isolation: build with this environment's setuptools, offline
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(src)],
         tmp_path, env)
    (wheel,) = wheels.glob("sodadata-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    (codes_py,) = [n for n in names if n.endswith("/codes.py") and n.startswith("sodadata/")]
    native = [n for n in names if re.fullmatch(r"sodadata/(.+/)?_codes\.[^/]*\.so", n)]
    if os.environ.get("SODADATA_REQUIRE_NATIVE") == "1" or sodadata.encode.codes.NATIVE:  # a C compiler is here
        assert [Path(n).parent for n in native] == [Path(codes_py).parent], f"the C loop beside codes.py: {names}"

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env).strip())
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_test_dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(deps)))
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
         tmp_path, env)

    empty = tmp_path / "empty"
    empty.mkdir()
    probe = (
        "import json, sodadata, sodadata.encode.codes\n"
        "from sodadata.read.catalog import CATALOG_DIR, load_catalog\n"
        "from sodadata.mix.mixture import MixtureConfig\n"
        "soda = MixtureConfig.load('recipes/soda.yaml')\n"
        "print(json.dumps({'file': sodadata.__file__, 'catalog_dir': str(CATALOG_DIR),\n"
        "  'yodas2_en_shards': load_catalog('yodas2')['languages']['en']['shards'],\n"
        "  'emilia_repo': load_catalog('emilia')['repo'],\n"
        "  'soda': soda.names, 'soda_source': soda.source,\n"
        "  'emilia_only': MixtureConfig.load('emilia-only').names, 'native': sodadata.encode.codes.NATIVE}))\n"
    )
    got = json.loads(_run([str(python), "-c", probe], empty, env))
    assert Path(got["file"]).is_relative_to(venv), f"imported {got['file']}, not the wheel in {venv}"
    assert Path(got["catalog_dir"]).is_relative_to(venv)
    assert got["yodas2_en_shards"] == 18499
    assert got["emilia_repo"] == "amphion/Emilia-Dataset"
    assert got["soda"] == ["yodas2/en", "emilia-yodas/en", "emilia/en", "nemotron-cc/hq-actual"]
    assert Path(got["soda_source"]).is_relative_to(venv)
    assert got["emilia_only"] == ["emilia-yodas/en", "emilia/en"]
    assert got["native"] == bool(native), "the installed wheel uses the C loop it carries"

    # the console script and a recipe's --help, from the empty folder
    usage = _run([str(venv / "bin" / "sodadata"), "yodas2", "--help"], empty, env)
    assert "--subsets" in usage and "--allow-missing" in usage
    usage = _run([str(python), "-m", "sodadata.recipes.emilia", "--help"], empty, env)
    assert "--lang" in usage
    assert list(empty.iterdir()) == []


def test_packaged_mixture_by_name_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sodadata.mix.mixture import MIXTURE_DIR, MixtureConfig, resolve_recipe_path

    monkeypatch.chdir(tmp_path)
    for name in ("soda", "soda.yaml", "recipes/soda.yaml"):
        assert resolve_recipe_path(name) == MIXTURE_DIR / "soda.yaml"
    # a file that exists here wins over the packaged one of the same name
    (tmp_path / "recipes").mkdir()
    own = tmp_path / "recipes" / "soda.yaml"
    own.write_text("components: [{name: mine, path: mine, weight: 1}]\n")
    assert MixtureConfig.load("recipes/soda.yaml").names == ["mine"]
    # a path in another folder is never replaced by a packaged mixture
    with pytest.raises(FileNotFoundError, match=r"no mixture recipe elsewhere/soda.yaml: .*emilia-only, sample, soda"):
        resolve_recipe_path("elsewhere/soda.yaml")


def test_checkout_links_point_at_the_packaged_folders() -> None:
    from sodadata.mix.mixture import MIXTURE_DIR
    from sodadata.read.catalog import CATALOG_DIR

    assert (REPO / "catalogs").resolve() == CATALOG_DIR
    assert (REPO / "recipes").resolve() == MIXTURE_DIR
    assert (REPO / "recipes" / "soda.yaml").is_file() and (REPO / "catalogs" / "emilia.yaml").is_file()
