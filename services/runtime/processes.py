"""Child process supervision: binaries, process groups, SIGTERM then SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence

from services.runtime.errors import BatonError


class MissingBinary(BatonError):
    """A program Baton runs is not installed."""


def require_binary(name: str, debian_package: str) -> str:
    """The absolute path of `name`, or an error naming the package to install."""
    path = shutil.which(name)
    if path is None:
        raise MissingBinary(
            f"{name} not found on PATH: install the Debian package {debian_package} "
            f"(apt-get install {debian_package})"
        )
    return path


def require_module(name: str) -> None:
    """Check that the Python module `name`, which Baton runs as `python -m name`
    with its own interpreter, is installed beside it (a dependency in pyproject.toml)."""
    if importlib.util.find_spec(name) is None:
        raise MissingBinary(
            f"the Python module {name} is not installed in {sys.prefix}: "
            "install Baton's dependencies (pip install -e .)"
        )


async def start_process(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    stdout: int | None = asyncio.subprocess.DEVNULL,
    stderr: int | None = asyncio.subprocess.DEVNULL,
) -> asyncio.subprocess.Process:
    """Start `argv` (no shell) as the leader of a new process group."""
    return await asyncio.create_subprocess_exec(
        *argv,
        env=dict(env) if env is not None else None,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
    )


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def stop_process_group(
    process: asyncio.subprocess.Process, grace: float, leader_only: bool = False
) -> int | None:
    """SIGTERM the process group, SIGKILL it after `grace` seconds; reap it.

    With `leader_only`, SIGTERM goes to the leader alone, so that a service can
    shut down its own children in order; what is left after it is killed.
    """
    if process.returncode is None:
        if leader_only:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        else:
            _signal_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            _signal_group(process.pid, signal.SIGKILL)
            await process.wait()
    # Children that outlived the leader still share its group.
    _signal_group(process.pid, signal.SIGKILL)
    return process.returncode


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
