"""Run a service's async main: bad settings or a missing binary end it with a
one-line message and exit status 2, never a traceback."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
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
