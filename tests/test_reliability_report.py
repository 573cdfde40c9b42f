"""RELIABILITY.md is written by the tests that measure it.

Each reliability test builds its table and calls :func:`publish` with a section name. With
``SODADATA_WRITE_RELIABILITY=1`` in the environment the section between ``<!-- BEGIN name -->`` and
``<!-- END name -->`` in RELIABILITY.md is replaced by it; otherwise the table goes to
``.pytest_cache/reliability/<name>.md`` only, so an ordinary test run never edits a tracked file.

    SODADATA_WRITE_RELIABILITY=1 python -m pytest tests/test_validate.py tests/test_reliability*.py tests/test_hostile*.py
"""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "RELIABILITY.md"
SCRATCH = REPO / ".pytest_cache" / "reliability"
WRITE = os.environ.get("SODADATA_WRITE_RELIABILITY") == "1"


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A Markdown table; ``|`` and newlines inside cells are escaped."""

    def cell(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def publish(name: str, markdown: str) -> None:
    """Record section ``name`` (see module docstring)."""
    SCRATCH.mkdir(parents=True, exist_ok=True)
    (SCRATCH / f"{name}.md").write_text(markdown + "\n", encoding="utf-8")
    if not WRITE:
        return
    doc = DOC.read_text(encoding="utf-8")
    pattern = re.compile(rf"(<!-- BEGIN {re.escape(name)} -->\n).*?(<!-- END {re.escape(name)} -->)", re.S)
    if not pattern.search(doc):
        raise AssertionError(f"RELIABILITY.md has no section {name!r} (<!-- BEGIN {name} --> ... <!-- END {name} -->)")
    DOC.write_text(pattern.sub(lambda m: m[1] + markdown.rstrip("\n") + "\n" + m[2], doc), encoding="utf-8")


def test_every_section_of_reliability_md_is_published_by_a_test():
    """Each generated section is named in some test's publish() call, and each named test exists."""
    doc = DOC.read_text(encoding="utf-8")
    sections = re.findall(r"<!-- BEGIN ([a-z0-9-]+) -->", doc)
    assert sections, "RELIABILITY.md has no generated sections"
    sources = "".join(p.read_text(encoding="utf-8") for p in sorted(REPO.glob("tests/test_*.py")))
    for name in sections:
        assert re.search(rf"publish\(\s*[\"']{re.escape(name)}[\"']", sources), f"no test publishes {name!r}"
    for test in set(re.findall(r"`(tests/test_[a-z_]+\.py)::(test_[a-z0-9_]+)", doc)):
        path, func = test
        assert f"def {func}(" in (REPO / path).read_text(encoding="utf-8"), f"{path}::{func} does not exist"
