"""Privacy during takeover, the one search (issue 15, part 4; README "Privacy during
takeover"): what a person types while holding control is in no log, trace export,
recording timeline, webhook body, audit event, metric or prompt to the model.

The real stack (tests/edge/full_stack.py: real Xvnc, websockify, ffmpeg and
Chromium under all four services), recording on, every logger at DEBUG into a
file, OpenTelemetry's console exporter into another, a webhook receiver getting
every event and the LLM planner talking to a scripted model. The model asks for
the person; the person types a marker into a labelled field through the live
stream (RFB key events) and returns control; the model then reads the paragraph
that echoes the field and finishes. Each sink is first shown live (it holds the
session, its spans, its control changes, the prompt after the return), then
searched for the marker in every spelling a sink could give it.
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from services.automation.person_typed import PLACEHOLDER
from services.automation.settings import LlmSettings
from services.display.settings import NumberRange
from services.session.webhook_delivery import WebhookSettings
from tests.automation.scripted_llm import scripted_llm, tool_call_answer
from tests.conftest import require_binary
from tests.edge.full_stack import full_stack
from tests.edge.harness import OPERATOR_TOKEN, bearer
from tests.edge.test_full_stack import ALICE, VIEWER_LOGGER, raw_viewer, stream_url
from tests.session.webhook_receiver import webhook_receiver

# This helper's displays and VNC ports (issue 15, part 4: 3400-3429 / 23400-23429).
DISPLAYS = NumberRange(3400, 3409)
VNC_PORTS = NumberRange(23400, 23409)
# Letters a case-folding sink would change, and characters rare in logs, so that
# a sink recording one key at a time is caught too (`spelled_out`).
MARKER = "Pz~^|`Qx7Kw~^|"
LABEL = "Private note"


def spellings(marker: str) -> dict[str, str]:
    """Every form a sink could hold the marker in: as typed, case-folded, URL- or
    JSON-escaped, hex or base64 (of its bytes, or as UTF-16 like a CDP key text)."""
    raw = marker.encode()
    return {
        "typed": marker,
        "casefolded": marker.casefold(),
        "upper": marker.upper(),
        "url": urllib.parse.quote(marker),
        "url-plus": urllib.parse.quote_plus(marker),
        "json": json.dumps(marker)[1:-1],
        "hex": raw.hex(),
        "HEX": raw.hex().upper(),
        "base64": base64.b64encode(raw).decode(),
        "utf16-hex": marker.encode("utf-16-be").hex(),
        # RFB KeyEvent keysyms of the keys, as a logged message would show them.
        "keysyms": " ".join(f"{ord(c):#x}" for c in marker),
        "keysyms-decimal": ",".join(str(ord(c)) for c in marker),
    }


def hits(texts: dict[str, str]) -> list[tuple[str, str]]:
    """(sink, spelling) for every sink holding the marker in any spelling,
    whatever the case of the sink's text."""
    found = []
    for sink, text in texts.items():
        folded = text.casefold()
        for name, form in spellings(MARKER).items():
            if form in text or form.casefold() in folded:
                found.append((sink, name))
    return found


def spelled_out(text: str) -> bool:
    """Whether the marker's rare characters appear in `text` in the marker's
    order, whatever comes between them (one log record per key)."""
    rest = iter(text)
    return all(char in rest for char in MARKER if not char.isalnum())


class SpansToFile(SpanProcessor):
    """The console exporter into a file, for this test only (the tracer
    provider is process-wide and outlives it)."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("w")
        self._inner = SimpleSpanProcessor(ConsoleSpanExporter(out=self._file))
        self._open = True

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if self._open:
            self._inner.on_end(span)

    def close(self) -> None:
        self._open = False
        self._file.close()


@pytest.fixture
def span_export(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "spans.txt"
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        # As configure_telemetry does in each service's __main__.
        provider = TracerProvider(resource=Resource.create({"service.name": "baton"}))
        trace.set_tracer_provider(provider)
    processor = SpansToFile(path)
    provider.add_span_processor(processor)
    try:
        yield path
    finally:
        processor.close()


@pytest.fixture
def debug_log(tmp_path: Path) -> Iterator[Path]:
    """Every logger at DEBUG, every record (but the test's own viewer's) into a file."""
    path = tmp_path / "services.log"
    handler = logging.FileHandler(path)
    handler.setLevel(logging.DEBUG)
    handler.addFilter(lambda record: record.name != VIEWER_LOGGER)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    levels = {
        name: logger.level
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    root_level = root.level
    for name in levels:
        logging.getLogger(name).setLevel(logging.DEBUG)
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(root_level)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def text_of(path: Path) -> str:
    return path.read_text(errors="replace")


def logs_under(root: Path) -> dict[str, str]:
    return {str(path): text_of(path) for path in root.rglob("*.log")}


def prompt_texts(request: dict[str, Any]) -> list[str]:
    return [str(message.get("content") or "") for message in request["messages"]]


@pytest.mark.timeout(120)
async def test_what_a_person_types_reaches_the_page_and_no_sink(
    tmp_path: Path,
    span_export: Path,
    debug_log: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    require_binary("ffmpeg", "ffmpeg")
    work = tmp_path / "stack"
    work.mkdir()
    with scripted_llm() as llm:
        llm.script(
            [
                tool_call_answer("c1", "request_user", {"reason": "write your private note"}),
                # After the return: read the paragraph that echoes the field.
                tool_call_answer("c2", "extract", {"selector": "#echo"}),
                tool_call_answer("c3", "finish", {"success": True, "answer": "noted"}),
            ]
        )
        async with (
            webhook_receiver() as receiver,
            full_stack(
                work,
                DISPLAYS,
                VNC_PORTS,
                webhook=WebhookSettings(url=receiver.url, secret="whsec-privacy-0123456789"),
                llm=LlmSettings(base_url=llm.base_url, model="scripted"),
            ) as stack,
        ):
            created = await stack.request(
                "POST",
                "/api/browser-session",
                ALICE,
                {"task": "keep a private note", "url": stack.site.privacy_url, "record": True},
            )
            session_id = created["id"]
            session = await stack.wait_for_session(
                ALICE, session_id, lambda s: s["task"]["status"] == "WAITING_FOR_USER"
            )
            control = f"/api/browser-session/{session_id}/control"
            await stack.request("PUT", control, ALICE, {"action": "take_control"})
            centre = (session["viewport"]["width"] // 2, session["viewport"]["height"] // 2)
            async with raw_viewer(await stream_url(stack, ALICE, session_id)) as person:
                await person.click(*centre)
                await person.type(MARKER)
                await person.sync()
                # The typing path was live: the page's field holds the marker.
                await stack.site.wait_until(
                    lambda: any(r["value"] == MARKER for r in stack.site.reports)
                )
            asked_before_return = len(llm.requests)
            await stack.request("PUT", control, ALICE, {"action": "return_control"})
            done = await stack.wait_for_session(
                ALICE, session_id, lambda s: s["task"]["status"] == "COMPLETED"
            )
            timeline = await stack.request(
                "GET", f"/api/browser-session/{session_id}/timeline", ALICE
            )
            # The slots' process logs (Xvnc's, websockify's) go with their slot.
            process_logs = logs_under(work)
            await stack.request("DELETE", f"/api/browser-session/{session_id}", ALICE)
            await receiver.wait_until(
                lambda: any(e["type"] == "session.ended" for e in receiver.delivered())
            )
            async with stack.http.get(
                f"{stack.url}/api/audit?sessionId={session_id}", headers=bearer(OPERATOR_TOKEN)
            ) as response:
                audit = [json.loads(line) for line in (await response.text()).splitlines()]
            async with stack.http.get(
                f"{stack.url}/metrics", headers=bearer(OPERATOR_TOKEN)
            ) as response:
                metrics = await response.text()
    out, err = capfd.readouterr()
    logs, spans = text_of(debug_log), text_of(span_export)
    webhooks = [r.body.decode(errors="replace") for r in receiver.requests]
    after_return = llm.requests[asked_before_return:]

    # Each sink was live.
    assert session_id in logs
    assert all(
        f" services.{name}." in logs for name in ("display", "automation", "session", "edge")
    )
    assert " DEBUG " in logs
    assert "PauseTask" in spans and "ResumeTask" in spans, spans[:500]
    changes = [
        e["data"]["action"]
        for e in map(json.loads, webhooks)
        if e["type"] == "session.control_changed" and e["sessionId"] == session_id
    ]
    assert {"take_control", "return_control"} <= set(changes), changes
    # Asked once before the takeover and never while the person held control.
    assert asked_before_return == 1
    assert len(after_return) == 2
    # The prompt after the return tells the model what the person did: the field's name.
    first_after = prompt_texts(after_return[0])[-1]
    assert f"They typed into: {LABEL}." in first_after, first_after
    # The field and its echo are still on the page, shown to the model as typed by a person.
    assert PLACEHOLDER in first_after
    assert f"succeeded: Noted: {PLACEHOLDER}" in prompt_texts(after_return[1])
    controls = [e.get("action") for e in timeline["events"] if e["kind"] == "control"]
    assert {"take_control", "return_control"} <= set(controls), controls
    assert any(e["sessionId"] == session_id for e in audit), audit
    assert "baton_" in metrics
    assert process_logs, "no process logs written"

    # Nowhere the marker, in any spelling.
    sinks = {
        "service logs": logs,
        "stdout": out,
        "stderr": err,
        "trace export": spans,
        "timeline": json.dumps(timeline),
        "session": json.dumps(done),
        "audit": json.dumps(audit),
        "metrics": metrics,
        **{f"webhook {n}": body for n, body in enumerate(webhooks)},
        **{f"prompt {n}": json.dumps(body) for n, body in enumerate(llm.requests)},
        **process_logs,
    }
    assert hits(sinks) == []
    # Nor one key at a time, where a key would be logged.
    assert [name for name in ("service logs", "stdout", "stderr") if spelled_out(sinks[name])] == []
    assert [name for name, text in process_logs.items() if spelled_out(text)] == []
