#!/usr/bin/python3 -IS
"""Playwright starts this as the browser (services/automation/cdp_hub.py).

Playwright talks to Chromium over the debugging pipe it hands its child as fds 3
(commands in) and 4 (answers out). We pass those two fds to the automation
service's CDP hub over its unix socket, with the launch's token, and take back
the ends of two new pipes for Chromium; then we exec the next program (the uid
launcher, or Chromium) with those as fds 3 and 4, keeping our pid. The hub sits
between Playwright and Chromium: it forwards Playwright's messages as they are,
and lets gated external CDP clients in (services/automation/README.md, "CDP").
Standard library only, no site packages: this runs once per launch, before
Chromium.

It also folds the feature switches together: Chromium keeps only the last
`--enable-features` and the last `--disable-features`, and Playwright passes
lists of its own that Baton's (chromium.py, chromium_args) would otherwise
replace, silently dropping Playwright's workarounds.
"""

import os
import socket
import sys

PIPE_FDS = (3, 4)
FEATURE_SWITCHES = ("--enable-features=", "--disable-features=")


def merge_feature_switches(argv: list[str]) -> list[str]:
    """`argv` with one switch of each kind listing every feature its switches
    named, in first-seen order, where the first of them was."""
    end = argv.index("--") if "--" in argv else len(argv)
    features: dict[str, list[str]] = {prefix: [] for prefix in FEATURE_SWITCHES}
    merged: list[str] = []
    placed = False
    for arg in argv[:end]:
        prefix = next((p for p in FEATURE_SWITCHES if arg.startswith(p)), None)
        if prefix is None:
            merged.append(arg)
            continue
        for name in arg[len(prefix) :].split(","):
            if name and name not in features[prefix]:
                features[prefix].append(name)
        if not placed:
            merged.append("")
            placed = True
    switches = [prefix + ",".join(names) for prefix, names in features.items() if names]
    if placed:
        at = merged.index("")
        merged[at : at + 1] = switches
    return merged + argv[end:]


def main() -> None:
    address = os.environ.pop("BATON_CDP_SOCKET")
    token = os.environ.pop("BATON_CDP_TOKEN")
    program = os.environ.pop("BATON_BROWSER_NEXT")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as hub:
        hub.connect(address)
        socket.send_fds(hub, [token.encode()], list(PIPE_FDS))
        answer, fds, _flags, _address = socket.recv_fds(hub, 64, len(PIPE_FDS))
    if answer != b"ok" or len(fds) != len(PIPE_FDS):
        sys.exit(f"browser-pipe: the CDP hub refused launch {token}: {answer.decode()}")
    for fd, target in zip(fds, PIPE_FDS, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    os.execv(program, [program, *merge_feature_switches(sys.argv[1:])])


if __name__ == "__main__":
    main()
