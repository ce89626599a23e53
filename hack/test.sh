#!/usr/bin/env bash
# Runs every test target against the local control plane. Starts the cluster when none is healthy
# and stops it again afterwards, also when the tests fail or are interrupted; a cluster that was
# already running is left as it was. Extra arguments go to `cargo test`; CARGO_TEST_TARGETS
# (default --all-targets) narrows the test targets, e.g. "--test install" for `make chart-test`.
set -euo pipefail
cd "$(dirname "$0")/.."

started=0
cleanup() {
  if [ "$started" = 1 ]; then hack/cluster.sh down || true; fi
}
trap cleanup EXIT
# Turn signals into a normal exit so the EXIT trap runs.
trap 'exit 130' INT
trap 'exit 143' TERM

if ! hack/cluster.sh status >/dev/null 2>&1; then
  # Set before `up` so that a half-started cluster is cleaned up too.
  started=1
fi
# Also for a running cluster: `up` then re-applies crd/, which may have changed since it started.
hack/cluster.sh up
eval "$(hack/cluster.sh env)"
# shellcheck disable=SC2086 # one word per cargo option
cargo test ${CARGO_TEST_TARGETS:---all-targets} "$@"
