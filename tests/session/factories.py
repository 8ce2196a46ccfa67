"""Sessions for tests, with sensible defaults."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from services.session.model import (
    Controller,
    ControlState,
    Session,
    Task,
    TaskStatus,
    Viewport,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_session(
    state: ControlState = ControlState.AI_CONTROL, session_id: str = "s1", **changes: Any
) -> Session:
    controller = {
        ControlState.AI_CONTROL: Controller.AI,
        ControlState.USER_CONTROL: Controller.USER,
    }
    session = Session(
        id=session_id,
        owner_user_id="alice",
        task=Task(
            text="find the form",
            url="http://127.0.0.1/",
            max_steps=10,
            # The agent of a FINISHED session is done.
            status=TaskStatus.COMPLETED if state is ControlState.FINISHED else TaskStatus.PENDING,
        ),
        viewport=Viewport(1280, 720),
        created_at=T0,
        updated_at=T0,
        last_activity_at=T0,
        state=state,
        controller=controller.get(state),
        controller_user_id="alice" if state is ControlState.USER_CONTROL else "",
    )
    return replace(session, **changes)
