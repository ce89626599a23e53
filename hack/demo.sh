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

demo_cluster

say "Building the operator"
cargo build --quiet --bin canary-operator

say "Installing the CanaryRelease CRD (Istio's CRDs were installed with the cluster)"
install_canary_crd

say "Creating namespace $ns and the Secret with the API key (a demo value; the lab kept it in a ConfigMap)"
demo_namespace "$ns"

run_dir=$(dirname "$KUBECONFIG")
log=$run_dir/demo-operator.log
say "Starting the operator (log: $log)"
./target/debug/canary-operator >"$log" 2>&1 &
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
