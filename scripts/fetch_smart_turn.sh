#!/usr/bin/env bash
# Puts Smart Turn v3.2's CPU ONNX model (Pipecat, BSD-2-Clause) where the endpointer looks for it
# (serve_app/turn_model.py: $AVATAR_CACHE/smart-turn/, scripts/cache_dir.sh), taken from the
# pipecat-ai wheel on PyPI without installing pipecat-ai or its dependencies. Idempotent; checks
# the file's SHA-256, and copies the wheel's LICENSE beside it. Provenance: docs/architecture.md,
# "Turn-taking".
#   scripts/fetch_smart_turn.sh [python]   (the python whose pip downloads; default python3)
set -euo pipefail
py="${1:-python3}"
version=1.14.0
member=pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx
sha256=2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f
. "$(dirname "${BASH_SOURCE[0]}")/cache_dir.sh"
dest="$AVATAR_CACHE/smart-turn"
model="$dest/$(basename "$member")"
if [ -f "$model" ] && echo "$sha256  $model" | sha256sum -c --quiet - 2>/dev/null; then
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$py" -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "pipecat-ai==$version"
mkdir -p "$dest"
"$py" - "$tmp"/pipecat_ai-"$version"-*.whl "$member" "$dest" <<'PY'
import sys, zipfile
from pathlib import Path

wheel, member, dest = sys.argv[1], sys.argv[2], Path(sys.argv[3])
with zipfile.ZipFile(wheel) as z:
    licence = next(n for n in z.namelist() if n.endswith(".dist-info/licenses/LICENSE"))
    (dest / "LICENSE").write_bytes(z.read(licence))
    (dest / (Path(member).name + ".partial")).write_bytes(z.read(member))
PY
echo "$sha256  $model.partial" | sha256sum -c --quiet -
mv "$model.partial" "$model"
echo "Smart Turn v3.2 from pipecat-ai $version -> $model"
