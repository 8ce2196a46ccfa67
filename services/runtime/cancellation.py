"""Retry loops that stay cancellable.

A cancellation can get lost on its way: grpc and aetcd may turn the cancellation
of a call into an error of their own (an RPC error with status CANCELLED, a
client error), and Python 3.11's `asyncio.wait_for` returns the inner result
when it finishes as the cancellation arrives, dropping the cancellation. A loop
that goes on after either would never stop, and whoever awaits it (a service's
shutdown) would wait for good: seen as a session service that never stopped in
tests/session/test_replicas.py, its task adoption waiting for the next event
while its task was marked cancelling. So retry loops call `unless_cancelled`
on what they catch and `check_cancelled` at the top of every round.
"""

from __future__ import annotations

import asyncio


def check_cancelled() -> None:
    """Raise CancelledError when the current task has been asked to stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def unless_cancelled(error: BaseException) -> None:
    """Raise CancelledError (from `error`) when the current task is being
    cancelled; otherwise return, and the caller handles `error`."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from error
