# The Kubernetes side, for hack/cluster.sh (sourced, never run): the admin's kubectl, the apiserver's
# readiness and flags, the fake nodes and the CRDs.
# shellcheck shell=bash disable=SC2154 # bin, run, repo: set by hack/cluster.sh, which sources this

kubectl_admin() { "$bin/kubectl" --kubeconfig="$run/kubeconfig" --request-timeout=10s "$@"; }

api_ready() {
  [ -s "$run/api-port" ] || return 1
  curl -sf --max-time 3 --cacert "$run/pki/ca.crt" --cert "$run/pki/admin.crt" --key "$run/pki/admin.key" \
    "https://127.0.0.1:$(cat "$run/api-port")/readyz" >/dev/null
}

# A real kubelet holds 110 pods; a fake node holds as many as asked, and the default total (3,000)
# fits 1,000 releases of two pods each. 3 nodes of 110 left 70 of 400 pods Pending.
fake_nodes() {
  local i pods=${CANARY_KWOK_PODS_PER_NODE:-1000}
  for ((i = 0; i < ${CANARY_KWOK_NODES:-3}; i++)); do
    # No NoSchedule taint (unlike kwok's example): workloads created by the operator carry no
    # kwok toleration and must still schedule.
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
    topology.kubernetes.io/zone: zone-$i
status:
  allocatable: {cpu: "320", memory: 2560Gi, pods: "$pods"}
  capacity: {cpu: "320", memory: 2560Gi, pods: "$pods"}
  nodeInfo:
    architecture: amd64
    operatingSystem: linux
    kubeletVersion: fake
    kubeProxyVersion: fake
    bootID: ""
    containerRuntimeVersion: ""
    kernelVersion: ""
    machineID: ""
    osImage: ""
    systemUUID: ""
  phase: Running
EOF
  done
}

# crd/ is re-applied on every `up`, also when the cluster is reused, because it changes during
# development; Istio's CRDs only when the cluster is new.
apply_crds() { # files...
  local f
  for f in "$@" "$repo"/crd/*.yaml; do
    [ -f "$f" ] || continue
    kubectl_admin apply --server-side --force-conflicts --field-manager=canary-cluster-sh -f "$f" >/dev/null ||
      return 1
  done
}

crds_established() { kubectl_admin wait --for=condition=Established crd --all --timeout=60s >/dev/null; }

# The kube-apiserver's flags, one per line (no flag value holds a newline).
# CANARY_APISERVER_PROFILING=true serves /debug/pprof (for `go tool pprof`) to the admin user.
# --advertise-address is required: with no default route the apiserver cannot pick one itself.
# The Service range is a /16: every CanaryRelease has a ClusterIP Service, and `make bench`
# creates 1,000 (a /24 holds 254).
# The endpoint reconciler refuses a loopback address for the `kubernetes` Service's endpoints,
# and nothing runs inside this cluster that would need them, so it is switched off.
apiserver_flags() { # etcd-url port cert-dir
  local pki=$run/pki
  printf '%s\n' \
    --etcd-servers="$1" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$2" \
    --endpoint-reconciler-type=none \
    --cert-dir="$3" \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --requestheader-client-ca-file="$pki/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$pki/front-proxy-client.crt" --proxy-client-key-file="$pki/front-proxy-client.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
    --authorization-mode=Node,RBAC \
    --service-cluster-ip-range=10.0.0.0/16 \
    --profiling="${CANARY_APISERVER_PROFILING:-false}"
}
