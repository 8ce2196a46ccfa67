"""docs/state-machine.md's table, cell by cell, against services/session/state_machine.py:
each cell is what `apply` does to a session in that state."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.runtime.errors import FailedPrecondition, PermissionDenied
from services.session import state_machine
from services.session.model import (
    Action,
    Actor,
    Controller,
    ControlState,
    Session,
    Task,
    TaskStatus,
    Viewport,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "state-machine.md"
NOW = datetime(2025, 1, 1, tzinfo=UTC)
ALICE, BOB, OPERATOR = Actor("alice"), Actor("bob"), Actor("ops", operator=True)


def table() -> dict[tuple[str, str], str]:
    """(state, action) -> cell text, a row naming several states giving each."""
    # The first table: the actions (the second lists the changes nobody asks for).
    text = DOC.read_text()
    first = text[text.index("| from \\ action") :].split("\n\n", 1)[0]
    lines = [line for line in first.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    cells = {}
    for line in lines[1:]:
        row = [cell.strip() for cell in line.strip("|").split("|")]
        for state in row[0].split(", "):
            for action, cell in zip(header[1:], row[1:], strict=True):
                cells[(state, action)] = cell
    return cells


def session_in(state: ControlState, agent_done: bool = False) -> Session:
    session = Session(
        id="s-1",
        owner_user_id="alice",
        task=Task(text="t", url="", max_steps=1),
        viewport=Viewport(1280, 720),
        created_at=NOW,
        updated_at=NOW,
        last_activity_at=NOW,
        state=state,
    )
    if agent_done:
        session = replace(session, task=replace(session.task, status=TaskStatus.COMPLETED))
    if state is ControlState.USER_CONTROL:
        return replace(session, controller=Controller.USER, controller_user_id="alice")
    return session


def outcome(state: ControlState, action: Action, actor: Actor, agent_done: bool = False) -> str:
    """A state name, "refused", "no-op" or "denied" (the actor may not)."""
    session = session_in(state, agent_done)
    try:
        after = state_machine.apply(session, action, actor, NOW, to_user_id="carol")
    except FailedPrecondition:
        return "refused"
    except PermissionDenied:
        return "denied"
    return "no-op" if after is session else after.state.value


def test_the_table_covers_every_state_and_action() -> None:
    cells = table()
    assert {state for state, _ in cells} == {state.value for state in ControlState}
    assert {action for _, action in cells} == {action.value for action in Action}


@pytest.mark.parametrize("state", list(ControlState), ids=lambda s: s.value)
@pytest.mark.parametrize("action", list(Action), ids=lambda a: a.value)
def test_each_cell_is_what_the_state_machine_does(state: ControlState, action: Action) -> None:
    cell = table()[(state.value, action.value)]
    # "X (FINISHED if the agent is done)" and "X, or FINISHED if the agent is done":
    # X while the task is active, FINISHED once it has ended.
    for when_done in (" (FINISHED if the agent is done)", ", or FINISHED if the agent is done"):
        if when_done in cell:
            cell = cell.replace(when_done, "")
            done = cell.replace(cell.split(" ", 1)[0], ControlState.FINISHED.value, 1)
            assert outcome(state, action, ALICE, agent_done=True) == done.split(" ", 1)[0]
    if cell == "same user: no-op, else refused":
        assert outcome(state, action, ALICE) == "no-op"
        assert outcome(state, action, BOB) == "refused"
    elif cell.endswith("(controller or operator)"):
        target = cell.split(" ", 1)[0]
        assert outcome(state, action, ALICE) == target
        assert outcome(state, action, OPERATOR) == target
        assert outcome(state, action, BOB) == "denied"
    else:
        assert cell == "refused" or cell in {s.value for s in ControlState}, cell
        assert outcome(state, action, ALICE) == cell
        assert outcome(state, action, OPERATOR) == cell
