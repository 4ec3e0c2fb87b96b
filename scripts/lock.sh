#!/usr/bin/env bash
# The node images' lock files, resolved from pyproject.toml with hashes for the images' platform
# (linux x86_64, glibc 2.28+, CPython 3.11: rayproject/ray:2.60.0-py311) by uv, from PyPI metadata
# only (no wheel is downloaded, nothing is built: locks/uv.toml states the two sdists' metadata).
#   serve  locks/serve.txt  the project + `llm`: head, cpu_front and l4_llm nodes (clusters/image/serve.Dockerfile)
#   media  locks/media.txt  the project + `gpu` + `ditto`: l4_media nodes (clusters/image/media.Dockerfile)
# The project itself is not in a lock: an image installs the lock with --require-hashes, then the
# project's wheel with --no-deps.
#   scripts/lock.sh          rewrite locks/*.txt, keeping every pin that still satisfies pyproject.toml
#   scripts/lock.sh --check  the same into a scratch copy; exit 1 naming each lock that would change
#                            (stale against pyproject.toml) or does not resolve (tests/test_locks.py)
#   scripts/lock.sh --upgrade  re-resolve every pin to the newest allowed
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/cache_dir.sh
UV_VERSION=0.13.9
tools="$AVATAR_CACHE/tools/uv-$UV_VERSION"
if [ ! -x "$tools/bin/uv" ]; then
  python3 -m venv "$tools"
  "$tools/bin/python" -m pip install -q "uv==$UV_VERSION"
fi
mode="${1:-}"
case "$mode" in ""|--check|--upgrade) ;; *) echo "usage: $0 [--check|--upgrade]" >&2; exit 2 ;; esac

declare -A EXTRAS=([serve]="llm" [media]="gpu ditto")
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
status=0
for role in serve media; do
  lock="locks/$role.txt"
  out="$lock"
  if [ "$mode" = --check ]; then
    out="$scratch/$role.txt"
    [ -f "$lock" ] && cp "$lock" "$out"
  fi
  args=()
  for extra in ${EXTRAS[$role]}; do args+=(--extra "$extra"); done
  [ "$mode" = --upgrade ] && args+=(--upgrade)
  # A cache of this run's own: afterwards it must hold no source distribution (metadata only).
  if ! UV_CACHE_DIR="$scratch/cache" "$tools/bin/uv" pip compile pyproject.toml "${args[@]}" \
      --config-file locks/uv.toml --generate-hashes --quiet \
      --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
      --custom-compile-command "scripts/lock.sh" --output-file "$out" 2>"$scratch/$role.err"; then
    echo "$lock does not resolve:" >&2
    cat "$scratch/$role.err" >&2
    status=1
    continue
  fi
  if compgen -G "$scratch/cache/sdists-*/*/*" >/dev/null; then
    echo "$lock: resolving it downloaded source distributions ($(ls "$scratch"/cache/sdists-*/*/ | tr '\n' ' '));" \
      "state their metadata in locks/uv.toml" >&2
    status=1
  fi
  if [ "$mode" = --check ]; then
    if [ ! -f "$lock" ]; then
      echo "$lock is missing: run scripts/lock.sh" >&2
      status=1
    elif ! diff -u "$lock" "$out" >"$scratch/$role.diff"; then
      echo "$lock is stale against pyproject.toml (run scripts/lock.sh and commit it):" >&2
      grep -E '^[-+][A-Za-z0-9]' "$scratch/$role.diff" | head -40 >&2  # the pins that would change
      status=1
    fi
  fi
done
exit $status
