#!/usr/bin/env bash
# Builds the control-plane binaries (and helm, and Prometheus) from the wrapper Go modules under hack/tools/ and caches
# them in ~/.cache/canary-operator/<version>/ (or $CANARY_CACHE). A binary already in the cache is reused,
# so only the first run on a machine is slow. Prints the bin directory on stdout as its last line.
#
#   hack/build-tools.sh [PART ...]   PART: core (etcd, Kubernetes, kwok: a cluster), helm, prometheus,
#                                    istio (istiod, istioctl, xdsroutes); all of them without one.
# `make demo` needs only core, so a first demo does not wait for the other builds (about half of a
# cold build); `make demo-rollout` and `make test` build the rest when they first need it. The CRDs
# (Istio's, the Gateway API's) and kwok's stages are module downloads, made for every part.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. "$here/versions.env"
cache=${CANARY_CACHE:-$HOME/.cache/canary-operator}
export CGO_ENABLED=0 GOFLAGS=-mod=mod

log() { echo "build-tools: $*" >&2; }

parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(core helm prometheus istio)
for part in "${parts[@]}"; do
  case $part in
    core | helm | prometheus | istio) ;;
    *)
      log "unknown part '$part' (core, helm, prometheus, istio)"
      exit 2
      ;;
  esac
done
wants() { [[ " ${parts[*]} " == *" $1 "* ]]; }

# Two clusters (or a cluster and `make tools`) may start at once; builds and the link directory
# below must not interleave. A cold build takes ~20 minutes on 2 cores, hence the long wait.
mkdir -p "$cache"
exec 8>"$cache/.build-tools.lock"
flock -w 3600 8 || {
  log "another build-tools.sh still holds $cache/.build-tools.lock after an hour"
  exit 1
}

# go build names a binary after the last import path element, except that a major version
# suffix (/v3) is skipped: go.etcd.io/etcd/server/v3 becomes "server".
go_exe_name() {
  local p=$1
  [[ $(basename "$p") =~ ^v[0-9]+$ ]] && p=$(dirname "$p")
  basename "$p"
}

build() { # module-dir version out-dir version-ldflags name=pkg...
  local dir=$1 version=$2 out=$3 ldflags=$4; shift 4
  local spec missing=()
  for spec in "$@"; do [ -x "$out/${spec%%=*}" ] || missing+=("$spec"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  mkdir -p "$out"
  log "building ${missing[*]#*=} @ $version (first build on this machine; cached afterwards)"
  local start=$SECONDS
  rm -rf "$out/.tmp"
  (cd "$here/tools/$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$out/.tmp/" "${missing[@]#*=}")
  # Moved into place only after the whole build succeeded, so an interrupted build is never cached.
  for spec in "${missing[@]}"; do mv "$out/.tmp/$(go_exe_name "${spec#*=}")" "$out/${spec%%=*}"; done
  rmdir "$out/.tmp" 2>/dev/null || true
  log "built ${missing[*]%%=*} in $((SECONDS - start))s"
}

# Source directory of a module version, from the module cache (downloaded on first use). Run outside
# the wrapper modules so that neither their go.mod nor go.sum is touched.
module_dir() {
  (cd / && GOFLAGS='' go mod download -json "$1" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
}

# The version ldflags make /version report the real release instead of v0.0.0-master.
kv=$KUBE_VERSION
k8s_ld="-X k8s.io/component-base/version.gitVersion=$kv -X k8s.io/client-go/pkg/version.gitVersion=$kv"
k8s_ld+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$kv" | cut -d. -f2)"
k8s_ld+=" -X k8s.io/component-base/version.gitTreeState=clean"
bin=$cache/bin
if wants core; then
  build k8s "$kv" "$cache/kubernetes-$kv" "$k8s_ld" \
    kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
    kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager \
    kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler kubectl=k8s.io/kubernetes/cmd/kubectl
  build etcd "$ETCD_VERSION" "$cache/etcd-$ETCD_VERSION" "" etcd=go.etcd.io/etcd/server/v3
  build kwok "$KWOK_VERSION" "$cache/kwok-$KWOK_VERSION" "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
    kwok=sigs.k8s.io/kwok/cmd/kwok
fi
if wants helm; then
  build helm "$HELM_VERSION" "$cache/helm-$HELM_VERSION" "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    helm=helm.sh/helm/v3/cmd/helm
fi

# The metric analysis of automatic rollouts is tested against a real Prometheus. Built without the
# web UI's assets (a Go build tag the module's release process sets): the HTTP API is all we use.
if wants prometheus; then
  build prometheus "$PROMETHEUS_VERSION" "$cache/prometheus-$PROMETHEUS_VERSION" \
    "-X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION" \
    prometheus=github.com/prometheus/prometheus/cmd/prometheus
fi

# Istio's own control plane: istiod (pilot-discovery) judges and translates what the operator writes,
# istioctl analyzes it. ~13 minutes on 2 cores, the longest build here.
xds_sum=$(cat "$here/tools/istio/xdsroutes/"*.go "$here/tools/istio/go.sum" | sha256sum | cut -c1-12)
if wants istio; then
  istio_ld="-X istio.io/istio/pkg/version.buildVersion=$ISTIO_VERSION -X istio.io/istio/pkg/version.buildStatus=Clean"
  build istio "$ISTIO_VERSION" "$cache/istio-$ISTIO_VERSION" "$istio_ld" \
    pilot-discovery=istio.io/istio/pilot/cmd/pilot-discovery istioctl=istio.io/istio/istioctl/cmd/istioctl
  # Our xDS client (hack/tools/istio/xdsroutes) reads what istiod would program into the ingress gateway's
  # Envoy. It is our own source, so it is cached by its content, not by a version.
  build istio "$xds_sum" "$cache/xdsroutes-$xds_sum" "" xdsroutes=canary-operator/hack/tools/istio/xdsroutes
fi

# Istio's CRDs come from the pinned istio.io/api module.
istio_crds=$cache/istio-crds-$ISTIO_API_VERSION.yaml
if [ ! -s "$istio_crds" ]; then
  cp "$(module_dir "istio.io/api@$ISTIO_API_VERSION")/kubernetes/customresourcedefinitions.gen.yaml" "$istio_crds.tmp"
  mv "$istio_crds.tmp" "$istio_crds"
fi

# The Gateway API's CRDs (standard channel, and the policy that keeps the channel from being mixed)
# come from the pinned sigs.k8s.io/gateway-api module, in the order of its own kustomization.
gateway_api_crds=$cache/gateway-api-crds-$GATEWAY_API_VERSION.yaml
if [ ! -s "$gateway_api_crds" ]; then
  gw_src=$(module_dir "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION")/config/crd
  sed -n 's|^ *- \(standard/.*\.yaml\)$|\1|p' "$gw_src/kustomization.yaml" | while read -r f; do
    echo "---"
    cat "$gw_src/$f"
  done >"$gateway_api_crds.tmp"
  grep -q 'kind: CustomResourceDefinition' "$gateway_api_crds.tmp" || {
    echo "no Gateway API CRDs found in $gw_src" >&2
    exit 1
  }
  mv "$gateway_api_crds.tmp" "$gateway_api_crds"
fi

# The kwok binary ships no default Stages (kwokctl injects them), and without them nodes never become
# Ready and pods never Running. Take kwok's own "fast" stages from the same module version.
kwok_stages=$cache/kwok-$KWOK_VERSION/stages.yaml
if [ ! -s "$kwok_stages" ]; then
  kwok_src=$(module_dir "sigs.k8s.io/kwok@$KWOK_VERSION")/kustomize/stage
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    echo "---"
    cat "$kwok_src/$f"
  done >"$kwok_stages.tmp"
  mv "$kwok_stages.tmp" "$kwok_stages"
fi

# One directory of links to the pinned versions, so callers need a single PATH entry: to every one
# built so far, whichever parts this call built. Replaced only when a link changes: a running
# cluster's scripts use it, and for a moment it would be missing.
links=()
for f in "$cache/kubernetes-$kv"/* "$cache/etcd-$ETCD_VERSION/etcd" "$cache/kwok-$KWOK_VERSION/kwok" \
  "$cache/helm-$HELM_VERSION/helm" "$cache/prometheus-$PROMETHEUS_VERSION/prometheus" \
  "$cache/istio-$ISTIO_VERSION"/* "$cache/xdsroutes-$xds_sum/xdsroutes" "$istio_crds" "$gateway_api_crds" "$kwok_stages"; do
  [ -f "$f" ] || continue
  name=$(basename "$f")
  case $name in istio-crds-*) name=istio-crds.yaml ;; gateway-api-crds-*) name=gateway-api-crds.yaml ;; stages.yaml) name=kwok-stages.yaml ;; esac
  links+=("$name=$f")
done
current=()
for l in "$bin"/*; do [ -L "$l" ] && current+=("$(basename "$l")=$(readlink "$l")"); done
if [ "$(printf '%s\n' "${links[@]}" | sort)" != "$(printf '%s\n' "${current[@]}" | sort)" ]; then
  rm -rf "$bin.new" && mkdir -p "$bin.new"
  for l in "${links[@]}"; do ln -s "${l#*=}" "$bin.new/${l%%=*}"; done
  rm -rf "$bin" && mv "$bin.new" "$bin"
fi
echo "$bin"
