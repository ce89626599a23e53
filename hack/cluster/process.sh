# The components as processes, for hack/cluster.sh (sourced, never run): pid files and whether they
# still run ours, start and stop, waits bounded by a deadline, failure reports, health, names.
# shellcheck shell=bash disable=SC2154 # run, repo, components: set by hack/cluster.sh, which sources this

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
  # fd 9 is the lock of hack/cluster.sh; a long-lived child holding it would block every later up/down.
  nohup "$@" >"$run/logs/$c.log" 2>&1 </dev/null 9>&- &
  child[$c]=$!
  echo "$!" >"$run/pids/$c.pid"
}

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
