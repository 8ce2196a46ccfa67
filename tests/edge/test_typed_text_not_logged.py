"""Nothing a person types is logged (issue 12, finding 2), whatever the log level.

A person takes control and types a marker through the stream of the real stack
(tests/edge/full_stack.py: every service in this process, Xvnc, websockify and
Chromium under them) with every logger at DEBUG. The page sees the marker (so the
path was live); no log record, no output of the processes below (Chromium writes
to our stderr, Xvnc and websockify to the display's slot logs) and no session
record holds it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.display.settings import NumberRange
from tests.edge.full_stack import full_stack
from tests.edge.test_full_stack import (
    ALICE,
    VIEWER_LOGGER,
    raw_viewer,
    start_form_task,
    stream_url,
)

# Characters rare in logs, so that one logged per key is caught too (`in_order`).
MARKER = "~^|{}~^|{}`~"
DISPLAYS = NumberRange(1450, 1459)
VNC_PORTS = NumberRange(19650, 19659)


@pytest.fixture
def every_logger_at_debug(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    levels = {}
    for name, logger in logging.root.manager.loggerDict.items():
        if isinstance(logger, logging.Logger):
            levels[name] = logger.level
            logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def record_text(record: logging.LogRecord) -> str:
    parts = [record.getMessage(), repr(record.args), record.exc_text or ""]
    if record.exc_info and record.exc_info[1] is not None:
        parts.append(repr(record.exc_info[1]))
    return "\n".join(parts)


def spelled_out(texts: list[str]) -> bool:
    """Whether the marker's characters appear across `texts` in its order,
    whatever comes between them (one record per key, each key down and up)."""
    rest = iter(char for text in texts for char in text)
    return all(char in rest for char in MARKER)


def slot_logs(root: Path) -> dict[str, str]:
    return {str(p): p.read_text(errors="replace") for p in root.rglob("*.log")}


@pytest.mark.timeout(90)
@pytest.mark.usefixtures("every_logger_at_debug")
async def test_what_a_person_types_is_in_no_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    async with full_stack(tmp_path, DISPLAYS, VNC_PORTS) as stack:
        session = await start_form_task(stack)
        session_id = session["id"]
        centre = (session["viewport"]["width"] // 2, session["viewport"]["height"] // 2)
        await stack.request(
            "PUT", f"/api/browser-session/{session_id}/control", ALICE, {"action": "take_control"}
        )
        async with raw_viewer(await stream_url(stack, ALICE, session_id)) as person:
            await person.click(*centre)
            await person.type(MARKER)
            await person.sync()
            typed = stack.site.keys
            await stack.site.wait_until(lambda: MARKER in typed())
        logs = slot_logs(tmp_path)
        records = [
            json.dumps(await stack.request("GET", f"/api/browser-session/{session_id}", ALICE)),
        ]
        await stack.request(
            "PUT",
            f"/api/browser-session/{session_id}/control",
            ALICE,
            {"action": "return_control"},
        )
        # The agent goes on (a click) and ends its task: it saw the page after the person.
        await stack.site.wait_until(stack.site.finished)
        done = await stack.wait_for_session(
            ALICE, session_id, lambda s: s["task"]["status"] == "COMPLETED"
        )
        records.append(json.dumps(done))
        await stack.request("DELETE", f"/api/browser-session/{session_id}", ALICE)
    out, err = capfd.readouterr()
    # The logs were live at DEBUG: the services' own records are there.
    ours = [r for r in caplog.records if r.name.startswith("services.")]
    assert {r.name.split(".")[1] for r in ours} >= {"display", "automation", "session"}, ours
    assert any(r.levelno == logging.DEBUG for r in caplog.records)
    assert logs, "no slot logs written"
    # What the services and the libraries under them logged, not the test's viewer.
    texts = [record_text(r) for r in caplog.records if r.name != VIEWER_LOGGER]
    found = [text[:200] for text in texts if MARKER in text]
    assert found == []
    # Nor one key at a time (as a logged RFB message or keysym would show it).
    assert not spelled_out(texts), [t[:200] for t in texts if "~" in t]
    for text in [*logs.values(), out, err]:
        assert not spelled_out([text])
    assert [record for record in records if MARKER in record] == []
