"""Unit tests of the shared WatchSession feeds, the input gate and the metrics text."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from baton.session.v1 import session_pb2
from services.edge.metrics import EdgeMetrics
from services.edge.session_actions import websocket_base
from services.edge.stream_proxy import InputGate, may_send_input
from services.edge.watch_hub import Event, SessionWatchHub, event_kind, session_of
from services.runtime.errors import NotFound, Unavailable


def control_event(version: int) -> Event:
    return Event(
        control_changed=session_pb2.ControlChanged(
            session=session_pb2.Session(id="s1", version=version)
        )
    )


def ended_event() -> Event:
    return Event(ended=session_pb2.SessionEnded(session=session_pb2.Session(id="s1")))


class ScriptedSource:
    """Each watch() call plays the next script: events, then an optional error."""

    def __init__(self, *scripts: tuple[list[Event], Exception | None]) -> None:
        self.scripts = list(scripts)
        self.calls = 0
        self.hold = asyncio.Event()

    async def __call__(self, session_id: str) -> AsyncIterator[Event]:
        self.calls += 1
        if not self.scripts:
            await self.hold.wait()
            return
        events, error = self.scripts.pop(0)
        for event in events:
            yield event
        if error is not None:
            raise error
        await self.hold.wait()


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, int, bool]] = []
        self.changed = asyncio.Event()

    async def __call__(self, event: Event, initial: bool) -> None:
        self.seen.append((event_kind(event), session_of(event).version, initial))
        self.changed.set()

    async def wait_for(self, count: int) -> None:
        while len(self.seen) < count:
            self.changed.clear()
            await self.changed.wait()


async def test_one_feed_serves_every_listener_and_marks_the_snapshot() -> None:
    source = ScriptedSource(([control_event(1), control_event(2)], None))
    hub = SessionWatchHub(source)
    first, second = Recorder(), Recorder()
    hub.subscribe("s1", first)
    hub.subscribe("s1", second)
    await first.wait_for(2)
    await second.wait_for(2)
    assert first.seen == [("control_changed", 1, True), ("control_changed", 2, False)]
    assert second.seen == first.seen
    assert source.calls == 1
    await hub.close()


async def test_the_feed_stops_with_its_last_listener() -> None:
    source = ScriptedSource(([control_event(1)], None))
    hub = SessionWatchHub(source)
    listener = Recorder()
    stop_first = hub.subscribe("s1", listener)
    stop_second = hub.subscribe("s1", Recorder())
    await listener.wait_for(1)
    stop_first()
    assert hub.watched() == ["s1"]
    stop_second()
    assert hub.watched() == []
    await hub.close()


async def test_an_unavailable_service_is_retried_and_a_missing_session_is_not() -> None:
    source = ScriptedSource(
        ([control_event(1)], Unavailable("restarting")),
        ([control_event(2)], NotFound("gone")),
    )
    hub = SessionWatchHub(source, retry_delay=0)
    listener = Recorder()
    hub.subscribe("s1", listener)
    feed = hub.feed_task("s1")
    assert feed is not None
    await feed
    # After a reconnect the stream's first event is a snapshot again.
    assert listener.seen == [("control_changed", 1, True), ("control_changed", 2, True)]
    assert hub.watched() == []
    assert source.calls == 2
    await hub.close()


async def test_the_feed_ends_with_the_session() -> None:
    source = ScriptedSource(([control_event(1), ended_event()], None))
    hub = SessionWatchHub(source)
    listener = Recorder()
    hub.subscribe("s1", listener)
    feed = hub.feed_task("s1")
    assert feed is not None
    await feed
    assert listener.seen == [("control_changed", 1, True), ("ended", 0, False)]
    assert hub.watched() == []
    assert source.calls == 1
    await hub.close()


async def test_a_failing_listener_does_not_starve_the_others() -> None:
    source = ScriptedSource(([control_event(1)], None))
    hub = SessionWatchHub(source)

    async def broken(event: Event, initial: bool) -> None:
        raise RuntimeError("listener bug")

    listener = Recorder()
    hub.subscribe("s1", broken)
    hub.subscribe("s1", listener)
    await listener.wait_for(1)
    await hub.close()


def user_control(user_id: str, version: int = 3) -> session_pb2.Session:
    return session_pb2.Session(
        id="s1",
        state=session_pb2.CONTROL_STATE_USER_CONTROL,
        controller=session_pb2.CONTROLLER_USER,
        controller_user_id=user_id,
        version=version,
    )


def test_only_the_controlling_user_may_send_input() -> None:
    assert may_send_input(user_control("alice"), "alice")
    assert not may_send_input(user_control("alice"), "bob")
    ai = session_pb2.Session(
        state=session_pb2.CONTROL_STATE_AI_CONTROL, controller=session_pb2.CONTROLLER_AI
    )
    assert not may_send_input(ai, "alice")
    paused = session_pb2.Session(state=session_pb2.CONTROL_STATE_PAUSED, controller_user_id="alice")
    assert not may_send_input(paused, "alice")


def test_input_gate_ignores_stale_sessions_and_reports_closing() -> None:
    gate = InputGate("alice")
    assert not gate()
    assert gate.update(user_control("alice", version=3)) is False
    assert gate()
    ai = session_pb2.Session(id="s1", state=session_pb2.CONTROL_STATE_AI_CONTROL, version=2)
    assert gate.update(ai) is False
    assert gate()
    ai.version = 4
    assert gate.update(ai) is True
    assert not gate()
    assert gate.update(user_control("alice", version=5)) is False
    assert gate()


def test_websocket_base() -> None:
    assert websocket_base("http://127.0.0.1:8080/") == "ws://127.0.0.1:8080"
    assert websocket_base("https://baton.example") == "wss://baton.example"


def test_metrics_exposition() -> None:
    metrics = EdgeMetrics()
    metrics.handoffs["take_control"] += 2
    metrics.step_durations.observe(0.2)
    metrics.step_durations.observe(3.0)
    metrics.http_requests[("create", 201)] += 1
    text = metrics.render({"AI_CONTROL": 2, "USER_CONTROL": 1}, service_up=True)
    lines = text.splitlines()
    assert "# TYPE baton_sessions gauge" in lines
    assert 'baton_sessions{state="AI_CONTROL"} 2' in lines
    assert 'baton_sessions{state="USER_CONTROL"} 1' in lines
    assert 'baton_handoffs_total{action="take_control"} 2' in lines
    assert 'baton_step_duration_seconds_bucket{le="0.1"} 0' in lines
    assert 'baton_step_duration_seconds_bucket{le="0.25"} 1' in lines
    assert 'baton_step_duration_seconds_bucket{le="5"} 2' in lines
    assert 'baton_step_duration_seconds_bucket{le="+Inf"} 2' in lines
    assert "baton_step_duration_seconds_sum 3.2" in lines
    assert "baton_step_duration_seconds_count 2" in lines
    assert 'baton_http_requests_total{route="create",status="201"} 1' in lines
    assert "baton_session_service_up 1" in lines
    assert "baton_session_service_up 0" in metrics.render({}, service_up=False).splitlines()
