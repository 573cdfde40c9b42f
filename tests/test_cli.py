import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from sodadata import cli


def test_top_level_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out
    assert cli.main(["no-such-command"]) == 2


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_has_a_main_and_a_help(name, capsys):
    module = importlib.import_module(cli.COMMANDS[name][0])
    assert callable(module.main)
    argv = [name, "--help"]
    if name in ("tokenizer",):
        argv = [name, "build", "--help"]
    if name == "export":
        argv = [name, "levanter", "--help"]
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 0
    assert "usage" in capsys.readouterr().out.lower()


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "sodadata"
    assert script.exists(), "pip install -e . installs the `sodadata` console script"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "validate" in done.stdout
