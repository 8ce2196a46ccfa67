"""The bodies the client sends, built from keyword arguments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from baton.client.types import Agent, HandOver, Step, Viewport


def create_body(
    task: str = "",
    url: str | None = None,
    *,
    steps: Sequence[Step] | None = None,
    max_steps: int | None = None,
    agent: Agent | None = None,
    hand_over: HandOver | None = None,
    viewport: Viewport | None = None,
    record: bool | None = None,
) -> dict[str, Any]:
    """The body of createSession (schema CreateSession); absent what is None."""
    body: dict[str, Any] = {"task": task}
    optional: dict[str, Any] = {
        "url": url,
        "steps": None if steps is None else list(steps),
        "maxSteps": max_steps,
        "agent": agent,
        "handOver": hand_over,
        "viewport": viewport,
        "record": record,
    }
    body.update({name: value for name, value in optional.items() if value is not None})
    return body
