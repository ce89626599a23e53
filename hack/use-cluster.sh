# shellcheck shell=bash
# Sourced (not run) by hack/test.sh and hack/bench.sh from the repository root: brings up the local
# control plane in $CANARY_RUN_DIR when none is healthy there, and stops it again when the sourcing
# script exits, also on failure or interrupt. A cluster that was already running is left as it was,
# though `up` re-applies crd/, which may have changed since it started. Afterwards KUBECONFIG and
# PATH point at the cluster, and $cluster_started says whether this script started it (1) or not (0).

cluster_started=0
stop_started_cluster() {
  if [ "$cluster_started" = 1 ]; then hack/cluster.sh down || true; fi
}
trap stop_started_cluster EXIT
# Turn signals into a normal exit so the EXIT trap runs.
trap 'exit 130' INT
trap 'exit 143' TERM

if ! hack/cluster.sh status >/dev/null 2>&1; then
  # Set before `up` so that a half-started cluster is cleaned up too.
  cluster_started=1
fi
hack/cluster.sh up
eval "$(hack/cluster.sh env)"
