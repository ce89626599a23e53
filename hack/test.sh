#!/usr/bin/env bash
# Runs every test target against the local control plane, started and stopped by
# hack/use-cluster.sh when none is running. Extra arguments go to `cargo test`; CARGO_TEST_TARGETS
# (default --all-targets) narrows the test targets, e.g. "--test install" for `make chart-test`.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/install-deps.sh
# Every tool the tests run (helm, Prometheus, istioctl, xdsroutes), not only the cluster's.
hack/build-tools.sh >/dev/null

# CI keeps the end of a failed run's output: there a failing test's panic message must be the last
# thing it printed, not followed by a backtrace dozens of lines long.
if [ "${CI:-}" = true ]; then
  export RUST_BACKTRACE=0
fi

# shellcheck source=hack/use-cluster.sh
. hack/use-cluster.sh
# shellcheck disable=SC2086 # one word per cargo option
cargo test ${CARGO_TEST_TARGETS:---all-targets} "$@"
