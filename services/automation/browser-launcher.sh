#!/bin/sh
# Chromium as its display's own user, sandbox on (browser_user.py): Playwright
# starts this instead of Chromium with the uid and the browser's path in the
# environment; we drop every group and capability and exec Chromium, which keeps
# our pid and the pipes Playwright talks to it through.
uid=$BATON_BROWSER_UID
executable=$BATON_BROWSER_EXECUTABLE
unset BATON_BROWSER_UID BATON_BROWSER_EXECUTABLE
exec setpriv --reuid="$uid" --regid="$uid" --clear-groups --inh-caps=-all \
  --bounding-set=-all --no-new-privs -- "$executable" "$@"
