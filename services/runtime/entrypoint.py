"""How every service process runs: its async main under `run_service`, which
turns bad settings or a missing binary into a one-line message and exit status
2 (never a traceback), and `until_stop_signal` to wait for SIGTERM or SIGINT
(or `stop_signals`, for a launcher whose clean-up a second one must not cut
short)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from services.runtime.errors import BatonError
from services.runtime.settings import ConfigError


def run_service(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    try:
        asyncio.run(main())
    except (ConfigError, BatonError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        pass


async def until_stop_signal() -> None:
    """Return once SIGTERM or SIGINT arrives."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


@contextlib.contextmanager
def stop_signals(on_repeat: Callable[[], None] = lambda: None) -> Iterator[asyncio.Event]:
    """An event set by the first SIGTERM or SIGINT; later ones call `on_repeat`
    instead of killing the process. The handlers stay for the whole block, so
    a clean-up inside it runs to its end."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)

    def on_signal() -> None:
        if stop.is_set():
            on_repeat()
        stop.set()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal)
    try:
        yield stop
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
