#!/usr/bin/env bash
# Build Baton's image with podman where no registry is reachable (our build
# machines, make image-test; deploy/README.md, "Image and compose"):
#   1. the base image localhost/baton-base:bookworm, made once with debootstrap
#      from the Debian mirror this machine's apt uses (skipped when it exists);
#   2. deploy/Dockerfile on top of it, tagged $1 (default baton:test).
# Anywhere with a registry, `docker build -f deploy/Dockerfile .` is enough.
# podman runs with deploy/containers.conf unless CONTAINERS_CONF names another;
# --format docker keeps HEALTHCHECK and SHELL (the OCI format has neither).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
tag=${1:-baton:test}
base=localhost/baton-base:bookworm
export CONTAINERS_CONF=${CONTAINERS_CONF:-$repo/deploy/containers.conf}

if ! podman image exists "$base"; then
  # The first Debian mirror apt names (deb822 "URIs:" or one-line "deb" form).
  # (grep exits 2 for a list that does not exist: not an error here.)
  mirror=$({ grep -h -s -o -E '^(URIs:[[:space:]]*|deb[[:space:]]+)[^[:space:]]+/debian/?$' \
    /etc/apt/sources.list /etc/apt/sources.list.d/* || true; } | head -1 | awk '{print $NF}')
  if [[ -z "$mirror" ]]; then
    echo "error: no Debian mirror in /etc/apt/sources.list*: cannot debootstrap the base" >&2
    exit 2
  fi
  root=$(mktemp -d /var/tmp/baton-base.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  trap 'exit 1' INT TERM
  echo "build-image: debootstrap bookworm from $mirror" >&2
  debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | podman import --quiet - "$base" >/dev/null
  rm -rf "$root"
fi
# This machine's CA bundle: pip and npm in the build trust what the host trusts
# (a TLS-intercepting proxy's CA included); a build secret, in no layer.
podman build --quiet --format docker --network host --build-arg "BASE=$base" \
  --secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt \
  -t "$tag" -f "$repo/deploy/Dockerfile" "$repo"
