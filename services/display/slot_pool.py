"""The host's slots: allocation within capacity, the warm pool, supervision, events.

It runs slots through a `SlotLauncher` port and asks whether another program
holds a display number or a port through plain predicates, so the unit tests run
it with an in-memory launcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from services.display.process_stack import RunningSlot, SlotLauncher, SlotSpec, SlotStartError
from services.display.recordings import Recordings
from services.display.settings import DisplaySettings
from services.display.slot import (
    Slot,
    SlotEvent,
    SlotEventKind,
    SlotState,
    Viewport,
)
from services.display.slot_allocator import Capacity, first_free
from services.display.slot_events import SlotEventHub
from services.runtime.errors import (
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from services.runtime.vnc_auth import new_password

log = logging.getLogger(__name__)

_LIVE = (SlotState.STARTING, SlotState.READY)
# A failed launch is retried on other numbers: another program may have taken
# the display or the port between our check and the server binding it.
_LAUNCH_ATTEMPTS = 3


@dataclass
class _Entry:
    slot: Slot
    spec: SlotSpec
    start_task: asyncio.Task[None] | None = None
    running: RunningSlot | None = None
    supervisor: asyncio.Task[None] | None = None
    releasing: bool = False

    @property
    def warm(self) -> bool:
        return self.slot.warm


class SlotPool:
    def __init__(
        self,
        settings: DisplaySettings,
        launcher: SlotLauncher,
        display_held: Callable[[int], bool],
        port_held: Callable[[int], bool],
        events: SlotEventHub | None = None,
        recordings: Recordings | None = None,
    ) -> None:
        self._settings = settings
        self.recordings = recordings
        self._launcher = launcher
        self._display_held = display_held
        self._port_held = port_held
        self.events = events or SlotEventHub()
        self.default_viewport = Viewport(settings.default_width, settings.default_height)
        self._entries: dict[str, _Entry] = {}
        self._refill_wanted = asyncio.Event()
        # Event-loop time before which no warm slot starts (a claim's delay).
        self._refill_after = 0.0
        self._refill_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False
        self._draining = False

    # ---- queries

    def capacity(self) -> Capacity:
        live = [e for e in self._entries.values() if e.slot.state in _LIVE]
        return Capacity(
            max_slots=self._settings.max_slots,
            held=sum(1 for e in live if not e.warm),
            warm=sum(1 for e in live if e.warm),
            warm_ready=sum(1 for e in live if e.warm and e.slot.state is SlotState.READY),
        )

    def get(self, slot_id: str) -> Slot:
        entry = self._entries.get(slot_id)
        if entry is None:
            raise NotFound(f"slot {slot_id!r} not found on host {self._settings.host_id}")
        return entry.slot

    def list(self, include_warm: bool = True) -> list[Slot]:
        entries = sorted(self._entries.values(), key=lambda e: (e.slot.create_time, e.slot.id))
        return [e.slot for e in entries if include_warm or not e.warm]

    # ---- life cycle

    def start(self) -> None:
        if self._settings.warm_slots > 0:
            self._refill_task = asyncio.create_task(self._refill_loop(), name="warm-pool-refill")
            self._refill_wanted.set()

    async def close(self) -> None:
        """Stop every slot (warm, starting, held) and the refill loop."""
        self._closed = True
        if self._refill_task is not None:
            self._refill_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refill_task
        entries = list(self._entries.values())
        self._entries.clear()
        await asyncio.gather(*(self._stop_entry(e) for e in entries))
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        self.events.close()

    # ---- drain (README.md, "Drain")

    @property
    def draining(self) -> bool:
        return self._draining

    def drain(self) -> None:
        """Refuse new allocations from now on; held slots go on until released.

        The warm slots stop at once: nobody may claim them any more.
        """
        if self._draining:
            return
        self._draining = True
        if self._refill_task is not None:
            self._refill_task.cancel()
        for entry in [e for e in self._entries.values() if e.warm]:
            self._entries.pop(entry.slot.id, None)
            self._in_background(self._stop_entry(entry))
            self._publish(SlotEventKind.RELEASED, entry.slot.with_state(SlotState.RELEASED))

    async def wait_until_idle(self) -> None:
        """Return once no caller holds a slot (or the pool closed)."""
        subscription = self.events.subscribe()
        try:
            while self.capacity().held > 0:
                if await anext(subscription, None) is None:
                    return
        finally:
            subscription.close()

    # ---- allocation

    async def allocate(
        self, viewport: Viewport | None, session_id: str, record: bool = False
    ) -> tuple[Slot, bool]:
        """A ready slot and whether it came from the warm pool; with `record`,
        its display is recorded from now until its release."""
        slot, from_pool = await self._allocate(viewport, session_id)
        if record:
            slot = await self._start_recording(slot)
        return slot, from_pool

    def pause_recording(self, slot_id: str, paused: bool) -> None:
        """Hold the slot's recording on its last frame, or go on (PauseRecording)."""
        entry = self._entries.get(slot_id)
        running = entry.running if entry is not None else None
        if running is None or not running.pause_recording(paused):
            raise NotFound(f"slot {slot_id} is not recorded")

    async def _start_recording(self, slot: Slot) -> Slot:
        entry = self._entries.get(slot.id)
        if self.recordings is None or entry is None or entry.running is None:
            raise FailedPrecondition(f"host {self._settings.host_id} cannot record")
        output = self.recordings.path_for(slot.session_id)
        started = datetime.now(UTC)
        try:
            await entry.running.start_recording(output)
        except OSError as exc:
            await self.release(slot.id)
            raise Unavailable(f"the recording did not start: {exc}") from exc
        self.recordings.active.add(slot.session_id)
        entry.slot = replace(entry.slot, recording_start_time=started)
        return entry.slot

    async def _allocate(self, viewport: Viewport | None, session_id: str) -> tuple[Slot, bool]:
        if self._closed:
            raise Unavailable("the display service is shutting down")
        if self._draining:
            raise FailedPrecondition(f"host {self._settings.host_id} is draining")
        wanted = viewport or self.default_viewport
        capacity = self.capacity()
        capacity.check_can_hold_one_more()
        if wanted == self.default_viewport:
            warm = self._claim_warm(session_id)
            if warm is not None:
                from_pool = warm.slot.state is SlotState.READY
                await self._await_start(warm)
                self._publish(SlotEventKind.ALLOCATED, warm.slot)
                return warm.slot, from_pool
        if capacity.must_evict_warm():
            self._evict_one_warm()
        entry = self._new_entry(wanted, session_id, warm=False)
        await self._await_start(entry)
        self._publish(SlotEventKind.ALLOCATED, entry.slot)
        return entry.slot, False

    def _claim_warm(self, session_id: str) -> _Entry | None:
        """Take a warm slot for a caller: a ready one first, else one still starting."""
        warm = [e for e in self._entries.values() if e.warm and e.slot.state in _LIVE]
        warm.sort(key=lambda e: e.slot.state is not SlotState.READY)
        if not warm:
            return None
        entry = warm[0]
        entry.slot = replace(entry.slot, session_id=session_id, warm=False)
        # From the first claim since the last refill: claims coming faster than
        # the delay must not keep the pool from refilling.
        now = asyncio.get_running_loop().time()
        if self._refill_after <= now:
            self._refill_after = now + self._settings.warm_refill_delay_s
        self._refill_wanted.set()
        return entry

    def _evict_one_warm(self) -> None:
        warm = [e for e in self._entries.values() if e.warm and e.slot.state in _LIVE]
        # A slot still starting costs less to give up than a ready one.
        warm.sort(key=lambda e: e.slot.state is SlotState.READY)
        entry = warm[0]
        self._entries.pop(entry.slot.id, None)
        self._in_background(self._stop_entry(entry))
        # Whoever set up something on the warm display (a browser) lets it go.
        self._publish(SlotEventKind.RELEASED, entry.slot.with_state(SlotState.RELEASED))

    def _new_entry(self, viewport: Viewport, session_id: str, warm: bool) -> _Entry:
        slot_id = uuid.uuid4().hex[:12]
        spec = self._next_spec(slot_id, viewport, avoid_displays=set(), avoid_ports=set())
        slot = Slot(
            id=slot_id,
            host_id=self._settings.host_id,
            state=SlotState.STARTING,
            backend=self._settings.backend,
            display=spec.display,
            viewport=viewport,
            vnc_port=spec.vnc_port,
            websocket_url="",
            session_id=session_id,
            create_time=datetime.now(UTC),
            warm=warm,
        )
        entry = _Entry(slot=slot, spec=spec)
        self._entries[slot_id] = entry
        entry.start_task = asyncio.create_task(self._launch(entry), name=f"start-slot-{slot_id}")
        return entry

    def _next_spec(
        self, slot_id: str, viewport: Viewport, avoid_displays: set[int], avoid_ports: set[int]
    ) -> SlotSpec:
        live = [e.spec for e in self._entries.values() if e.slot.state in _LIVE]
        display = first_free(
            self._settings.displays,
            {s.display for s in live} | avoid_displays,
            self._display_held,
        )
        if display is None:
            displays = self._settings.displays
            raise ResourceExhausted(
                f"no free X display number in {displays.first}-{displays.last}: "
                "other programs hold the rest (BATON_DISPLAY_NUMBERS)"
            )
        port = first_free(
            self._settings.vnc_ports, {s.vnc_port for s in live} | avoid_ports, self._port_held
        )
        if port is None:
            ports = self._settings.vnc_ports
            raise ResourceExhausted(
                f"no free VNC port in {ports.first}-{ports.last} (BATON_VNC_PORTS)"
            )
        return SlotSpec(
            slot_id,
            display,
            port,
            viewport,
            token=secrets.token_urlsafe(18),
            vnc_password=new_password(),
        )

    async def _launch(self, entry: _Entry) -> None:
        tried_displays: set[int] = set()
        tried_ports: set[int] = set()
        for attempt in range(1, _LAUNCH_ATTEMPTS + 1):
            try:
                running = await self._launcher.launch(entry.spec)
                break
            except SlotStartError as exc:
                log.warning(
                    "slot %s on :%d attempt %d failed: %s",
                    entry.slot.id,
                    entry.spec.display,
                    attempt,
                    exc,
                )
                if attempt == _LAUNCH_ATTEMPTS:
                    raise
                tried_displays.add(entry.spec.display)
                tried_ports.add(entry.spec.vnc_port)
                entry.spec = self._next_spec(
                    entry.slot.id, entry.spec.viewport, tried_displays, tried_ports
                )
                entry.slot = replace(
                    entry.slot, display=entry.spec.display, vnc_port=entry.spec.vnc_port
                )
        entry.running = running
        entry.slot = replace(
            entry.slot,
            state=SlotState.READY,
            websocket_url=running.websocket_url,
            vnc_password=entry.spec.vnc_password,
            xauthority=running.xauthority,
        )
        entry.supervisor = asyncio.create_task(
            self._supervise(entry), name=f"supervise-slot-{entry.slot.id}"
        )
        if entry.warm:
            self._publish(SlotEventKind.WARMED, entry.slot)

    async def _await_start(self, entry: _Entry) -> None:
        assert entry.start_task is not None
        try:
            # Not shielded: a caller that gives up takes its starting slot with it.
            await entry.start_task
        except BaseException as exc:
            self._forget(entry)
            if entry.running is not None:
                # Started just as the caller went away: nobody holds it.
                self._in_background(self._stop_entry(entry))
            if isinstance(exc, SlotStartError):
                raise Unavailable(f"the slot did not start: {exc}") from exc
            raise

    # ---- supervision and release

    async def _supervise(self, entry: _Entry) -> None:
        assert entry.running is not None
        reason = await entry.running.wait_exit()
        if entry.releasing:
            return
        log.error("slot %s failed: %s", entry.slot.id, reason)
        entry.slot = entry.slot.with_state(SlotState.FAILED, reason)
        self._publish(SlotEventKind.FAILED, entry.slot, reason)
        await entry.running.stop()
        self._recording_ended(entry)
        if entry.warm:
            self._forget(entry)
        self._refill_wanted.set()

    async def release(self, slot_id: str) -> None:
        entry = self._entries.get(slot_id)
        if entry is None:
            raise NotFound(f"slot {slot_id!r} not found on host {self._settings.host_id}")
        if entry.slot.state is SlotState.FAILED:
            # Already stopped and cleaned when it failed: only the record goes.
            self._forget(entry)
            return
        if entry.slot.state is SlotState.STARTING and not entry.warm:
            raise FailedPrecondition(f"slot {slot_id!r} is still starting")
        self._entries.pop(slot_id, None)
        await self._stop_entry(entry)
        self._publish(SlotEventKind.RELEASED, entry.slot.with_state(SlotState.RELEASED))
        self._refill_wanted.set()

    async def _stop_entry(self, entry: _Entry) -> None:
        entry.releasing = True
        for task in (entry.start_task, entry.supervisor):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, SlotStartError):
                    await task
        if entry.running is not None:
            await entry.running.stop()
        self._recording_ended(entry)

    def _recording_ended(self, entry: _Entry) -> None:
        if self.recordings is not None and entry.slot.recording_start_time is not None:
            self.recordings.active.discard(entry.slot.session_id)
            self.recordings.ended(entry.slot.session_id)

    def _forget(self, entry: _Entry) -> None:
        if self._entries.get(entry.slot.id) is entry:
            del self._entries[entry.slot.id]

    def _publish(self, kind: SlotEventKind, slot: Slot, reason: str = "") -> None:
        self.events.publish(SlotEvent(kind=kind, slot=slot, reason=reason))

    def _in_background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---- warm pool

    async def _refill_loop(self) -> None:
        delay = 0.5
        while True:
            await self._refill_wanted.wait()
            self._refill_wanted.clear()
            while not self._closed:
                if self.capacity().warm_to_start(self._settings.warm_slots) <= 0:
                    break
                # Starting X, VNC and (on the automation side) Chromium costs the
                # CPU the session that claimed the last warm slot is starting with.
                wait = self._refill_after - asyncio.get_running_loop().time()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                try:
                    entry = self._new_entry(self.default_viewport, "", warm=True)
                except ResourceExhausted as exc:
                    log.warning("warm pool cannot grow: %s", exc)
                    break
                assert entry.start_task is not None
                await asyncio.wait([entry.start_task])
                if entry.start_task.cancelled():
                    continue
                error = entry.start_task.exception()
                if error is None:
                    delay = 0.5
                    continue
                self._forget(entry)
                log.error("warm slot did not start (retrying in %.1f s): %s", delay, error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
