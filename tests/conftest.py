"""Fixtures and helpers shared by every test tier."""

from __future__ import annotations

import os
import shutil
import socket

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_binary(name: str, debian_package: str) -> str:
    """Path of `name`; skip (fail in CI, which installs it) when it is missing."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed: apt-get install {debian_package}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
