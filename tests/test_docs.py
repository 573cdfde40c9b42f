"""The commands README.md, docs/*.md and every recipe's ``--help`` print run as printed, so docs and behaviour
cannot drift.

Convention (docs/ARCHITECTURE.md): in README.md and docs/*.md each fenced shell block (```bash, ```sh, ```console)
has, on the line before its opening fence, ``<!-- run -->`` (tests/test_docs.py runs it, as printed) or
``<!-- not run: REASON -->`` (it needs the network, a cluster, a TPU, or is the test suite itself). A ```python
block marked ``<!-- run -->`` is run too. Run blocks execute in order, README.md first, then docs/*.md by name, in
one bash process in a fresh copy of the checkout, offline, from its root: each can use what the ones before made
(``out/sample``, ``tok/``). The commands of README's "After the shards" table run last.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from sodadata.read.recipe import Recipe
from sodadata.run import cli_recipe

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "shell", "console"}
RECIPES = ["emilia", "yodas2", "mls", "nemotron_cc", "librispeech"]
MARKER = re.compile(r"<!-- (run|not run: \S.*) -->")
# The setup line's installer is not run: the test already runs inside the project's virtualenv (the copy's .venv
# links to it), and scripts/setup.sh there would re-point that shared venv's editable install at the copy.
SETUP = "bash scripts/setup.sh && "


@dataclass
class Block:
    file: Path
    line: int  # 1-based line of the opening fence
    lang: str
    marker: str | None  # "run", "not run: ...", or None
    body: str

    @property
    def where(self) -> str:
        return f"{self.file.relative_to(REPO)}:{self.line}"

    def script(self) -> str:
        """The block as bash runs it: console blocks are their ``$ `` lines, python blocks go to ``python -``."""
        if self.lang == "console":
            return "\n".join(line[2:] for line in self.body.splitlines() if line.startswith("$ "))
        if self.lang == "python":
            return f"python - <<'PYTHON_BLOCK'\n{self.body}\nPYTHON_BLOCK"
        return "\n".join(line.removeprefix(SETUP) for line in self.body.splitlines())


def blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = re.match(r"^```(\S*)\s*$", lines[i])
        if not opening:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        before = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        marker = MARKER.fullmatch(before)
        found.append(Block(path, i + 1, opening.group(1), marker.group(1) if marker else None,
                           "\n".join(lines[i + 1:end])))
        i = end + 1
    return found


def run_blocks() -> list[Block]:
    return [b for doc in DOCS for b in blocks(doc) if b.marker == "run"]


def table_commands() -> list[str]:
    """The backticked commands in the "command" column of README's "After the shards" table."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## After the shards", 1)[1].split("\n## ", 1)[0]
    commands = []
    for row in section.splitlines():
        cells = re.split(r"(?<!\\)\|", row)
        if len(cells) < 4 or set(cells[2].strip()) <= {"-"}:
            continue
        commands += [c for c in re.findall(r"`([^`]+)`", cells[2]) if c.startswith(("sodadata ", "python -m "))]
    return commands


def test_every_shell_block_in_the_docs_says_whether_it_is_run() -> None:
    unmarked = [b.where for doc in DOCS for b in blocks(doc) if b.lang in SHELL and b.marker is None]
    assert not unmarked, f"mark these blocks <!-- run --> or <!-- not run: REASON --> (tests/test_docs.py): {unmarked}"
    readme = [b for b in run_blocks() if b.file.name == "README.md"]
    assert len(readme) >= 3 and readme[0].body.startswith("# 1. Set up")
    assert len(table_commands()) >= 8


def _help(module: str, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        importlib.import_module(f"sodadata.recipes.{module}").main(["--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("module", RECIPES)
def test_recipe_help_examples_run_offline_in_the_readme_or_name_the_real_corpus(module: str, capsys) -> None:
    """The sample example of each ``--help`` is a command of README's run blocks (so the README test runs it as
    printed); the others read the real corpus (network), which a test cannot: they are parsed as the CLI does."""
    examples = [line.strip() for line in _help(module, capsys).splitlines()
                if line.strip().startswith(f"python -m sodadata.recipes.{module} ")]
    readme_lines = {line.strip() for b in run_blocks() for line in b.script().splitlines()}
    offline = [e for e in examples if "--source sample/" in e]
    assert len(offline) == 1 and len(examples) >= 2, examples
    for example in examples:
        argv = shlex.split(example, comments=True)[3:]
        mod = importlib.import_module(f"sodadata.recipes.{module}")
        recipe_cls = next(v for v in vars(mod).values()
                          if isinstance(v, type) and issubclass(v, Recipe) and v.__module__ == mod.__name__)
        args = cli_recipe.build_parser(recipe_cls, module, "").parse_args(argv)
        recipe_cls.from_args(args)  # the recipe's own checks of its options
        if example in offline:
            assert example in readme_lines, f"{example!r} is not run by README's blocks"
            assert (REPO / args.source).is_dir()


def _words(line: str) -> tuple[str, ...]:
    """A command line's words without its comment (a line that is not one command gives itself)."""
    try:
        return tuple(shlex.split(line, comments=True))
    except ValueError:
        return (line,)


def fresh_checkout(dest: Path) -> Path:
    """The checkout's files as git sees them (tracked and new, not ignored), the built C loop, and ``.venv``."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if not src.exists() and not src.is_symlink():  # deleted in the work tree, not yet committed
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            (dest / rel).symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, dest / rel)
    for built in (REPO / "sodadata").rglob("_codes*.so"):  # ignored by git, made by `pip install -e`
        shutil.copy2(built, dest / built.relative_to(REPO))
    (dest / ".venv").symlink_to(sys.prefix)
    return dest


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_readme_and_docs_commands_run_as_printed(tmp_path) -> None:
    if sys.prefix == sys.base_prefix or not (Path(sys.prefix) / "bin" / "activate").is_file():
        pytest.skip("the README's commands use the project's virtualenv (.venv): run the tests inside one")
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("a fresh copy of the checkout is made from git's file list")
    checkout = fresh_checkout(tmp_path / "checkout")
    parts = ["set -eo pipefail"]
    ran: set[tuple[str, ...]] = set()
    for block in run_blocks():
        parts += [f"echo '>>> {block.where}' >&2", block.script()]
        ran.update(_words(line) for line in block.script().splitlines())
    for command in table_commands():
        if _words(command) not in ran:  # the table repeats some walkthrough commands: those already ran as printed
            parts += [f"echo '>>> README.md table: {command}' >&2", command]
    script = tmp_path / "docs.sh"
    script.write_text("\n".join(parts) + "\n")
    # The copy's code, not the checkout this test runs from (an editable install points there); nothing from the
    # Hub (offline is what the README promises: any Hub access would fail at once).
    env = {**os.environ, "PYTHONPATH": str(checkout), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "MPLBACKEND": "Agg"}
    done = subprocess.run(["bash", str(script)], cwd=checkout, env=env, capture_output=True, text=True,
                          timeout=1400)
    assert done.returncode == 0, f"{done.stderr[-6000:]}\n{done.stdout[-3000:]}"

    out = checkout / "out" / "sample"
    for component in ("emilia/en", "emilia-yodas/en", "yodas2/en", "mls/en", "nemotron-cc/hq-actual"):
        assert list((out / component).glob("*.json")), f"no finished shard of {component}"
    assert "5 components, 6 shards, 26 rows" in done.stdout  # sodadata validate: every sample shard, clean
    assert "{'yodas2/en': 0.52, 'emilia-yodas/en': 0.29, 'emilia/en': 0.14, 'nemotron-cc/hq-actual': 0.05}" in done.stdout
    assert '"base": "bytes"' in (checkout / "tok" / "tokenizer_config.json").read_text()
    assert (checkout / "ckpt" / "sample" / "step_00000003").is_dir()
    assert (checkout / "report" / "index.html").is_file() and (checkout / "row.wav").is_file()
    assert "data:\n  tokenizer:" in done.stdout  # the Levanter config
