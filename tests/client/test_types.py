"""baton.client's typed shapes mirror the contracts field for field
(docs/openapi.json, docs/asyncapi.yaml), and what the client sends is valid there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from baton.client import types
from baton.client.bodies import create_body
from baton.client.errors import STATUS_OF_CODE, ApiError
from baton.client.events import EVENT_NAMES
from baton.client.rest import _error_of, _with_query

DOCS = Path(__file__).resolve().parents[2] / "docs"
OPENAPI = json.loads((DOCS / "openapi.json").read_text())
SCHEMAS = OPENAPI["components"]["schemas"]
ASYNCAPI = yaml.safe_load((DOCS / "asyncapi.yaml").read_text())


def fields(schema: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(every property, the required ones) of an object schema, allOf included."""
    properties, required = set(schema.get("properties", {})), set(schema.get("required", []))
    for part in schema.get("allOf", []):
        if "$ref" in part:
            part = SCHEMAS[part["$ref"].rsplit("/", 1)[1]]
        more, more_required = fields(part)
        properties |= more
        required |= more_required
    return properties, required


@pytest.mark.parametrize("name", ["SessionSummary", "Session", "StepEvent", "Stream", "Cdp"])
def test_each_answer_type_has_its_schema_s_fields(name: str) -> None:
    shape = getattr(types, name)
    properties, required = fields(SCHEMAS[name])
    assert set(shape.__annotations__) | set(shape.__required_keys__) == properties
    assert shape.__required_keys__ == required


def test_the_task_and_the_session_page_match_the_documents() -> None:
    summary = SCHEMAS["SessionSummary"]["properties"]
    assert set(types.Task.__annotations__) == set(summary["task"]["properties"])
    page = OPENAPI["paths"]["/api/browser-session"]["get"]["responses"]["200"]
    properties, required = fields(page["content"]["application/json"]["schema"])
    assert types.SessionPage.__required_keys__ == properties == required


def test_events_and_their_payloads_match_asyncapi() -> None:
    messages = ASYNCAPI["components"]["messages"]
    sent = {
        messages[op["messages"][0]["$ref"].rsplit("/", 1)[1]]["name"]
        for op in ASYNCAPI["operations"].values()
        if op["action"] == "send"
    }
    assert set(EVENT_NAMES) == sent
    payload_fields = set()
    for message in messages.values():
        if message["name"] in sent:
            payload_fields |= set(message["payload"]["properties"])
    assert set(types.EventData.__annotations__) == payload_fields


def test_a_create_body_is_valid_against_create_session() -> None:
    # The schema's $refs (#/components/schemas/Step) resolve within it.
    schema = {**SCHEMAS["CreateSession"], "components": OPENAPI["components"]}
    body = create_body(
        "fill the form",
        "http://127.0.0.1/form",
        steps=[{"action": "goto", "url": "http://127.0.0.1/form"}],
        max_steps=3,
        hand_over={"onPasswordField": True},
        viewport={"width": 800, "height": 600},
    )
    assert body["maxSteps"] == 3 and "agent" not in body
    jsonschema.validate(body, schema)
    jsonschema.validate(create_body("look", "http://127.0.0.1/", agent="external"), schema)


def test_error_answers_become_api_errors() -> None:
    error = _error_of(
        429, '{"error": {"code": "resource_exhausted", "message": "full"}}', {"Retry-After": "7"}
    )
    assert (error.status, error.code, error.message, error.retry_after_s) == (
        429,
        "resource_exhausted",
        "full",
        7,
    )
    # Not the edge's body (a proxy's page): still ApiError, with what answered.
    error = _error_of(502, "<html>Bad gateway</html>", {})
    assert (error.status, error.code, error.message) == (
        502,
        "http_502",
        "<html>Bad gateway</html>",
    )
    assert ApiError.from_code("conflict", "stale").status == 409
    assert ApiError.from_code("not_found", "gone").status == 404
    assert STATUS_OF_CODE["unauthenticated"] == 401


def test_the_reject_mode_is_added_to_the_cdp_url_s_query() -> None:
    url = _with_query("ws://edge/api/browser-session/s1/cdp/ws?token=a.b", onUserControl="reject")
    assert url == "ws://edge/api/browser-session/s1/cdp/ws?token=a.b&onUserControl=reject"
