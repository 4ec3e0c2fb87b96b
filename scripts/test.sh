#!/usr/bin/env bash
# The test command (README; .ci/run calls exactly this): installs what each test group needs, then
# runs them. The main suite runs in ./.venv; the GPU backends' real code runs on CPU in venvs of
# their own, because their torch builds cannot share one (scripts/install.sh says why).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh test
scripts/install.sh llm-large  # the optional larger LLMs (1.6 GB), so their test runs too
scripts/install.sh xtts
scripts/install.sh vllm
.venv/bin/python -m pytest "$@"
# The first GPU machine's check, on CPU in the environments above, so it cannot rot (about 3 minutes;
# the lock check and the wheel install that serves a turn are tests in the suite above).
scripts/gpu_check.sh --cpu
.venv-xtts/bin/python -m pytest -m xtts tests/test_xtts.py
.venv-vllm/bin/python -m pytest -m vllm tests/test_vllm.py
