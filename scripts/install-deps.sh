#!/usr/bin/env bash
# Installs everything the demo and the tests need, idempotently: Debian packages, firebase-tools
# (pinned by tools/firebase/package-lock.json), the Go-built tools (cached by version), the Python
# reference clients, and the Rust components. Safe to run again: each step skips what is there.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${SCALABLE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scalableapp}
export SCALABLE_CACHE=$CACHE
log() { printf '[install-deps] %s\n' "$*" >&2; }

# Debian packages: Redis and Sentinel, promtool (prometheus), nginx as the demo's load balancer,
# umoci to build OCI images without a container engine, shellcheck for the shell scripts.
APT_PACKAGES=(redis-server redis-sentinel prometheus nginx-light umoci shellcheck)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The packages start system-wide services on the default ports; the environment runs its own.
for svc in redis-server redis-sentinel prometheus nginx; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done

# firebase-tools for the Auth emulator, exactly as locked.
FB="$ROOT/tools/firebase"
stamp="$FB/node_modules/.lock-stamp"
if [[ ! -x "$FB/node_modules/.bin/firebase" ]] || ! cmp -s "$FB/package-lock.json" "$stamp"; then
  log "npm ci (firebase-tools)"
  (cd "$FB" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$FB/package-lock.json" "$stamp"
fi

# The Firestore emulator comes with the installed Google Cloud SDK, and runs on Java.
sdk_root=$(gcloud info --format='value(installation.sdk_root)' 2>/dev/null || true)
if [[ ! -x "${sdk_root:-/usr/lib/google-cloud-sdk}/platform/cloud-firestore-emulator/cloud_firestore_emulator" ]]; then
  log "the Firestore emulator is missing: install the Google Cloud SDK component cloud-firestore-emulator"
  exit 1
fi
command -v java >/dev/null || { log "java is missing (the Firestore emulator needs a JRE 11+)"; exit 1; }

# Go-built tools: etcd, kube-apiserver, kube-controller-manager, helm, fake-gcs-server.
"$ROOT/scripts/build-go-tools.sh" all

# Python reference clients for differential tests, when the project has them.
if [[ -x "$ROOT/tools/python/setup.sh" ]]; then
  "$ROOT/tools/python/setup.sh"
fi

# Rust lints.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  log "rustup component add rustfmt clippy"
  rustup component add rustfmt clippy
fi
log "ready (cache: $CACHE)"
