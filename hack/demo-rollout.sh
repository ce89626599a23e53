#!/usr/bin/env bash
# `make demo-rollout`: a model swap rolled out automatically, end to end, on the local control
# plane, with the real parts the tests use (tests/rollout/stage.rs): two chat backends (offline,
# answering like models: stable gpt-4.1 = v1, canary gpt-4o = v2, each with its time to first
# chunk and token rate), a Prometheus scraping both every second, the ingress gateway stand-in
# (nginx following the release's VirtualService, sending 150 requests a second through it) and the
# operator, all on 127.0.0.1. hack/demo-rollout.yaml goes 25% -> 50% -> 100%, every step judged
# by the six built-in checks (errors, 429s, time to first token, latency, tokens per second,
# cost), canary against stable; each measurement's check table is shown as it happens, and
# `kubectl canary verify` measures the split through the gateway. Then a new canary revision is
# throttled by its provider (the backend answers every second request 429) once it has 50%: it
# steps back to 25% and pauses as RateLimited instead of being rolled back.
# Everything started here is stopped at the end (logs stay in the cluster's run dir); the cluster
# is left running (`make cluster-down` stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib.sh
. hack/lib.sh

ns=rollout-demo
release=azureopenaichat

# istiod (whose routes the gateway stand-in follows) joins a cluster `make demo` started without it.
demo_cluster
if ! command -v prometheus >/dev/null; then
  PATH="$(hack/build-tools.sh prometheus | tail -n 1):$PATH"
fi
target=$(cd "${CARGO_TARGET_DIR:-target}" 2>/dev/null && pwd || echo "$PWD/target")
# kubectl finds `kubectl canary` on PATH.
export PATH="$target/debug:$PATH"

say "Building the operator, kubectl-canary, the chat backend and the ingress gateway stand-in"
cargo build --quiet --bin canary-operator --bin kubectl-canary --example chat_backend --example ingress_standin

run_dir=$(dirname "$KUBECONFIG")
dir=$run_dir/demo-rollout
rm -rf "$dir"
mkdir -p "$dir"

# Processes started here, stopped on exit whatever happens: SIGTERM (the stand-in then stops its
# nginx), SIGKILL after 10 s.
pids=()
operator_log=
stop_all() {
  local pid n
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for ((n = 0; n < 100; n++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
trap 'rc=$?; stop_all; exit $rc' EXIT

fail() { # message [log]
  printf '\n\033[1;31mdemo-rollout: %s\033[0m\n' "$1" >&2
  if [ -n "${2:-}" ] && [ -f "$2" ]; then
    echo "----- last 30 lines of $2 -----" >&2
    tail -n 30 "$2" >&2
  fi
  if [ -n "$operator_log" ] && [ "${2:-}" != "$operator_log" ]; then
    echo "----- last 30 lines of $operator_log -----" >&2
    tail -n 30 "$operator_log" >&2
  fi
  echo "logs: $dir" >&2
  exit 1
}

# Polls a command until it succeeds, at most TIMEOUT seconds; fails early if process PID died.
wait_until() { # timeout what pid log command...
  local timeout=$1 what=$2 pid=$3 log=$4
  shift 4
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then fail "exited while waiting for $what" "$log"; fi
    ((SECONDS < deadline)) || fail "timed out after ${timeout}s waiting for $what" "$log"
    sleep 0.25
  done
}


say "Installing the CanaryRelease CRD"
install_canary_crd

say "Namespace $ns, the Secret with the API key (a demo value), no release left from an earlier run"
demo_namespace "$ns"
# Foreground: returns once the children are gone too, so the new release owns fresh ones.
kubectl -n "$ns" delete "canaryrelease/$release" --ignore-not-found --cascade=foreground --wait --timeout=90s
make_way_for "$ns" azureopenai "$release" "make demo's"

# The chat backend prints `chat backend listening on http://ADDR (...)` once it serves.
addr=
start_backend() { # version model ttft-ms tokens-per-second
  local log=$dir/backend-$1.log
  env -u AZURE_API_URL -u AZURE_API_KEY -u AZURE_API_VERSION -u UPSTREAM_TIMEOUT_SECONDS \
    -u UPSTREAM_STREAM -u FAULT_EVERY -u FAULT_PERCENT -u FAULT_STATUS -u FAULT_DELAY_MS -u FAULT_TTFT_MS \
    -u OFFLINE_RESPONSE_MODEL -u OFFLINE_TTFT_MS -u OFFLINE_TOKENS_PER_SECOND -u OFFLINE_OUTPUT_TOKENS \
    HOST=127.0.0.1 PORT=0 AZURE_MODEL_NAME="$2" OFFLINE_TTFT_MS="$3" OFFLINE_TOKENS_PER_SECOND="$4" \
    OFFLINE_OUTPUT_TOKENS=20 "$target/debug/examples/chat_backend" >"$log" 2>&1 </dev/null &
  pids+=("$!")
  wait_until 30 "the $1 chat backend to listen" "$!" "$log" grep -q 'listening on http://' "$log"
  addr=$(sed -n 's|.*listening on http://\([0-9.:]*\).*|\1|p' "$log" | head -n 1)
  echo "$1: chat backend answering as $2 at http://$addr (offline: first chunk after $3 ms, then 20 tokens at $4/s; log $log)"
}

say "Starting the two chat backends, offline"
start_backend v1 gpt-4.1 220 380
v1=$addr
start_backend v2 gpt-4o 200 420
v2=$addr

read -r prom_port gw_port op_port < <(free_ports 3)
prometheus_url=http://127.0.0.1:$prom_port
say "Starting Prometheus at $prometheus_url, scraping both every second"
# Static labels play what relabelling copies from the pods' labels in a cluster.
cat >"$dir/prometheus.yml" <<EOF
global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}
scrape_configs:
- job_name: canary
  static_configs:
  - targets: ["$v1"]
    labels: {namespace: $ns, version: v1}
  - targets: ["$v2"]
    labels: {namespace: $ns, version: v2}
EOF
cat "$dir/prometheus.yml"
prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/prometheus-data" \
  --web.listen-address="127.0.0.1:$prom_port" >"$dir/prometheus.log" 2>&1 </dev/null &
pids+=("$!")
targets_up() {
  curl -sf --max-time 2 --get --data-urlencode 'query=count(up{job="canary"} == 1)' \
    "$prometheus_url/api/v1/query" | grep -q '"2"\]'
}
wait_until 60 "Prometheus to scrape both backends" "$!" "$dir/prometheus.log" targets_up

if [ -z "${CANARY_ISTIOD_XDS:-}" ]; then
  echo "demo-rollout: the cluster runs no istiod, whose routes the gateway stand-in follows; start it with \`make cluster-down cluster-up\` (without CANARY_ISTIOD=false)" >&2
  exit 1
fi
say "Starting the ingress gateway stand-in at http://127.0.0.1:$gw_port (the route istiod pushes for $release, 150 requests/s)"
"$target/debug/examples/ingress_standin" --namespace "$ns" --name "$release" \
  --xds "$CANARY_ISTIOD_XDS" --host '*' --upstream "v1=$v1" --upstream "v2=$v2" --listen "127.0.0.1:$gw_port" --dir "$dir/gateway" \
  --load-rps 150 >"$dir/gateway.out" 2>"$dir/gateway.log" </dev/null &
pids+=("$!")
wait_until 30 "the gateway stand-in to listen" "$!" "$dir/gateway.log" grep -q 'listening on' "$dir/gateway.log"
gateway_url=http://127.0.0.1:$gw_port

operator_log=$dir/operator.log
say "Starting the operator for namespace $ns, analysis down to every second (log: $operator_log)"
"$target/debug/canary-operator" --namespace "$ns" --min-analysis-interval=1s \
  --http-address "127.0.0.1:$op_port" >"$operator_log" 2>&1 </dev/null &
pids+=("$!")
wait_until 60 "the operator to be ready" "$!" "$operator_log" curl -sf --max-time 2 "http://127.0.0.1:$op_port/readyz"

# One line per state: phase, pause reason, step, steps, weight, last verdict, revision, time of
# the last measurement.
jsonpath='{.status.rollout.phase}|{.status.rollout.pauseReason}|{.status.rollout.step}|{.status.rollout.steps}|{.status.rollout.weight}|{.status.rollout.lastVerdict}|{.status.rollout.revision}|{.status.rollout.lastMeasurementTime}'
state() { kubectl -n "$ns" get "canaryrelease/$release" --request-timeout=5s -o "jsonpath=$jsonpath"; }
applied() { grep '^applied' "$dir/gateway.out" | tail -n 1 | sed 's/^applied //'; }
# The gateway's weights once they give the canary (v2) `weight`, or as they are after 3 s: istiod
# pushes a route 100 ms after the change (its debounce), then nginx reloads.
applied_at() { # canary-weight
  local i
  for ((i = 0; i < 30; i++)); do
    [[ " $(applied) " == *" v2=$1 "* ]] && break
    sleep 0.1
  done
  applied
}
# The checks table of `kubectl canary status`: check, stable, canary, bound, sample sizes, verdict.
checks_table() {
  kubectl canary status "$release" -n "$ns" 2>/dev/null |
    awk '/^Checks \(/ {p = 1} p && /^  [a-z]/ {exit} p && NF' | sed 's/^/       /'
}

# Follows status.rollout until its phase is one of DONE (fails on BAD or after TIMEOUT seconds):
# a line on every change of step, phase or weight, the checks table after every measurement, and
# `kubectl canary verify` through the gateway on every change of the canary's weight.
phase=
revision=
follow() { # timeout done-phase bad-phases
  local timeout=$1 done=$2 bad=$3 t0=$SECONDS last= last_weight= last_measured=
  local deadline=$((SECONDS + timeout)) line pause step steps weight verdict measured key out rc
  while true; do
    line=$(state 2>/dev/null) || line=
    IFS='|' read -r phase pause step steps weight verdict revision measured <<<"$line"
    key="$phase|$pause|$step|$weight|$revision"
    if [ -n "$phase" ] && [ "$key" != "$last" ]; then
      last=$key
      printf '[%3ss] step %s/%s  weight %3s%%  %-26s gateway %s\n' "$((SECONDS - t0))" "$step" "$steps" \
        "$weight" "$phase${pause:+ ($pause)}" "$(applied_at "$weight")"
      if [ "$weight" != "$last_weight" ]; then
        last_weight=$weight
        rc=0
        out=$(kubectl canary verify "$release" -n "$ns" --url "$gateway_url" --requests 300 2>&1) || rc=$?
        # Its summary: the canary's share, failed requests (table rows `(cause) error N`), verdict.
        echo "       kubectl canary verify --requests 300 (exit $rc):"
        grep -E '^(Canary share|Result):|^\(.*  error  ' <<<"$out" | sed 's/^/         /' || printf '%s\n' "$out" | tail -n 3
      fi
    fi
    if [ -n "$measured" ] && [ "$measured" != "$last_measured" ]; then
      last_measured=$measured
      # A measurement that moved the rollout to another step (on, or back) is shown after the
      # move: the new step's own verdict is still to come.
      printf '[%3ss] measured: %s\n' "$((SECONDS - t0))" "${verdict:-these checks moved the rollout to step $step}"
      checks_table
    fi
    if [ "$phase" = "$done" ]; then return 0; fi
    if [ -n "$phase" ] && [[ " $bad " == *" $phase "* ]]; then fail "the rollout ended $phase, not $done"; fi
    ((SECONDS < deadline)) || fail "the rollout was not $done within ${timeout}s (last: ${line:-no status})"
    sleep 1
  done
}

say "Applying hack/demo-rollout.yaml: gpt-4.1 -> gpt-4o, 25% -> 50% -> 100%, judged by the built-in checks"
sed "s|PROMETHEUS_URL|$prometheus_url|" hack/demo-rollout.yaml >"$dir/release.yaml"
sed -n '/^  stable:/,/^  autoscaling:/p' "$dir/release.yaml" | sed '$d'
kubectl apply --server-side -f "$dir/release.yaml"
start=$SECONDS
say "Following status.rollout (a line per change, the checks after every measurement; verify measures 300 requests through the gateway)"
follow 240 Promoted "RolledBack Aborted"
wait_until 30 "status.canaryWeight 100" "" "$operator_log" \
  kubectl -n "$ns" wait "canaryrelease/$release" --for=jsonpath='{.status.canaryWeight}'=100 --timeout=5s
echo "Promoted in $((SECONDS - start))s"
echo "Event: $(kubectl -n "$ns" get events --field-selector reason=Promoted -o 'jsonpath={.items[-1:].message}')"

say "kubectl canary status $release"
kubectl canary status "$release" -n "$ns"

promoted_revision=$revision
say "A new canary revision (spec.canary.config: AZURE_API_VERSION 2025-01-01-preview) starts a new rollout"
kubectl -n "$ns" patch "canaryrelease/$release" --type merge \
  -p '{"spec":{"canary":{"config":{"AZURE_API_VERSION":"2025-01-01-preview"}}}}'
new_revision() { [ "$(kubectl -n "$ns" get "canaryrelease/$release" -o 'jsonpath={.status.rollout.revision}')" != "$promoted_revision" ]; }
wait_until 30 "a new revision in status.rollout" "" "$operator_log" new_revision
# Once the new revision has 50%, its provider throttles it: every second request answers 429.
(
  until [ "$(kubectl -n "$ns" get "canaryrelease/$release" -o 'jsonpath={.status.rollout.weight}' 2>/dev/null)" = 50 ]; do
    sleep 0.5
  done
  curl -sf --max-time 5 -X PUT "http://$v2/fault" -H 'content-type: application/json' -d '{"every":2,"status":429}' >/dev/null
  printf '       (the gpt-4o backend now answers every second request with 429, as a provider over quota does)\n'
) &
pids+=("$!")
start=$SECONDS
follow 240 Paused "RolledBack Aborted Promoted"
[ "$(kubectl -n "$ns" get "canaryrelease/$release" -o 'jsonpath={.status.rollout.pauseReason}')" = RateLimited ] ||
  fail "paused, but not as RateLimited"
echo "Stepped back and paused in $((SECONDS - start))s"
echo "rollout: $(kubectl -n "$ns" get "canaryrelease/$release" -o 'jsonpath={.status.rollout.message}')"
echo "VirtualService: $(kubectl -n "$ns" get "virtualservices.networking.istio.io/$release" \
  -o jsonpath='{range .spec.http[0].route[*]}{.destination.subset}={.weight}% {end}')  gateway: $(applied)"

say "kubectl canary status $release"
kubectl canary status "$release" -n "$ns"

say "kubectl describe: the rollouts' Events"
kubectl -n "$ns" describe "canaryrelease/$release" | sed -n '/^Events:/,$p'

say "Done. Logs: $dir. The cluster is still running: eval \$(make -s cluster-env) to use it, make cluster-down to stop it."
