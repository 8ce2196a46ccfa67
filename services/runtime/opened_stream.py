"""A client stream whose first message opens it and whose next ones carry text:
AutomationService.Cdp and SessionService.Cdp (services/automation/README.md, "CDP")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from services.runtime.errors import InvalidArgument


async def opened(requests: AsyncIterator[Any]) -> tuple[Any, AsyncIterator[str]]:
    """The `open` of the first request (InvalidArgument if it is not one), and the
    `message` text of the requests after it."""
    first = await anext(aiter(requests), None)
    if first is None or first.WhichOneof("kind") != "open":
        raise InvalidArgument("the stream starts with `open`")

    async def messages() -> AsyncIterator[str]:
        async for request in requests:
            if request.WhichOneof("kind") == "message":
                yield request.message

    return first.open, messages()
