#!/usr/bin/env bash
# Install the Debian packages listed in deploy/debian-packages.txt (what Baton
# runs with) and deploy/test-packages.txt (what only the tests use: podman and
# friends for `make image-test`) that are missing. Does nothing when all are
# present, so `make run` and `make test` can call it every time.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
missing=()
while read -r pkg; do
  [[ -z "$pkg" || "$pkg" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < <(cat "$here/debian-packages.txt" "$here/test-packages.txt")
# npm fetches the console's viewer (noVNC). A Node.js that ships its own npm
# (NodeSource) must not get Debian's npm on top of it.
command -v npm >/dev/null || missing+=(npm)
sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The services' unprivileged user, and the browsers' uids it may map (README.md,
# "Isolation"): the automation service run as baton makes a user namespace of its
# own in which display N's Chromium runs as uid 300000 + N.
if [[ $(id -u) -eq 0 ]]; then
  id baton >/dev/null 2>&1 ||
    useradd --system --user-group --create-home --home-dir /var/lib/baton \
      --shell /usr/sbin/nologin baton
  for file in /etc/subuid /etc/subgid; do
    grep -q '^baton:' "$file" 2>/dev/null || echo "baton:300000:65536" >>"$file"
  done
fi
