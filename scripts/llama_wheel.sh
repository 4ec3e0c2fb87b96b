# Sourced by scripts/install.sh, scripts/prereqs.sh and scripts/install-vllm.sh: where the
# llama-cpp-python wheel is cached.
. "$(dirname "${BASH_SOURCE[0]}")/cache_dir.sh"
LLAMA_VERSION=0.3.36
LLAMA_WHEELS="$AVATAR_CACHE/wheels"
LLAMA_WHEEL_GLOB="llama_cpp_python-${LLAMA_VERSION}-*.whl"
