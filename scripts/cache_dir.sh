# Sourced by the other scripts: the one place the shell spells out where what is fetched or built
# once is kept, outside the checkout (the llama.cpp wheel, the turn model, the vLLM conversion).
# The same directory as avatar_core/config.py's model_cache() (tests/test_scripts.py checks).
AVATAR_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/talking-avatar"
