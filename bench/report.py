"""Shared by the bench/ scripts: machine facts, a printed table, and one section of BENCHMARKS.md per script.

Each script owns the section between ``<!-- bench:NAME -->`` markers and rewrites only that, so scripts can be
rerun independently and their figures stay side by side in one file.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
from collections.abc import Sequence
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nEach section is written by the script named in it: `python bench/<name>.py` reproduces it.\n"


def machine() -> dict:
    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    for mod in ("transformers", "pyarrow", "numpy", "soxr", "soundfile", "jax"):
        try:
            info[mod] = __import__(mod).__version__
        except (ImportError, AttributeError):
            pass
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A Markdown table (also readable when printed)."""

    def fmt(v) -> str:
        if isinstance(v, float):
            return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = lambda vals: "| " + " | ".join(str(v).ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


def write_section(name: str, title: str, body: str, path: Path = BENCHMARKS_MD, command: str | None = None) -> None:
    """Replace (or append) this script's section of BENCHMARKS.md, stamped with the machine it ran on.

    ``command`` names what reproduces the section when it is not ``python bench/<name>.py`` (a script with two
    sections, each rerun on its own)."""
    facts = ", ".join(f"{k} {v}" for k, v in machine().items())
    command = command or f"python bench/{name}.py"
    section = f"<!-- bench:{name} -->\n## {title}\n\n`{command}` — {facts}\n\n{body.strip()}\n<!-- /bench:{name} -->"
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def publish(name: str, title: str, body: str, write: bool, command: str | None = None) -> int:
    """How every script ends: print its section's body and, when ``write``, make it the script's section of
    BENCHMARKS.md (:func:`write_section`). Returns 0, the script's exit status."""
    print(body)
    if write:
        write_section(name, title, body, command=command)
    return 0
