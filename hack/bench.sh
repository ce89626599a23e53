#!/usr/bin/env bash
# `make bench`: benchmarks the operator (benches/operator/) on a local control plane of its own,
# in run dir $BENCH_RUN_DIR (default ~/.cache/canary-operator/run-bench), so that neither the
# development cluster's contents nor the bench's load disturb each other. hack/use-cluster.sh
# starts that cluster when it is not healthy and stops it afterwards. BENCH_N, BENCH_SHIFTS,
# BENCH_STEADY_SECONDS, BENCH_TIMEOUT_SECONDS, BENCH_ROLLING and BENCH_ROLLING_SECONDS tune the run,
# BENCH_ONLY=rolling runs only the rolling phase (benches/operator/main.rs lists every setting);
# extra arguments go to `cargo bench`. The rolling phase needs `prometheus`, on the PATH set here.
set -euo pipefail
cd "$(dirname "$0")/.."

export CANARY_RUN_DIR=${BENCH_RUN_DIR:-${CANARY_CACHE:-$HOME/.cache/canary-operator}/run-bench}
# The rolling phase's Prometheus, and the rest, besides what the cluster runs.
hack/build-tools.sh >/dev/null

# shellcheck source=hack/use-cluster.sh
. hack/use-cluster.sh
# A cluster stopped afterwards needs no cleaning up; a reused one gets the bench's objects removed.
if [ "$cluster_started" = 1 ]; then export BENCH_CLEANUP=0; fi
# The bench profile is the release profile: cargo builds the operator binary optimised, as it ships.
cargo bench --bench operator "$@"
