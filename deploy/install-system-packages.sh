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
[[ ${#missing[@]} -eq 0 ]] && exit 0
echo "installing Debian packages: ${missing[*]}"
sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
