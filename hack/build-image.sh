#!/usr/bin/env bash
# Build the onion image (operator + router). With docker or podman, whichever has a running
# engine ($CONTAINER_ENGINE picks one), from the registry's Python base. Where no engine runs
# (this project's build machines: no Docker daemon, and podman's cgroup and rlimit setup is
# refused there), with Debian's buildah in chroot isolation, from a Debian bookworm base made by
# debootstrap (the registry base cannot be pulled), kept in buildah's storage for next time.
# Usage: hack/build-image.sh [IMAGE]      Prints the image name on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
image="${1:-ghcr.io/onion-of-experts/onion:$version}"
base="localhost/onion-python-base:bookworm"
log() { echo "[build-image] $*" >&2; }

engine="${CONTAINER_ENGINE:-}"
if [[ -z "$engine" ]]; then
  for candidate in docker podman; do
    # A client binary is not enough: `info` needs a reachable engine (daemon or rootless).
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" info >/dev/null 2>&1; then
      engine=$candidate
      break
    fi
  done
fi
if [[ -z "$engine" ]] && command -v buildah >/dev/null 2>&1; then
  engine=buildah
fi
if [[ -z "$engine" ]]; then
  echo "make image: no docker or podman engine runs here, and buildah is not installed." >&2
  echo "  On Debian: apt-get install buildah debootstrap   (then make image again)" >&2
  echo "  Elsewhere: docker build -t $image ." >&2
  exit 2
fi

if [[ "$engine" != buildah ]]; then
  log "$engine build -t $image"
  "$engine" build --build-arg "VERSION=$version" -t "$image" .
  echo "$image"
  exit 0
fi

if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || { echo "make image: debootstrap is missing (apt-get install debootstrap)" >&2; exit 2; }
  log "base image $base: debootstrap bookworm (minbase + python3, once; a few minutes)"
  ctr=$(buildah from scratch)
  trap 'buildah umount "$ctr" >/dev/null 2>&1 || true; buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
  root=$(buildah mount "$ctr")
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" >&2
  ln -sf python3 "$root/usr/bin/python"  # the Dockerfile runs `python -m venv`
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  buildah umount "$ctr" >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
  buildah commit --quiet "$ctr" "$base" >/dev/null
  buildah rm "$ctr" >/dev/null
  trap - EXIT
fi

log "buildah bud -t $image (PYTHON_IMAGE=$base)"
# chroot isolation: no user namespaces or cgroups needed. pip in the build stage checks https
# against the build machine's CA bundle, mounted read-only.
buildah bud --isolation chroot --ulimit nofile=20000:20000 \
  --build-arg "PYTHON_IMAGE=$base" --build-arg "VERSION=$version" \
  -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
  --layers=false --quiet -t "$image" . >&2
buildah rmi --prune >/dev/null 2>&1 || true  # the image this one replaced, now untagged
echo "$image"
