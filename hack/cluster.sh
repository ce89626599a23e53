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

pid_of() { cat "$run/pids/$1.pid" 2>/dev/null || true; }

# A pid file only counts if that pid still runs one of our processes: after a reboot the number may
# belong to something else, which must never be signalled. Every component has paths under $run/ in
# its arguments (the trailing slash keeps a sibling run dir such as run-dev/ from matching).
# No `| grep -q` here: under pipefail a grep that stops reading early can fail the pipeline.
runs_ours() { # pid
  local args
  [ -r "/proc/$1/cmdline" ] || return 1
  args=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
  [[ $args == *"$run/"* ]]
}

alive() {
  local pid
  pid=$(pid_of "$1")
  [ -n "$pid" ] && runs_ours "$pid"
}

# Components this invocation started, by pid. While `up` runs they are its own children, so a pid
# cannot be reused before it is reaped: "still running" needs no command-line check, which would
# race with the fork's exec.
declare -A child=() retried=()

child_running() { # pid
  local stat
  kill -0 "$1" 2>/dev/null || return 1
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  # The state follows the parenthesised command name; Z is an exited, unreaped child.
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

running() { # component
  if [ -n "${child[$1]:-}" ]; then child_running "${child[$1]}"; else alive "$1"; fi
}

# How a child of this invocation ended, in $reason for the failure message. Not called in $(...):
# the reaping and the unset must happen in this shell.
reason=
exit_reason() { # component
  local pid=${child[$1]:-} rc=0
  reason=exited
  [ -n "$pid" ] || return 0
  wait "$pid" 2>/dev/null || rc=$?
  # Reaped: the pid may now be reused, so from here on only the command-line check is safe.
  unset "child[$1]"
  if ((rc > 128)); then
    reason="killed by signal $((rc - 128)) ($(kill -l "$((rc - 128))" 2>/dev/null || echo '?'))"
  else
    reason="exited with status $rc"
  fi
}

kubectl_admin() { "$bin/kubectl" --kubeconfig="$run/kubeconfig" --request-timeout=10s "$@"; }

api_ready() {
  [ -s "$run/api-port" ] || return 1
  curl -sf --max-time 3 --cacert "$run/pki/ca.crt" --cert "$run/pki/admin.crt" --key "$run/pki/admin.key" \
    "https://127.0.0.1:$(cat "$run/api-port")/readyz" >/dev/null
}

healthy() {
  local c
  for c in "${components[@]}"; do alive "$c" || return 1; done
  api_ready
}

stop_all() {
  local i c pid n
  for ((i = ${#components[@]} - 1; i >= 0; i--)); do
    c=${components[i]}
    running "$c" || continue
    pid=$(pid_of "$c")
    kill "$pid" 2>/dev/null || true
    for ((n = 0; n < 100; n++)); do running "$c" || break; sleep 0.1; done
    if running "$c"; then
      say "$c (pid $pid) ignored SIGTERM for 10s; sending SIGKILL"
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
}

remove_state() {
  # Guard against a CANARY_RUN_DIR that would make rm -rf destructive.
  case "$run" in "" | / | "$HOME" | "$HOME/" | "$repo" | "$repo/")
    say "refusing to remove run dir '$run'"
    exit 1
    ;;
  esac
  rm -rf "$run"
}

# Startup failed: show why, stop what was started (unless only one component was being started:
# `start`/`restart` leave the rest running), keep the logs for inspection (the next `up` or `down`
# removes them).
stop_on_failure=1
fail() { # component message
  local log=$run/logs/$1.log
  say "$1: $2"
  if [ -f "$log" ]; then
    echo "----- last 40 lines of $log -----" >&2
    tail -n 40 "$log" >&2
    echo "----- full log: $log -----" >&2
  fi
  if [ "$stop_on_failure" = 1 ]; then stop_all; fi
  exit 1
}

# Polls a command until it succeeds; bounded by a deadline, and gives up early if the component
# that should make it succeed has died. A component that dies while starting is started once more:
# a process killed from outside (seen once in CI, with nothing in its log) is not a broken cluster.
wait_for() { # component timeout-seconds what command...
  local c=$1 timeout=$2 what=$3
  shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ! running "$c"; then
      exit_reason "$c"
      if [ -z "${retried[$c]:-}" ] && [ -s "$run/cmd/$c" ]; then
        retried[$c]=1
        say "$c $reason while waiting for $what; starting it once more"
        cp "$run/logs/$c.log" "$run/logs/$c.1.log" 2>/dev/null || true
        eval "start $c $(cat "$run/cmd/$c")"
        deadline=$((SECONDS + timeout))
        continue
      fi
      fail "$c" "$reason while waiting for $what"
    fi
    ((SECONDS < deadline)) || fail "$c" "timed out after ${timeout}s waiting for $what"
    sleep 0.5
  done
}

start() { # component command...
  local c=$1
  shift
  # The command, shell-quoted: for a second start (wait_for) and for a reader of the run dir.
  mkdir -p "$run/cmd"
  printf '%q ' "$@" >"$run/cmd/$c"
  # nohup + redirected stdio: the cluster outlives the shell that started it and never holds the
  # caller's stdout open (which would make `make` or CI wait forever).
  # fd 9 is the lock of this script; a long-lived child holding it would block every later up/down.
  nohup "$@" >"$run/logs/$c.log" 2>&1 </dev/null 9>&- &
  child[$c]=$!
  echo "$!" >"$run/pids/$c.pid"
}


issue_cert() { # name subject extendedKeyUsage [subjectAltName] [ca]
  local pki=$run/pki name=$1 ca=${5:-ca}
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/$name.key" 2>/dev/null
  openssl req -new -key "$pki/$name.key" -subj "$2" -out "$pki/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    echo "extendedKeyUsage=$3"
    if [ -n "${4:-}" ]; then echo "subjectAltName=$4"; fi
  } >"$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" -CAcreateserial \
    -days 365 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$pki/$name.ext"
}

issue_ca() { # name common-name
  local pki=$run/pki
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/$1.key" 2>/dev/null
  openssl req -x509 -new -key "$pki/$1.key" -subj "/CN=$2" -days 3650 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$pki/$1.crt" 2>/dev/null
}

gen_pki() {
  local pki=$run/pki
  mkdir -p "$pki"
  issue_ca ca canary-operator-dev-ca
  # The aggregation layer (e.g. a metrics API for the HPA) authenticates the apiserver's proxied
  # requests with a separate CA; without it controller-manager and scheduler log errors forever.
  issue_ca front-proxy-ca canary-operator-dev-front-proxy-ca
  issue_cert front-proxy-client "/CN=front-proxy-client" clientAuth "" front-proxy-ca
  # 10.0.0.1 is the `kubernetes` Service's ClusterIP (first address of --service-cluster-ip-range).
  issue_cert apiserver "/CN=kube-apiserver" serverAuth \
    "IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  issue_cert admin "/O=system:masters/CN=canary-operator-admin" clientAuth
  # The bootstrap RBAC policy already grants these two user names what the components need.
  issue_cert kube-controller-manager "/CN=system:kube-controller-manager" clientAuth
  issue_cert kube-scheduler "/CN=system:kube-scheduler" clientAuth
  # kwok plays the kubelet of every fake node, which no single node identity (Node authorizer) covers.
  issue_cert kwok "/O=system:masters/CN=kwok" clientAuth
  # Service account tokens (TokenRequest, controller-manager credentials) are signed with RSA, the
  # algorithm every client and verifier supports.
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key" 2>/dev/null
  openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
}

write_kubeconfig() { # file user server
  local pki=$run/pki
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: canary-dev
  cluster:
    server: $3
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 <"$pki/$2.crt")
    client-key-data: $(base64 -w0 <"$pki/$2.key")
contexts:
- name: canary-dev
  context:
    cluster: canary-dev
    user: $2
    namespace: default
current-context: canary-dev
EOF
  chmod 600 "$1"
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

# Whether a component answers its health check (kwok has none of its own: it only runs).
component_healthy() { # component
  case $1 in
    etcd) curl -sf --max-time 2 "$(cat "$run/etcd-url")/health" ;;
    kube-apiserver) api_ready ;;
    kube-controller-manager | kube-scheduler)
      curl -skf --max-time 2 "https://127.0.0.1:$(cat "$run/ports/$1")/healthz"
      ;;
    kwok) running kwok ;;
    # Ready once its informers have synced the cluster's services and Istio configuration.
    istiod) curl -sf --max-time 2 "http://127.0.0.1:$(cat "$run/ports/istiod")/ready" ;;
  esac
}

wait_healthy() { # component
  local timeout=60
  [ "$1" = kube-apiserver ] && timeout=120
  wait_for "$1" "$timeout" "$1 to be healthy" component_healthy "$1"
}

# The component's canonical name, from the short names people use.
component_name() { # name
  case $1 in
    apiserver) echo kube-apiserver ;;
    controller-manager) echo kube-controller-manager ;;
    scheduler) echo kube-scheduler ;;
    etcd | kube-apiserver | kube-controller-manager | kube-scheduler | kwok | istiod) echo "$1" ;;
    *) return 1 ;;
  esac
}

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
