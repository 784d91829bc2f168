#!/usr/bin/env bash
# Builds the operator, api-server and worker OCI images without a container engine: the same
# root filesystems as images/Dockerfile (images/rootfs.sh), packed into OCI image layouts by
# umoci. Output: $IMAGES_DIR/<name> (an OCI layout with tag <version>), default
# <cargo target dir>/images. PROFILE=release (default) or dev (what the tests use, to reuse the
# test build).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PROFILE=${PROFILE:-release}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
IMAGES_DIR=${IMAGES_DIR:-$TARGET_DIR/images}
VERSION=$(cargo metadata --no-deps --format-version 1 | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="operator"))')
command -v umoci >/dev/null || { echo "umoci is missing: apt-get install umoci (or make deps)" >&2; exit 1; }

cargo build --profile "$PROFILE" --package operator --package api-server --package worker
out_dir=$TARGET_DIR/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")

declare -A PORTS=([operator]="9090/tcp" [api-server]="8080/tcp 9090/tcp" [worker]="9090/tcp")
mkdir -p "$IMAGES_DIR"
for bin in operator api-server worker; do
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  images/rootfs.sh "$out_dir/$bin" "$work/rootfs"
  layout="$IMAGES_DIR/$bin"
  rm -rf "$layout"
  umoci init --layout "$layout"
  umoci new --image "$layout:$VERSION"
  umoci insert --rootless --image "$layout:$VERSION" "$work/rootfs" /
  ports=()
  for p in ${PORTS[$bin]}; do ports+=(--config.exposedports "$p"); done
  umoci config --image "$layout:$VERSION" \
    --config.user 65532:65532 \
    --config.entrypoint "/usr/local/bin/$bin" \
    --config.workingdir / \
    --config.env PATH=/usr/local/bin \
    "${ports[@]}" \
    --config.label "org.opencontainers.image.title=$bin" \
    --config.label "org.opencontainers.image.version=$VERSION" \
    --config.label "org.opencontainers.image.source=https://scalable.dev" \
    --author "ScalableApp" --history.comment "images/rootfs.sh $bin"
  rm -rf "$work"
  trap - EXIT
  echo "$layout:$VERSION"
done
