#!/usr/bin/env bash
# The real Levanter, in both config schemas, for tests/test_levanter.py (or for checking an export by hand).
# Everything goes under DIR (default .cache/levanter, ignored by git) and is made once: each part is rebuilt only
# if its `.done` marker is missing.
#
#   DIR/current  virtual environment with marin-levanter (Levanter as developed in the Marin repository)
#   DIR/1.2      virtual environment with levanter 1.2 (the last standalone release)
#   DIR/python   CPython 3.13, built from Debian's source package, only where no Python 3.12+ is installed
#                (marin-levanter needs one; Debian 12 ships 3.11; pyenv's 3.12/3.13 are used where present)
#
# Override the pinned versions with SODADATA_MARIN_LEVANTER / SODADATA_LEVANTER_12 (pip requirement strings).
set -euo pipefail
DIR=${1:-.cache/levanter}
MARIN_LEVANTER=${SODADATA_MARIN_LEVANTER:-marin-levanter==0.2.227.dev40316220070}
# 1.2 was only ever published as dev builds; this is the last one. It imports gitpython and chex without
# declaring them.
LEVANTER_12=${SODADATA_LEVANTER_12:-levanter==1.2.dev1644}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
exec 9>"$DIR/.lock"
flock 9  # one builder at a time; a second caller waits and then finds everything done

log() { echo "levanter_envs: $*" >&2; }

python312() {
  # A Python >= 3.12 that runs: on PATH, or installed by pyenv but not selected (its shims then refuse to run).
  local p candidates=(python3.14 python3.13 python3.12)
  if command -v pyenv >/dev/null 2>&1; then
    candidates+=("$(pyenv root)"/versions/3.1[2-9]*/bin/python3)
  fi
  for p in "${candidates[@]}"; do
    if "$p" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
      command -v "$p"; return
    fi
  done
  if [ ! -f "$DIR/python/.done" ]; then
    build_python
  fi
  echo "$DIR/python/bin/python3.13"
}

build_python() {
  # Debian's next release (trixie) has python3.13; its source package builds on this one. The mirror is the one
  # this machine's apt already uses; the lists go to a temporary folder, so the system's apt setup is untouched.
  local mirror work
  mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
  work=$(mktemp -d)
  chmod 755 "$work"  # apt downloads as its own user
  mkdir -p "$work/lists/partial" "$work/archives/partial"
  echo "deb-src $mirror trixie main" >"$work/sources.list"
  local apt=(apt-get -qq -o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
             -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::archives=$work/archives")
  log "building CPython 3.13 from Debian's source package into $DIR/python (a few minutes)"
  "${apt[@]}" update
  (cd "$work" && "${apt[@]}" --download-only source python3.13 >/dev/null)
  tar xJf "$work"/python3.13_*.orig.tar.xz -C "$work"
  rm -rf "$DIR/python"
  (cd "$work"/Python-3.13.* && ./configure -q --prefix="$DIR/python" >/dev/null \
     && make -s -j"$(nproc)" >/dev/null 2>"$work/make.log" && make -s install >/dev/null 2>>"$work/make.log") \
    || { tail -20 "$work/make.log" >&2; exit 1; }
  rm -rf "$work"
  "$DIR/python/bin/python3.13" -c "import ssl, zlib, lzma, bz2, sqlite3, ctypes"
  touch "$DIR/python/.done"
}

venv() {  # venv DIR PYTHON REQUIREMENT...
  local dir=$1 py=$2
  shift 2
  [ -f "$dir/.done" ] && return
  log "installing $* into $dir"
  rm -rf "$dir"
  "$py" -m venv "$dir"
  # (this machine's pip configuration names local indexes that may not exist: drop its warnings about them)
  "$dir/bin/python" -m pip install -q --upgrade pip 2>&1 | { grep -v "is ignored: it is neither" || true; } >&2
  "$dir/bin/python" -m pip install -q "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; } >&2
  touch "$dir/.done"
}

PY312=$(python312)
venv "$DIR/current" "$PY312" "$MARIN_LEVANTER"
venv "$DIR/1.2" "${PYTHON:-python3}" "$LEVANTER_12" gitpython chex
log "ready: $DIR/current ($("$DIR/current/bin/python" -m pip show marin-levanter 2>/dev/null | awk '/^Version/ {print $2}')), $DIR/1.2 ($("$DIR/1.2/bin/python" -m pip show levanter 2>/dev/null | awk '/^Version/ {print $2}'))"
