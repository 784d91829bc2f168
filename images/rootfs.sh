#!/bin/sh
# rootfs.sh BINARY DEST: lays out a minimal root filesystem for one of our binaries — the binary,
# exactly the shared libraries it links (glibc, libgcc), CA certificates and a non-root user —
# and nothing else: no shell, no package manager. Used by the Dockerfile and by
# scripts/build-images.sh alike, so both produce the same image.
set -eu
bin=$1
dest=$2
name=$(basename "$bin")
mkdir -p "$dest/usr/local/bin" "$dest/etc/ssl/certs"
cp "$bin" "$dest/usr/local/bin/$name"
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\/.*ld-linux/ {print $1}' | while read -r lib; do
  mkdir -p "$dest$(dirname "$lib")"
  cp -L "$lib" "$dest$lib"
done
cp /etc/ssl/certs/ca-certificates.crt "$dest/etc/ssl/certs/ca-certificates.crt"
echo 'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin' > "$dest/etc/passwd"
echo 'nonroot:x:65532:' > "$dest/etc/group"
