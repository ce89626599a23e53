#!/usr/bin/env bash
# A real Kubernetes control plane on 127.0.0.1 for development, demos and tests:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake nodes that turn pods
# Running and Ready), and Istio's control plane, istiod (pilot-discovery), with ingress gateway
# workloads for it to program; all built from Go modules by hack/build-tools.sh.
#
#   hack/cluster.sh up       start (or reuse a healthy) cluster; installs Istio's and our CRDs
#                            CANARY_ISTIOD=false leaves istiod out (a lighter cluster, ~130 MB less,
#                            and no istiod build); a healthy cluster without istiod gets it when
#                            `up` runs again without CANARY_ISTIOD=false
#   hack/cluster.sh down     stop the processes this script started (pid files) and remove the state
#   hack/cluster.sh env      print `export KUBECONFIG=... PATH=...` for eval
#   hack/cluster.sh status   exit 0 only if every component is running and the apiserver is ready
#   hack/cluster.sh stop COMPONENT [--signal TERM|KILL]
#                            stop one component and keep all state (TERM waits 10 s, then KILLs)
#   hack/cluster.sh start COMPONENT
#                            start a stopped component again, as `up` did, and wait until healthy
#   hack/cluster.sh restart COMPONENT [--signal TERM|KILL] [--down SECONDS]
#                            stop, stay down for SECONDS (default 0), start
#                            COMPONENT: etcd, kube-apiserver, kube-controller-manager,
#                            kube-scheduler, kwok or istiod (or apiserver, controller-manager, scheduler)
#   hack/cluster.sh bare-apiserver PORT /PREFIX
#                            a second apiserver without any CRD, in the foreground (for tests)
#
# State lives in $CANARY_RUN_DIR (default ~/.cache/canary-operator/run), outside the repo: pid files,
# one log per component, certificates, and the admin kubeconfig at $CANARY_RUN_DIR/kubeconfig.
# CANARY_KWOK_NODES (default 3) fake nodes hold CANARY_KWOK_PODS_PER_NODE (default 1000) pods each.
# istiod serves plaintext xDS on the port in $CANARY_RUN_DIR/ports/istiod-xds (also exported by `env`
# as CANARY_ISTIOD_XDS): `xdsroutes` reads from it what a gateway's Envoy would be sent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/lib.sh
. "$here/lib.sh"
repo=$(dirname "$here")
cache=${CANARY_CACHE:-$HOME/.cache/canary-operator}
run=${CANARY_RUN_DIR:-$cache/run}
base_components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
components=("${base_components[@]}")
# Whether istiod is one of them was decided by the `up` that made the cluster, and recorded.
if [ -s "$run/components" ]; then
  read -r -a components <"$run/components"
fi

say() { echo "cluster: $*" >&2; }

# The parts, by what they hold: the components as processes, the PKI, the Kubernetes side, Istio.
# shellcheck source=hack/cluster/process.sh
. "$here/cluster/process.sh"
# shellcheck source=hack/cluster/pki.sh
. "$here/cluster/pki.sh"
# shellcheck source=hack/cluster/kube.sh
. "$here/cluster/kube.sh"
# shellcheck source=hack/cluster/istio.sh
. "$here/cluster/istio.sh"

cmd_up() {
  local t0=$SECONDS
  mkdir -p "$(dirname "$run")"
  # Serialises concurrent `up`/`down` (e.g. two terminals, or make -j).
  exec 9>"$run.lock"
  flock -w 600 9 || {
    say "another cluster.sh holds $run.lock"
    exit 1
  }

  if healthy; then
    bin=$(bin_dir)
    # A cluster started without istiod (`make demo` starts one) gets it when it is wanted now.
    if istiod_wanted && ! with_istiod; then add_istiod; fi
    if ! apply_crds || ! crds_established; then
      say "could not install the CRDs under $repo/crd"
      exit 1
    fi
    if ! cmp -s "$here/versions.env" "$run/versions.env"; then
      say "warning: the running cluster was started with other versions than hack/versions.env; run \`make cluster-down cluster-up\`"
    fi
    say "reusing healthy cluster at https://127.0.0.1:$(cat "$run/api-port") (run dir $run)"
    return 0
  fi
  if [ -d "$run" ]; then
    say "found a stopped or unhealthy cluster in $run; replacing it"
    stop_all
    remove_state
  fi
  components=("${base_components[@]}")
  if istiod_wanted; then components+=(istiod); fi
  # Only what this cluster runs: helm and Prometheus are built by whoever needs them.
  local parts=(core)
  if with_istiod; then parts+=(istio); fi
  bin=$("$here/build-tools.sh" "${parts[@]}" | tail -n1)

  mkdir -p "$run"/{pids,logs,etcd,certs}
  echo "${components[*]}" >"$run/components"
  echo "$bin" >"$run/bin-dir"
  cp "$here/versions.env" "$run/versions.env"
  local etcd_port etcd_peer_port api_port kcm_port sched_port
  read -r etcd_port etcd_peer_port api_port kcm_port sched_port < <(free_ports 5)
  if [ -z "$sched_port" ]; then
    say "could not pick free ports on 127.0.0.1 (python3 missing?)"
    exit 1
  fi
  echo "$api_port" >"$run/api-port"
  mkdir -p "$run/ports"
  echo "$kcm_port" >"$run/ports/kube-controller-manager"
  echo "$sched_port" >"$run/ports/kube-scheduler"
  local server=https://127.0.0.1:$api_port pki=$run/pki
  gen_pki
  write_kubeconfig "$run/kubeconfig" admin "$server"
  local c
  for c in kube-controller-manager kube-scheduler kwok; do
    write_kubeconfig "$run/$c.kubeconfig" "$c" "$server"
  done

  # Durability is not worth the fsync cost for a throwaway development cluster.
  start etcd "$bin/etcd" --name=canary-dev --data-dir="$run/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster="canary-dev=http://127.0.0.1:$etcd_peer_port" \
    --unsafe-no-fsync --log-level=warn
  echo "http://127.0.0.1:$etcd_port" >"$run/etcd-url"
  wait_healthy etcd
  local flags
  mapfile -t flags < <(apiserver_flags "http://127.0.0.1:$etcd_port" "$api_port" "$run/certs/kube-apiserver")
  start kube-apiserver "$bin/kube-apiserver" "${flags[@]}"
  wait_healthy kube-apiserver

  # --use-service-account-credentials gives each controller its own identity, so RBAC is exercised
  # the same way as in a real cluster. --node-monitor-grace-period (default 50 s) is raised so that
  # the fake nodes outlive a control-plane restart (`restart`, tests/recovery.rs): their leases go
  # unrenewed while the apiserver is down and until kwok's retries reach it again, and a node
  # marked NotReady would turn every pod on it not Ready. No test here depends on a node failing.
  # --kube-api-qps/burst (default 20/30 per controller) are raised because at 10,000 releases the
  # deployment controller's 20 requests a second took over 30 minutes to give 20,000 Deployments
  # their first status, and the releases' status followed it: the bench never settled.
  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig="$run/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$run/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$run/kube-controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$kcm_port" --cert-dir="$run/certs/kube-controller-manager" \
    --leader-elect=false --controllers='*' --use-service-account-credentials=true \
    --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
    --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
    --service-cluster-ip-range=10.0.0.0/16 --node-monitor-grace-period=3m \
    --kube-api-qps=200 --kube-api-burst=400 --profiling=false
  start kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig="$run/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$run/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$run/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$sched_port" --cert-dir="$run/certs/kube-scheduler" \
    --leader-elect=false --profiling=false
  # kwok's own server stays off (no --server-address/--node-port): nothing here needs logs/exec.
  # Pod IPs come from a range that does not overlap the Service range.
  # The node stages heartbeat through Leases (node-heartbeat-with-lease), so kwok must renew them:
  # without --node-lease-duration-seconds the node lifecycle controller sees no heartbeat, marks
  # every node NotReady after its grace period (about 50 s) and every pod on it not Ready.
  # Pods in rollout-* namespaces take 3 s to become Ready (hack/kwok-slow-pods.awk), as real
  # pods take time to start; every other pod is Ready at once.
  awk -v delay=3000 -f "$here/kwok-slow-pods.awk" "$bin/kwok-stages.yaml" >"$run/kwok-stages.yaml" ||
    fail kwok "could not write its stages"
  start kwok "$bin/kwok" \
    --kubeconfig="$run/kwok.kubeconfig" --config="$run/kwok-stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds=40 --cidr=10.244.0.0/16
  # Everything that only needs the apiserver is created now, while the other components start.
  fake_nodes | kubectl_admin apply --server-side --field-manager=canary-cluster-sh -f - >/dev/null ||
    fail kube-apiserver "could not create the fake nodes"
  apply_crds "$bin/istio-crds.yaml" "$bin/gateway-api-crds.yaml" ||
    fail kube-apiserver "could not install the CRDs (Istio's, the Gateway API's and $repo/crd)"
  gateway_workloads | kubectl_admin apply --server-side --field-manager=canary-cluster-sh -f - >/dev/null ||
    fail kube-apiserver "could not create the ingress gateway workloads"
  if with_istiod; then
    # istiod reads Istio's CRDs at start and does not wait for them.
    crds_established || fail kube-apiserver "CRDs did not become Established"
    start_istiod
  fi

  wait_healthy kube-controller-manager
  wait_healthy kube-scheduler

  wait_for kwok 60 "kwok to make the fake nodes Ready" \
    kubectl_admin wait --for=condition=Ready node -l type=kwok --timeout=5s
  # Pods are only admitted once their ServiceAccount exists; `default` is made by the controller-manager.
  wait_for kube-controller-manager 60 "the default ServiceAccount in namespace default" \
    kubectl_admin get serviceaccount default -n default

  crds_established || fail kube-apiserver "CRDs did not become Established"
  if with_istiod; then wait_healthy istiod; fi

  say "up in $((SECONDS - t0))s: $server (Kubernetes $("$bin/kubectl" version --client -o json 2>/dev/null |
    sed -n 's/.*"gitVersion": "\(.*\)".*/\1/p' | head -n1)), run dir $run"
  say "use it with: eval \$(make -s cluster-env)"
}

cmd_down() {
  mkdir -p "$(dirname "$run")"
  exec 9>"$run.lock"
  flock -w 120 9 || {
    say "another cluster.sh holds $run.lock"
    exit 1
  }
  if [ ! -d "$run" ]; then
    say "no cluster state in $run; nothing to stop"
    return 0
  fi
  stop_all
  remove_state
  say "stopped; removed $run"
}

bin_dir() { cat "$run/bin-dir" 2>/dev/null || echo "$cache/bin"; }

# One component down and up again with every bit of state kept: for tests of what survives a
# control-plane restart. Holds the run dir's lock like `up` and `down`.
cmd_component() { # stop|start|restart COMPONENT [--signal TERM|KILL] [--down SECONDS]
  local verb=$1 c signal=TERM down=0 pid n
  if [ $# -lt 2 ] || ! c=$(component_name "$2"); then
    echo "usage: $0 $verb etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kwok|istiod [--signal TERM|KILL] [--down SECONDS]" >&2
    exit 2
  fi
  shift 2
  while [ $# -gt 0 ]; do
    case $1 in
      --signal) signal=${2:-} && shift 2 ;;
      --down) down=${2:-} && shift 2 ;;
      *) echo "$0: unknown option $1" >&2 && exit 2 ;;
    esac
  done
  [[ $signal =~ ^(TERM|KILL)$ ]] || { echo "$0: --signal takes TERM or KILL" >&2 && exit 2; }
  [[ $down =~ ^[0-9]+$ ]] || { echo "$0: --down takes whole seconds" >&2 && exit 2; }
  exec 9>"$run.lock"
  flock -w 120 9 || {
    say "another cluster.sh holds $run.lock"
    exit 1
  }
  if [ ! -s "$run/cmd/$c" ] || { [ "$c" != etcd ] && [ "$c" != kube-apiserver ] && [ "$c" != kwok ] && [ ! -s "$run/ports/$c" ]; }; then
    say "no $c started by this script in $run (or by an older one); run \`make cluster-down cluster-up\`"
    exit 1
  fi
  bin=$(bin_dir)
  if [ "$verb" != start ]; then
    if alive "$c"; then
      pid=$(pid_of "$c")
      kill -"$signal" "$pid" 2>/dev/null || true
      for ((n = 0; n < 100; n++)); do alive "$c" || break; sleep 0.1; done
      if alive "$c"; then
        say "$c (pid $pid) ignored SIGTERM for 10s; sending SIGKILL"
        kill -9 "$pid" 2>/dev/null || true
        for ((n = 0; n < 50; n++)); do alive "$c" || break; sleep 0.1; done
      fi
      say "$c stopped (SIG$signal)"
    else
      say "$c was not running"
    fi
  fi
  [ "$verb" = stop ] && return 0
  stop_on_failure=0
  if [ "$verb" = restart ] && ((down > 0)); then sleep "$down"; fi
  if alive "$c"; then
    say "$c is already running"
  else
    # The log of the earlier run is kept beside the new one.
    [ -f "$run/logs/$c.log" ] && mv "$run/logs/$c.log" "$run/logs/$c.$(date +%s).log"
    eval "start $c $(cat "$run/cmd/$c")"
  fi
  wait_healthy "$c"
  say "$c started and healthy"
}

cmd_env() {
  [ -s "$run/kubeconfig" ] || say "warning: no cluster in $run yet; run \`make cluster-up\`"
  echo "export KUBECONFIG=\"$run/kubeconfig\""
  # $PATH stays unexpanded until the caller evals the line.
  echo "export PATH=\"$(bin_dir):\$PATH\""
  if [ -s "$run/ports/istiod-xds" ]; then echo "export CANARY_ISTIOD_XDS=127.0.0.1:$(cat "$run/ports/istiod-xds")"; fi
}

cmd_status() {
  local c ok=0
  for c in "${components[@]}"; do
    if alive "$c"; then
      printf '%-24s running (pid %s)\n' "$c" "$(pid_of "$c")"
    else
      printf '%-24s not running\n' "$c"
      ok=1
    fi
  done
  if [ -s "$run/ports/istiod-xds" ]; then
    echo "istiod xDS               127.0.0.1:$(cat "$run/ports/istiod-xds") (plaintext)"
  fi
  if api_ready; then
    echo "apiserver                https://127.0.0.1:$(cat "$run/api-port") ready"
  else
    echo "apiserver                not ready"
    ok=1
  fi
  echo "run dir                  $run (logs in $run/logs)"
  return "$ok"
}

# A second kube-apiserver on the running cluster's etcd and certificates, in the foreground, with
# its objects under their own etcd prefix: an API server that has never seen our CRDs or Istio's,
# for tests of what the operator says when they are missing. Same admin kubeconfig, other port.
cmd_bare_apiserver() { # port etcd-prefix
  if [ $# -ne 2 ] || ! [[ $1 =~ ^[0-9]+$ ]] || ! [[ $2 =~ ^/[a-z0-9/-]+$ ]]; then
    echo "usage: $0 bare-apiserver PORT /ETCD-PREFIX" >&2
    exit 2
  fi
  if ! healthy; then
    say "no healthy cluster in $run; run \`hack/cluster.sh up\` first"
    exit 1
  fi
  if [ ! -s "$run/etcd-url" ]; then
    say "the cluster in $run was started by an older cluster.sh (no etcd-url); restart it: make cluster-down cluster-up"
    exit 1
  fi
  local certs flags
  certs=$(mktemp -d "$run/certs/bare-apiserver.XXXXXX")
  mapfile -t flags < <(apiserver_flags "$(cat "$run/etcd-url")" "$1" "$certs")
  # Compaction is for the whole etcd, not one prefix: left to the cluster's own apiserver.
  exec "$(bin_dir)/kube-apiserver" "${flags[@]}" --etcd-prefix="$2" --etcd-compaction-interval=0
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  env) cmd_env ;;
  status) cmd_status ;;
  stop | start | restart) cmd_component "$@" ;;
  bare-apiserver)
    shift
    cmd_bare_apiserver "$@"
    ;;
  *)
    echo "usage: $0 up|down|env|status|stop|start|restart|bare-apiserver" >&2
    exit 2
    ;;
esac
