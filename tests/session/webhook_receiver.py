"""A real webhook receiver on loopback (aiohttp), for the webhook tests.

It records every POST (its Baton-Signature header and raw body) and answers as
told: 200, 500 for the next `fail_next` requests, or never (`hang`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Received:
    signature: str
    body: bytes
    status: int

    @property
    def event(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value


@dataclass
class WebhookReceiver:
    url: str = ""
    requests: list[Received] = field(default_factory=list)
    fail_next: int = 0
    hang: bool = False
    # Requests being held unanswered (hang).
    held: int = 0
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def delivered(self) -> list[dict[str, Any]]:
        return [r.event for r in self.requests if r.status == 200]

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float = 20) -> None:
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(predicate)

    async def _post(self, request: web.Request) -> web.Response:
        body = await request.read()
        signature = request.headers.get("Baton-Signature", "")
        if self.hang:
            async with self._changed:
                self.held += 1
                self._changed.notify_all()
            await asyncio.Event().wait()  # until the client or the server goes
        status = 200
        if self.fail_next > 0:
            self.fail_next -= 1
            status = 500
        async with self._changed:
            self.requests.append(Received(signature, body, status))
            self._changed.notify_all()
        return web.Response(status=status)


@contextlib.asynccontextmanager
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    app = web.Application()
    app.router.add_post("/hooks", receiver._post)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hooks"
    try:
        yield receiver
    finally:
        await runner.cleanup()


def verify(secret: str, header: str, body: bytes, tolerance_s: float = 300) -> bool:
    """Check a Baton-Signature as a receiver would, with the hmac module only."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    timestamp = fields["t"]
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    fresh = abs(time.time() - int(timestamp)) <= tolerance_s
    return fresh and hmac.compare_digest(expected, fields["v1"])
