#!/usr/bin/env bash
# Prints, on one line, the Debian/Ubuntu packages that scripts/install.sh needs and this machine
# lacks (nothing when all are there). `scripts/prereqs.sh test` adds what the tests need.
#   python3 3.11+, with venv and ensurepip  python3 python3-venv
#   a C/C++ toolchain and CMake             build-essential cmake   (only while the llama.cpp wheel
#                                                                     is not cached: scripts/install.sh)
#   Debian's chromium and a font (browser tests)  chromium fonts-liberation
#   Redis (the shared session store's tests)      redis-server
#   FFmpeg's libraries (`scripts/install.sh xtts`)  ffmpeg
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/llama_wheel.sh
missing=()
if ! command -v python3 >/dev/null; then
  missing+=(python3 python3-venv)
elif ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  missing+=(python3-venv)
fi
if ! ls "$LLAMA_WHEELS"/"$LLAMA_WHEEL_GLOB" >/dev/null 2>&1; then
  { command -v cc && command -v c++ && command -v make; } >/dev/null || missing+=(build-essential)
  command -v cmake >/dev/null || missing+=(cmake)
fi
[ "${1:-}" = "test" ] && [ ! -x /usr/bin/chromium ] && missing+=(chromium fonts-liberation)
# the session store on a cluster: tests start a real redis-server (tests/redis_server.py)
[ "${1:-}" = "test" ] && ! command -v redis-server >/dev/null && missing+=(redis-server)
# torchaudio (through torchcodec) loads reference clips with the system's FFmpeg libraries
[ "${1:-}" = "xtts" ] && ! command -v ffmpeg >/dev/null && missing+=(ffmpeg)
echo "${missing[*]}"
