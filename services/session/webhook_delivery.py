"""WebhookSender: posts webhook events to BATON_WEBHOOK_URL, signed, with retries.

`send` only starts a delivery task and returns: a slow or dead receiver never
delays the change that made the event (a control change, a task event). Each
event is tried up to `max_attempts` times, the wait between tries doubling from
`backoff_s` (capped at MAX_BACKOFF_S); a 2xx answer delivers it. At most
`max_pending` events are in delivery at once; one more is dropped and counted.
Events of one session may arrive out of order when one is retried: receivers
order them by `data.version` (README.md, "Webhooks").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from services.session.webhooks import SIGNATURE_HEADER, WebhookEvent, body_of, signature

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class WebhookSettings:
    # Empty: no webhooks.
    url: str = ""
    secret: str = ""
    # Per attempt: connect, send and the receiver's answer.
    timeout_s: float = 5.0
    max_attempts: int = 5
    # The wait before the second attempt; it doubles for each next one.
    backoff_s: float = 0.5
    max_pending: int = 1000

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def __repr__(self) -> str:
        # The secret stays out of logs.
        return f"WebhookSettings(url={self.url!r}, max_attempts={self.max_attempts})"


@dataclass
class WebhookStats:
    """Counted for /metrics (GetWebhookStats): attempts and what became of events."""

    attempts: int = 0
    failed_attempts: int = 0
    delivered: int = 0
    # Given up after max_attempts, or not started with max_pending in delivery.
    dropped: int = 0


def backoff(settings: WebhookSettings, failed_attempts: int) -> float:
    """The wait after the n-th failed attempt of an event (n from 1)."""
    return float(min(settings.backoff_s * 2 ** (failed_attempts - 1), MAX_BACKOFF_S))


class WebhookSender:
    def __init__(self, settings: WebhookSettings, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._clock = clock
        self.stats = WebhookStats()
        self._deliveries: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None

    def send(self, event: WebhookEvent) -> None:
        if len(self._deliveries) >= self._settings.max_pending:
            self.stats.dropped += 1
            log.warning(
                "webhook %s of session %s dropped: %d events in delivery already",
                event.type,
                event.session_id,
                len(self._deliveries),
            )
            return
        delivery = asyncio.ensure_future(self._deliver(event))
        self._deliveries.add(delivery)
        delivery.add_done_callback(self._deliveries.discard)

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._settings.timeout_s)
            )
        return self._http

    async def _deliver(self, event: WebhookEvent) -> None:
        body = body_of(event)
        try:
            await self._attempts(event, body)
        except asyncio.CancelledError:
            # The service stops: what was not delivered is dropped.
            self.stats.dropped += 1
            raise

    async def _attempts(self, event: WebhookEvent, body: bytes) -> None:
        settings = self._settings
        error = ""
        for attempt in range(1, settings.max_attempts + 1):
            self.stats.attempts += 1
            # A fresh timestamp per attempt: receivers may refuse old ones.
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: signature(settings.secret, int(self._clock()), body),
            }
            try:
                async with self._client().post(settings.url, data=body, headers=headers) as answer:
                    if 200 <= answer.status < 300:
                        self.stats.delivered += 1
                        return
                    error = f"HTTP {answer.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            self.stats.failed_attempts += 1
            log.info(
                "webhook %s of session %s: attempt %d failed: %s",
                event.type,
                event.session_id,
                attempt,
                error,
            )
            if attempt < settings.max_attempts:
                await asyncio.sleep(backoff(settings, attempt))
        self.stats.dropped += 1
        log.warning(
            "webhook %s of session %s dropped after %d attempts: %s",
            event.type,
            event.session_id,
            settings.max_attempts,
            error,
        )

    async def close(self) -> None:
        """Stop deliveries in progress (their events are dropped) and the HTTP client."""
        deliveries = list(self._deliveries)
        for delivery in deliveries:
            delivery.cancel()
        for delivery in deliveries:
            with contextlib.suppress(asyncio.CancelledError):
                await delivery
        if self._http is not None:
            await self._http.close()
            self._http = None
