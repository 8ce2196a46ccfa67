"""docs/steps.md: one example per action of the OpenAPI `Step` schema, each valid
against it, and all of them run, in order, as one explicit-steps task of a real
`make run` stack on a local sign-up page."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.deploy.stack_process import LauncherStack

DOCS = Path(__file__).resolve().parents[2] / "docs"
JSON_BLOCK = re.compile(r"^```json\n(.*?)^```", re.MULTILINE | re.DOTALL)
SIGNUP_PAGE = b"""<!doctype html><title>Sign up</title>
<form onsubmit="return false">
<input id="name"> <input id="email" type="email">
<select id="plan"><option value="solo">Solo</option><option value="team">Team</option></select>
<button type="submit">Sign up</button></form>
<p id="summary">Free for 30 days</p><div style="height:3000px"></div>"""


def examples() -> list[dict[str, Any]]:
    return [json.loads(block) for block in JSON_BLOCK.findall((DOCS / "steps.md").read_text())]


def validator(schema_name: str) -> jsonschema.Draft202012Validator:
    components = json.loads((DOCS / "openapi.json").read_text())["components"]
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": components}
    return jsonschema.Draft202012Validator(schema)


def step_examples() -> list[dict[str, Any]]:
    return [example for example in examples() if "action" in example]


def test_every_action_has_one_valid_example() -> None:
    step_schema = json.loads((DOCS / "openapi.json").read_text())["components"]["schemas"]["Step"]
    actions = [variant["properties"]["action"]["const"] for variant in step_schema["oneOf"]]
    steps = step_examples()
    assert sorted(step["action"] for step in steps) == sorted(actions)
    check = validator("Step")
    for step in steps:
        check.validate(step)
    # The validator is live: a step missing its required field is refused.
    assert not check.is_valid({"action": "fill", "selector": "#name"})
    requests = [example for example in examples() if "steps" in example]
    assert requests, "docs/steps.md shows a whole request"
    for request in requests:
        validator("CreateSession").validate(request)


@contextlib.contextmanager
def signup_page() -> Iterator[str]:
    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(SIGNUP_PAGE)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/signup"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.timeout(120)
def test_the_examples_run_as_one_task(stack: LauncherStack) -> None:
    with signup_page() as url:
        steps = [
            {**step, "url": url} if step["action"] == "goto" else step for step in step_examples()
        ]
        created = stack.request("POST", "/api/browser-session", {"task": "sign up", "steps": steps})
        path = f"/api/browser-session/{created['id']}"
        try:
            deadline = time.monotonic() + 60
            session = stack.request("GET", path)
            while session["task"]["status"] in ("PENDING", "RUNNING"):
                assert time.monotonic() < deadline, session
                time.sleep(0.2)
                session = stack.request("GET", path)
        finally:
            stack.request("DELETE", path)
    # Every step before request_user succeeded, then the task handed over.
    # Step events number the steps from 1; the latest event of an index is its status.
    finished = {event["index"] - 1: event for event in session["steps"]}
    last = len(steps) - 1
    for index, step in enumerate(steps[:last]):
        assert finished[index]["status"] == "succeeded", (step, finished[index])
        assert finished[index]["action"] == step["action"]
    extract = next(i for i, step in enumerate(steps) if step["action"] == "extract")
    assert finished[extract]["result"] == "Free for 30 days"
    assert session["task"]["status"] == "WAITING_FOR_USER", session["task"]
    assert session["task"]["reason"] == steps[last]["reason"]
    assert session["task"]["stepsCompleted"] == last
