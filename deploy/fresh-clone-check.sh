#!/usr/bin/env bash
# The fresh-machine check (issue 9): clone the committed HEAD into a temporary
# folder, install with the project's own script, run `make test` there, and
# fail unless pytest passed with no test skipped. Run it before landing, after
# anything that adds a program, a package or a path the tests depend on.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
clone=$(mktemp -d /tmp/baton-fresh-clone.XXXXXX)
# The stack's services run as user baton (README.md, "Isolation"): let it in.
chmod 755 "$clone"
trap 'rm -rf "$clone"' EXIT
git clone --quiet "$repo" "$clone"
cd "$clone"
deploy/install-system-packages.sh
status=0
make test 2>&1 | tee "$clone/make-test.log" || status=$?
summary=$(grep -E '^=+ .*(passed|failed|error).* in [0-9.]+s' "$clone/make-test.log" | tail -1 || true)
echo "fresh-clone-check: pytest summary: ${summary:-none}"
if [[ $status -ne 0 ]]; then
  echo "fresh-clone-check: make test failed (exit $status)"
  exit 1
fi
if [[ -z "$summary" || "$summary" == *skipped* ]]; then
  echo "fresh-clone-check: some test was skipped, or pytest printed no summary"
  exit 1
fi
echo "fresh-clone-check: passed, nothing skipped"
