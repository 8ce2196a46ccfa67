"""The launcher: a new session from request to its agent running.

Check the spec, count the owner's quota and store the session (STARTING);
place it (placement.py: a host and a slot), record the placement, mark it
ready (AI_CONTROL) and start its task stream (task_runs.py). A create that is
refused, fails, times out or is cancelled frees what it took and leaves no
record behind: its caller never got the id.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, replace

from baton.automation.v1 import automation_pb2
from baton.display.v1 import display_pb2
from services.runtime.errors import (
    BatonError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
)
from services.runtime.limits import check_viewport
from services.runtime.redaction import redact_steps
from services.session import state_machine
from services.session.ending import Ending
from services.session.model import Actor, Session, Task, Viewport
from services.session.placement import Placer
from services.session.records import SessionRecords, bookkeeping
from services.session.settings import SessionSettings
from services.session.task_runs import TaskRuns
from services.session.user_lock import UserLock

log = logging.getLogger(__name__)

# Retry-After of a create refused by the per-user session quota: sessions end
# at a person's pace, so asking again sooner rarely helps.
QUOTA_RETRY_AFTER_S = 30


@dataclass(frozen=True)
class SessionSpec:
    task: str
    url: str
    max_steps: int
    steps: tuple[automation_pb2.Step, ...]
    viewport: Viewport | None
    planner: int = automation_pb2.PLANNER_UNSPECIFIED
    # When automation stops for a person on its own (passed to StartTask, not stored).
    hand_over: automation_pb2.HandOver | None = None
    # The creator asked for a recording (BATON_RECORD decides: settings.py).
    record: bool = False
    # Whether the recording stops while a person has control.
    pause_recording_during_takeover: bool = False


class Launcher:
    def __init__(
        self,
        records: SessionRecords,
        placer: Placer,
        task_runs: TaskRuns,
        ending: Ending,
        settings: SessionSettings,
        user_lock: UserLock,
    ) -> None:
        self._records = records
        self._placer = placer
        self._task_runs = task_runs
        self._ending = ending
        self._settings = settings
        self._user_lock = user_lock

    async def create(self, actor: Actor, spec: SessionSpec) -> Session:
        """Start a session; one refused or failed here leaves no record behind."""
        viewport = self._check_spec(spec)
        record = self._settings.record.records(spec.record)
        now = self._records.clock()
        session = Session(
            id=uuid.uuid4().hex,
            owner_user_id=actor.user_id,
            task=Task(
                text=spec.task,
                url=spec.url,
                max_steps=spec.max_steps or self._settings.default_max_steps,
                # Fill values and typed text go to automation only (runtime.redaction).
                steps=redact_steps(spec.steps),
                planner=spec.planner,
            ),
            viewport=viewport,
            created_at=now,
            updated_at=now,
            last_activity_at=now,
            record=record,
            pause_recording_during_takeover=record and spec.pause_recording_during_takeover,
        )
        if self._quota_applies(actor):
            # Counting and storing under the user's lock: concurrent creates of
            # one user cannot all pass the quota (user_lock.py, across replicas
            # with etcd).
            async with self._user_lock.hold(actor.user_id):
                await self._check_quota(actor)
                await self._records.store.create(session)
        else:
            await self._records.store.create(session)
        launch = self._launch(session, spec.steps, spec.hand_over)
        try:
            return await asyncio.wait_for(launch, self._settings.start_timeout_s)
        except TimeoutError:
            await self._abandon(session.id, "the display or the task did not start in time")
            raise DeadlineExceeded("session did not start in time") from None
        except BatonError as exc:
            await self._abandon(session.id, f"could not start: {exc.message}")
            raise
        except asyncio.CancelledError:
            # The caller went away (deadline, disconnect): nobody has the id to
            # use or end it, so it must not sit STARTING on a slot until idle.
            await self._abandon(session.id, "could not start: the request was cancelled")
            raise
        except Exception:
            await self._abandon(session.id, "could not start: internal error")
            raise

    def _check_spec(self, spec: SessionSpec) -> Viewport:
        if not spec.url and not spec.steps:
            raise InvalidArgument("a session needs a url or explicit steps")
        if spec.max_steps < 0:
            raise InvalidArgument("maxSteps must not be negative")
        if spec.steps and spec.max_steps and len(spec.steps) > spec.max_steps:
            raise InvalidArgument(f"{len(spec.steps)} steps given but maxSteps is {spec.max_steps}")
        viewport = spec.viewport or Viewport(
            self._settings.default_width, self._settings.default_height
        )
        check_viewport(viewport.width, viewport.height)
        return viewport

    def _quota_applies(self, actor: Actor) -> bool:
        return not actor.operator and self._settings.max_sessions_per_user > 0

    async def _check_quota(self, actor: Actor) -> None:
        limit = self._settings.max_sessions_per_user
        live = sum(1 for s in await self._records.live() if s.owner_user_id == actor.user_id)
        if live >= limit:
            raise ResourceExhausted(
                f"user {actor.user_id} has {live} live sessions, the most allowed "
                f"(BATON_MAX_SESSIONS_PER_USER={limit}); end one first",
                retry_after_s=QUOTA_RETRY_AFTER_S,
            )

    async def _abandon(self, session_id: str, reason: str) -> None:
        """Free what a create that failed took, and forget the session: its
        caller never got the id, and records of refused creates must not pile up."""
        log.info("session %s: %s", session_id, reason)
        stored = await self._records.get(session_id)
        if stored is not None and stored.session.state.terminal:
            return  # ended by someone who saw it (a list): theirs to read
        await self._ending.finish(session_id, reason, True)
        await self._records.delete(session_id)

    async def _launch(
        self,
        session: Session,
        steps: tuple[automation_pb2.Step, ...],
        hand_over: automation_pb2.HandOver | None,
    ) -> Session:
        """Place the session and start its task; `steps` as given, secrets included."""
        # Ours to follow from the first moment: no other replica adopts it.
        if not await self._task_runs.claim(session.id):
            raise FailedPrecondition(f"the task of session {session.id} is claimed already")
        placed = await self._placer.place(session)
        placement = placed.placement

        def place(s: Session) -> Session:
            # Ended (EndSession, the janitor) while the slot was being allocated:
            # nobody will release a slot the ended session does not name.
            if s.state.terminal:
                raise FailedPrecondition(f"session {s.id} ended while starting")
            return bookkeeping(replace(s, placement=placement, recording=placed.recording))

        try:
            await self._records.update(session.id, place)
        except BaseException:
            await placed.host.display.release_slot(placement.slot_id)
            raise
        request = automation_pb2.StartTaskRequest(
            session_id=session.id,
            display=placement.display,
            xauthority=placement.xauthority,
            viewport=display_pb2.Viewport(
                width=session.viewport.width, height=session.viewport.height
            ),
            task_text=session.task.text,
            url=session.task.url,
            max_steps=session.task.max_steps,
            steps=steps,
            planner=session.task.planner,  # type: ignore[arg-type]
            hand_over=hand_over,
        )
        now = self._records.clock()
        ready = await self._records.update(session.id, lambda s: state_machine.mark_ready(s, now))
        self._task_runs.start(session.id, placed.host, request)
        return ready
