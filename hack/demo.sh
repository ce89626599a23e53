#!/usr/bin/env bash
# `make demo`: the lab, end to end, on the local control plane. Starts the cluster (reused if it
# is already up), installs the CRDs, builds and runs the operator, applies the lab's example,
# then shifts the canary from 25% to 50% and shows the VirtualService follow.
# The operator is stopped at the end; the cluster is left running (`make cluster-down` stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib.sh
. hack/lib.sh

ns=azureopenai
release=azureopenaichat

# The operator builds while the cluster starts (on a fresh machine both take minutes). The lab
# needs no istiod: a cluster started here runs without it, and `make demo-rollout` adds it.
build_log=$(mktemp)
say "Building the operator (in the background, log: $build_log)"
cargo build --quiet --bin canary-operator >"$build_log" 2>&1 &
build=$!
trap 'kill "$build" 2>/dev/null || true' EXIT
CANARY_ISTIOD=${CANARY_ISTIOD:-false} demo_cluster cluster
say "Waiting for the operator's build"
if ! wait "$build"; then
  cat "$build_log" >&2
  exit 1
fi
rm -f "$build_log"

say "Installing the CanaryRelease CRD (Istio's CRDs were installed with the cluster)"
install_canary_crd

say "Creating namespace $ns and the Secret with the API key (a demo value; the lab kept it in a ConfigMap)"
demo_namespace "$ns"
# The lab claims every host (*) on the ingress gateway; so does `make demo-rollout`'s release. Two
# releases must not share a host (the later one would be HostConflict), so that one goes first.
make_way_for "$ns" rollout-demo "$release" "make demo-rollout's"

run_dir=$(dirname "$KUBECONFIG")
log=$run_dir/demo-operator.log
read -r http_port < <(free_ports 1)
say "Starting the operator for namespace $ns (log: $log)"
./target/debug/canary-operator --namespace "$ns" --http-address "127.0.0.1:$http_port" >"$log" 2>&1 &
operator=$!
trap 'kill "$operator" 2>/dev/null || true; wait "$operator" 2>/dev/null || true' EXIT

say "Applying examples/lab.yaml: one CanaryRelease instead of the lab's eight manifests"
sed -n '/^apiVersion/,$p' examples/lab.yaml
kubectl apply --server-side -f examples/lab.yaml

say "Waiting until the release is Ready (both versions rolled out, pods Ready through kwok)"
if ! kubectl -n "$ns" wait "canaryrelease/$release" --for=condition=Ready --timeout=120s; then
  kubectl -n "$ns" describe "canaryrelease/$release"
  echo "operator log:"; tail -n 30 "$log"
  exit 1
fi
kubectl -n "$ns" get canaryreleases -o wide

say "What the operator created (every object of the lab, owned by the release)"
kubectl -n "$ns" get configmaps,deployments,horizontalpodautoscalers,services,pods \
  -l "app.kubernetes.io/instance=$release"
kubectl -n "$ns" get destinationrules.networking.istio.io,virtualservices.networking.istio.io,gateways.networking.istio.io \
  -l "app.kubernetes.io/instance=$release"

weights() {
  kubectl -n "$ns" get "virtualservices.networking.istio.io/$release" \
    -o jsonpath='{range .spec.http[0].route[*]}{.destination.subset}={.weight}% {end}'
}
echo
echo "VirtualService $release routes: $(weights)"

say "Shifting traffic: spec.weight 25 -> 50 (what \`kubectl edit\` of one number does)"
start=$(date +%s%N)
kubectl -n "$ns" patch "canaryrelease/$release" --type merge -p '{"spec":{"weight":50}}'
for _ in $(seq 1 100); do
  [ "$(weights)" = "v1=50% v2=50% " ] && break
  sleep 0.05
done
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "VirtualService $release routes: $(weights)  (followed within ${elapsed_ms} ms, including kubectl's own start-up)"
kubectl -n "$ns" wait "canaryrelease/$release" --for=jsonpath='{.status.canaryWeight}'=50 --timeout=30s >/dev/null
kubectl -n "$ns" get canaryreleases -o wide

say "kubectl describe: status conditions and Events"
kubectl -n "$ns" describe "canaryrelease/$release" | sed -n '/^Status:/,$p'

say "Done. The cluster is still running: eval \$(make -s cluster-env) to use it, make cluster-down to stop it."
