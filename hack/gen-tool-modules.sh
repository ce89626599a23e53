#!/usr/bin/env bash
# Regenerates the wrapper Go modules under hack/tools/ from hack/versions.env.
# Run it after changing a version there, then commit the go.mod/go.sum it writes.
# The wrappers exist because `go install k8s.io/kubernetes/cmd/...@vX` refuses modules with
# replace directives; a wrapper that requires the module and replaces each ./staging path with
# its published v0.X.Y version builds the same commands.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. "$here/versions.env"
export GOFLAGS=-mod=mod

gen() { # dir module-path requirement tools...
  local dir=$1 name=$2; shift 2
  rm -f "$dir/go.mod" "$dir/go.sum"
  (cd "$dir" && go mod init "$name" >/dev/null 2>&1 && "$@")
}

# Kubernetes: staging modules are published as v0.<minor>.<patch>.
k8s_dir=$here/tools/k8s
staging_version="v0.${KUBE_VERSION#v1.}"
k8s_gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
gen "$k8s_dir" canary-operator/hack/tools/k8s true
(
  cd "$k8s_dir"
  go mod edit -require="k8s.io/kubernetes@$KUBE_VERSION"
  awk '$2=="=>" && $3 ~ /^\.\/staging\//{print $1}' "$k8s_gomod" | while read -r m; do
    go mod edit -replace="$m=$m@$staging_version"
  done
  # Each tool path carries the version: without it `go get` would upgrade to the newest release.
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    go get -tool "k8s.io/kubernetes/cmd/$cmd@$KUBE_VERSION"
  done
  go mod tidy
)

gen "$here/tools/etcd" canary-operator/hack/tools/etcd go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
gen "$here/tools/kwok" canary-operator/hack/tools/kwok go get -tool "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
gen "$here/tools/helm" canary-operator/hack/tools/helm go get -tool "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
gen "$here/tools/prometheus" canary-operator/hack/tools/prometheus go get -tool "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION"
# Istio: istiod and istioctl, plus our own xDS client (xdsroutes/, kept across regeneration), which
# uses the Envoy API types and gRPC versions istio itself pins.
gen "$here/tools/istio" canary-operator/hack/tools/istio sh -c \
  "go get -tool istio.io/istio/pilot/cmd/pilot-discovery@$ISTIO_VERSION && go get -tool istio.io/istio/istioctl/cmd/istioctl@$ISTIO_VERSION"
for d in etcd kwok helm prometheus istio; do (cd "$here/tools/$d" && go mod tidy); done
echo "wrapper modules written under $here/tools"
