#!/usr/bin/env bash
# `make bench`: benchmarks the operator (benches/operator/) on a local control plane of its own,
# in run dir $BENCH_RUN_DIR (default ~/.cache/canary-operator/run-bench), so that neither the
# development cluster's contents nor the bench's load disturb each other. Starts that cluster when
# it is not healthy and stops it afterwards, also on failure or interrupt; a cluster that was
# already running is left as it was. BENCH_N, BENCH_SHIFTS, BENCH_STEADY_SECONDS and
# BENCH_TIMEOUT_SECONDS tune the run; extra arguments go to `cargo bench`.
set -euo pipefail
cd "$(dirname "$0")/.."

export CANARY_RUN_DIR=${BENCH_RUN_DIR:-${CANARY_CACHE:-$HOME/.cache/canary-operator}/run-bench}

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
hack/cluster.sh up
eval "$(hack/cluster.sh env)"
# A cluster stopped afterwards needs no cleaning up; a reused one gets the bench's objects removed.
if [ "$started" = 1 ]; then export BENCH_CLEANUP=0; fi
# The bench profile is the release profile: cargo builds the operator binary optimised, as it ships.
cargo bench --bench operator "$@"
