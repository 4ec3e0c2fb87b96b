# Sourced by scripts/install.sh and scripts/prereqs.sh: where the llama-cpp-python wheel is cached.
LLAMA_VERSION=0.3.36
LLAMA_WHEELS="${XDG_CACHE_HOME:-$HOME/.cache}/talking-avatar/wheels"
LLAMA_WHEEL_GLOB="llama_cpp_python-${LLAMA_VERSION}-*.whl"
