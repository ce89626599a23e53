# Istio's control plane, for hack/cluster.sh (sourced, never run): whether istiod runs, the ingress
# gateway workloads it programs, and starting it, also in a running cluster.
# shellcheck shell=bash disable=SC2154 # run, here: set by hack/cluster.sh, which sources this

with_istiod() { [[ " ${components[*]} " == *" istiod "* ]]; }

# The ingress gateway's pods as the AKS Istio add-on labels them (the external gateway, in
# aks-istio-ingress), and as upstream Istio's default install does (istio-system): kwok pods, so
# Gateway selectors match a workload as in a real cluster and `istioctl analyze` checks the
# Gateways' ports against their Services. No proxy runs in them: xdsroutes plays their Envoy.
gateway_workloads() {
  local gw ns name label
  for gw in aks-istio-ingress/aks-istio-ingressgateway-external/aks-istio-ingressgateway-external \
    istio-system/istio-ingressgateway/ingressgateway; do
    IFS=/ read -r ns name label <<<"$gw"
    cat <<EOF
---
apiVersion: v1
kind: Namespace
metadata: {name: $ns}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: $name, namespace: $ns, labels: {app: $name, istio: $label}}
spec:
  replicas: 1
  selector: {matchLabels: {app: $name, istio: $label}}
  template:
    metadata: {labels: {app: $name, istio: $label}}
    spec:
      containers:
      - name: istio-proxy
        image: istio/proxyv2:not-pulled-kwok-runs-no-image
        ports:
        - {containerPort: 8080, name: http2}
        - {containerPort: 8443, name: https}
---
apiVersion: v1
kind: Service
metadata: {name: $name, namespace: $ns, labels: {app: $name, istio: $label}}
spec:
  selector: {app: $name, istio: $label}
  ports:
  - {name: http2, port: 80, targetPort: 8080}
  - {name: https, port: 443, targetPort: 8443}
EOF
  done
}

# istiod as a local process: plaintext xDS only (no secure port, no webhook server, no CA: nothing
# here connects with certificates), every address on 127.0.0.1 at a free port.
start_istiod() {
  local http grpc monitoring
  read -r http grpc monitoring < <(free_ports 3)
  [ -n "$monitoring" ] || fail istiod "could not pick free ports on 127.0.0.1"
  echo "$http" >"$run/ports/istiod"
  echo "$grpc" >"$run/ports/istiod-xds"
  echo "$monitoring" >"$run/ports/istiod-monitoring"
  mkdir -p "$run/istiod"
  # rootNamespace is where istiod reads mesh-wide configuration, as in AKS's add-on.
  printf '%s\n' "rootNamespace: istio-system" "trustDomain: cluster.local" >"$run/istiod/mesh.yaml"
  echo "networks: {}" >"$run/istiod/meshNetworks.yaml"
  start istiod env POD_NAMESPACE=istio-system POD_NAME=istiod-local REVISION=default ENABLE_CA_SERVER=false \
    "$bin/pilot-discovery" discovery --kubeconfig="$run/kubeconfig" \
    --meshConfig="$run/istiod/mesh.yaml" --networksConfig="$run/istiod/meshNetworks.yaml" \
    --httpAddr="127.0.0.1:$http" --grpcAddr="127.0.0.1:$grpc" --monitoringAddr="127.0.0.1:$monitoring" \
    --httpsAddr= --secureGRPCAddr= --profile=false --log_output_level=all:warn
}

# Whether istiod should run (CANARY_ISTIOD, default true).
istiod_wanted() {
  case ${CANARY_ISTIOD:-true} in
    true | 1) return 0 ;;
    false | 0) return 1 ;;
    *)
      say "CANARY_ISTIOD takes true or false, not '$CANARY_ISTIOD'"
      exit 2
      ;;
  esac
}

# istiod joins a healthy cluster that runs without it: built (first time), started, recorded.
add_istiod() {
  say "adding istiod to the running cluster (built first if this machine has not built it yet)"
  bin=$("$here/build-tools.sh" istio | tail -n1)
  echo "$bin" >"$run/bin-dir"
  components+=(istiod)
  echo "${components[*]}" >"$run/components"
  crds_established || fail kube-apiserver "CRDs did not become Established"
  start_istiod
  wait_healthy istiod
}
