"""Follows this host's display service and tells the prewarmer about its slots.

ListSlots after WatchSlots has answered (so no event falls between the two),
then every event; when the display service goes away (restart, shutdown) it
reconnects with a growing delay, logging once per outage.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from baton.display.v1 import display_pb2, display_pb2_grpc
from services.automation.browser_prewarm import BrowserPrewarmer, SlotView
from services.runtime.grpc_client import open_channel
from services.runtime.grpc_tls import PLAINTEXT, GrpcTls
from services.runtime.internal_auth import InternalToken

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0


def slot_view(slot: display_pb2.Slot) -> SlotView:
    return SlotView(
        slot_id=slot.id,
        display=slot.display,
        width=slot.viewport.width,
        height=slot.viewport.height,
        warm_ready=slot.warm and slot.state == display_pb2.SLOT_STATE_READY,
        xauthority=slot.xauthority,
    )


def apply_event(prewarmer: BrowserPrewarmer, event: display_pb2.WatchSlotsResponse) -> None:
    kind = event.WhichOneof("event")
    if kind == "warmed":
        prewarmer.slot_warmed(slot_view(event.warmed.slot))
    elif kind == "released":
        prewarmer.slot_gone(event.released.slot.id)
    elif kind == "failed":
        prewarmer.slot_gone(event.failed.slot.id)
    # "allocated": the browser stays for the StartTask that follows.


def retry_delay(failures: int) -> float:
    """Seconds before reconnection attempt number `failures` (1, 2, ...)."""
    return float(min(RETRY_FIRST_S * 2 ** max(failures - 1, 0), RETRY_MAX_S))


class DisplaySlotFeed:
    def __init__(
        self,
        address: str,
        prewarmer: BrowserPrewarmer,
        token: InternalToken,
        tls: GrpcTls = PLAINTEXT,
    ) -> None:
        self._tls = tls
        self._address = address
        self._token = token
        self._prewarmer = prewarmer
        self._connected = False

    async def run(self) -> None:
        """Follow the display service until cancelled."""
        failures = 0
        while True:
            self._connected = False
            try:
                await self._follow()
                reason = "the slot stream ended"
            except grpc.aio.AioRpcError as error:
                reason = f"{error.code().name}: {error.details()}"
            if self._connected:
                failures = 0
            failures += 1
            if failures == 1:
                # Once per outage, not once per attempt.
                log.warning(
                    "display service at %s: %s; browsers are not pre-warmed until it is back",
                    self._address,
                    reason,
                )
            await asyncio.sleep(retry_delay(failures))

    async def _follow(self) -> None:
        async with open_channel(self._address, self._token, self._tls) as channel:
            stub = display_pb2_grpc.DisplayServiceStub(channel)
            call = stub.WatchSlots(display_pb2.WatchSlotsRequest())
            try:
                # The display service answers with headers once subscribed.
                await call.initial_metadata()
                listing = await stub.ListSlots(display_pb2.ListSlotsRequest(), timeout=10)
                self._prewarmer.reconcile(slot_view(slot) for slot in listing.slots)
                self._connected = True
                log.info("following display service at %s for warm slots", self._address)
                async for event in call:
                    apply_event(self._prewarmer, event)
            finally:
                call.cancel()
