# Shell helpers shared by hack/cluster.sh and the demos; sourced, never run.

free_ports() { # count: that many distinct free TCP ports on 127.0.0.1
  python3 - "$1" <<'PY'
import socket, sys
# All sockets stay bound until every port is chosen, so the ports are distinct.
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

install_canary_crd() { # the CanaryRelease CRD from this tree, established
  kubectl apply --server-side -f crd/canaryrelease.yaml
  kubectl wait --for=condition=Established --timeout=60s crd/canaryreleases.canary.dev
}

demo_namespace() { # namespace: created if missing, with the examples' Secret (a demo value)
  kubectl create namespace "$1" --dry-run=client -o yaml | kubectl apply -f -
  kubectl -n "$1" create secret generic azure-openai --from-literal=AZURE_API_KEY=demo-not-a-real-key \
    --dry-run=client -o yaml | kubectl apply -f -
}

make_way_for() { # our-namespace their-namespace release whose: delete their release if it exists
  if kubectl -n "$2" get "canaryrelease/$3" >/dev/null 2>&1; then
    say "$4 release $2/$3 claims every host (*) on the same ingress gateway, as $1/$3 will: two releases must not share a host (the later would be HostConflict), so $2/$3 is deleted first"
    kubectl -n "$2" delete "canaryrelease/$3" --wait --timeout=90s
  fi
}

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

demo_cluster() { # [cluster]: what the toolchains lack (only for a cluster), then the local control plane (started or reused), in use
  hack/install-deps.sh "$@"
  say "Starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)"
  hack/cluster.sh up
  eval "$(hack/cluster.sh env)"
}
