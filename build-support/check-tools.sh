#!/usr/bin/env bash
# What a fresh machine needs besides the package registry, checked before `make setup` / `make test` install
# anything: one line per missing tool, with the command that installs it. Fails only for what the set-up cannot
# do without: Python 3.10+ with venv, and (unless the llama.cpp wheel is already built: --wheel-cached) a C and a
# C++ compiler for llama-cpp-python, which PyPI ships only as source. CMake and Ninja need no install: when they
# are missing, the build backend (scikit-build-core) fetches them from PyPI into its build environment. Chromium
# is for the HTML screenshot test only (`make test` installs Debian's where apt-get runs as root).
set -u
wheel_cached=no
[ "${1:-}" = "--wheel-cached" ] && wheel_cached=yes
missing=0
say() { echo "check-tools: $*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }
any() { for t in "$@"; do have "$t" && return 0; done; return 1; }

if ! have python3 || ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  say "missing: Python 3.10 or newer as python3; install it: apt-get install python3 python3-venv"; missing=1
elif ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  say "missing: Python's venv module (make setup creates .venv); install it: apt-get install python3-venv"; missing=1
fi
if [ "$wheel_cached" = no ]; then
  any cc gcc clang || { say "missing: a C compiler to build llama-cpp-python (the llamacpp extra); install one: apt-get install build-essential (macOS: xcode-select --install)"; missing=1; }
  any c++ g++ clang++ || { say "missing: a C++ compiler to build llama-cpp-python (the llamacpp extra); install one: apt-get install g++ (macOS: xcode-select --install)"; missing=1; }
  any cmake || say "note: no cmake on PATH; the llama.cpp build fetches CMake from PyPI instead (or: apt-get install cmake)"
fi
any chromium chromium-browser || say "note: no chromium; tests/unit/test_report_browser.py needs it: apt-get install chromium (make test does this where apt-get runs as root)"
exit $missing
