"""Placement: choosing a worker host for a new session and getting a slot there.

Candidates are the live, non-draining hosts whose record shows a free slot;
a host with a warm slot ready comes first (the session starts without a cold
X server), then the least loaded (most free, then fewest held). The record is
a hint that may lag: the display's AllocateSlot is the reservation, refused
when the host is full, so two session-service replicas never hand out the
same capacity. A host that refuses (full, or draining) is skipped for the
next; when every one refuses, or none is a candidate, the create is refused
at once with ResourceExhausted and a Retry-After (REST 429).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC

from baton.display.v1 import display_pb2
from services.runtime.errors import FailedPrecondition, ResourceExhausted
from services.runtime.slot_demand import NO_FREE_SLOT
from services.session.model import Placement, Recording, Session
from services.session.workers import HostView, WorkerDirectory, WorkerHost

# Retry-After of a create refused because every host is full or draining:
# slots free up as sessions end or hosts join, within seconds to minutes.
CLUSTER_FULL_RETRY_AFTER_S = 5


def ranked(views: Iterable[HostView]) -> list[HostView]:
    """The hosts to try, best first (pure: tested without I/O)."""
    candidates = [v for v in views if not v.record.draining and v.record.free_slots > 0]
    return sorted(
        candidates,
        key=lambda v: (
            v.record.warm_ready <= 0,
            -v.record.free_slots,
            v.record.held,
            v.record.host_id,
        ),
    )


def _is_draining(error: FailedPrecondition) -> bool:
    # The display's refusal of a host shutting down (cluster contract).
    return "draining" in error.message


@dataclass(frozen=True)
class Placed:
    host: WorkerHost
    placement: Placement
    recording: Recording | None = None


class Placer:
    def __init__(self, directory: WorkerDirectory) -> None:
        self._directory = directory

    async def place(self, session: Session) -> Placed:
        """Reserve a slot for `session` on the best host that has one."""
        viewport = display_pb2.Viewport(
            width=session.viewport.width, height=session.viewport.height
        )
        refusals: list[str] = []
        for view in ranked(self._directory.live_hosts()):
            try:
                slot = await view.host.display.allocate_slot(
                    session.id, viewport, record=session.record
                )
            except ResourceExhausted as exc:
                refusals.append(f"{view.record.host_id}: {exc.message}")
                continue
            except FailedPrecondition as exc:
                if not _is_draining(exc):
                    raise
                refusals.append(f"{view.record.host_id}: {exc.message}")
                continue
            return Placed(
                view.host,
                Placement(
                    host_id=view.record.host_id,
                    host_epoch=view.record.epoch,
                    slot_id=slot.id,
                    display=slot.display,
                    websocket_url=slot.websocket_url,
                    display_address=view.host.display_address,
                    automation_address=view.host.automation_address,
                    vnc_password=slot.vnc_password,
                    xauthority=slot.xauthority,
                ),
                Recording(view.record.host_id, slot.recording_start_time.ToDatetime(tzinfo=UTC))
                if slot.HasField("recording_start_time")
                else None,
            )
        why = f" ({'; '.join(refusals)})" if refusals else ""
        raise ResourceExhausted(
            f"{NO_FREE_SLOT}{why}; try again later",
            retry_after_s=CLUSTER_FULL_RETRY_AFTER_S,
        )
