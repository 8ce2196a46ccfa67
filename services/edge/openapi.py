"""The OpenAPI 3.1 document of the edge's REST API (served at /openapi.json).

Written out rather than generated so it states the contract; a test checks that
every route of the app appears here and nothing else does, and that
docs/openapi.json, the copy in the repository, is this document: `make docs`
rewrites it (`python -m services.edge.openapi docs/openapi.json`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from services.edge.json_views import CONTROL_ACTIONS
from services.runtime.limits import (
    DEFAULT_PAGE_SIZE,
    MAX_MAX_STEPS,
    MAX_PAGE_SIZE,
    MAX_SHARE_LABEL_BYTES,
    MAX_SHARE_TTL_S,
    MAX_STEP_EVENTS_KEPT,
    MAX_STEP_FIELD_BYTES,
    MAX_STEPS,
    MAX_STEPS_BYTES,
    MAX_TASK_BYTES,
    MAX_URL_BYTES,
    MAX_VIEWPORT,
    MIN_VIEWPORT,
)
from services.runtime.session_ids import SESSION_ID_MAX_LENGTH

_STEP_ACTIONS = [
    "goto",
    "click",
    "fill",
    "type",
    "press",
    "select",
    "scroll",
    "wait",
    "wait_for",
    "extract",
    "screenshot",
    "request_user",
]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _video(description: str) -> dict[str, Any]:
    schema = {"type": "string", "format": "binary"}
    return {"description": description, "content": {"video/mp4": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    texts = {
        400: "Invalid request (or a malformed session id)",
        401: "Missing or invalid token",
        403: "The token may not do this",
        404: "No such session for this caller",
        409: "Not allowed in the current state (such as an ended session), "
        "or expectedVersion is stale",
        413: "Request body too large",
        429: "Too many requests or sessions: no capacity, the user's session quota or "
        "the per-user rate limit (BATON_RATE_LIMIT_PER_S); Retry-After says when to ask again",
        503: "A backing service is unavailable",
    }
    # Every authenticated call counts against the caller's rate limit.
    if 401 in statuses and 429 not in statuses:
        statuses = (*statuses, 429)
    answers = {str(status): _json(_ref("Error"), texts[status]) for status in statuses}
    if "429" in answers:
        answers["429"]["headers"] = {
            "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
        }
    return answers


_SESSION_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": f"^[A-Za-z0-9_-]{{1,{SESSION_ID_MAX_LENGTH}}}$"},
}
_INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
_MILLISECONDS = {"type": "integer", "minimum": 0, "maximum": 600_000}
_TEXT = {"type": "string"}
_SELECTOR = {"type": "string", "minLength": 1}
_HTTP_URL = {"type": "string", "pattern": "^https?://"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """Optional fields the server reads null as absent (JSON Schema 2020-12 style)."""
    return {"anyOf": [schema, {"type": "null"}]}


_AUTO_RETURN: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "urlMatches": _nullable({"type": "string", "description": "Python regular expression"}),
        "selectorAppears": _nullable(
            {"type": "string", "description": "CSS (Playwright) selector"}
        ),
        "idleSeconds": _nullable({"type": "number", "minimum": 0, "maximum": 999_999_999}),
    },
}


# Per action: its fields and which of them are required (json_views._STEP_FIELDS).
_STEP_SHAPES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "goto": ({"url": _HTTP_URL}, ["url"]),
    "click": ({"selector": _SELECTOR}, ["selector"]),
    "fill": ({"selector": _TEXT, "value": _TEXT}, ["selector", "value"]),
    "type": ({"text": _TEXT}, ["text"]),
    "press": ({"key": _TEXT}, ["key"]),
    "select": ({"selector": _TEXT, "value": _TEXT}, ["selector", "value"]),
    "scroll": ({"dx": _nullable(_INT32), "dy": _nullable(_INT32)}, []),
    "wait": ({"ms": _MILLISECONDS}, ["ms"]),
    "wait_for": ({"selector": _SELECTOR}, ["selector"]),
    "extract": ({"selector": _SELECTOR}, ["selector"]),
    "screenshot": ({}, []),
    "request_user": (
        {
            "reason": _nullable(_TEXT),
            "autoReturn": _nullable(
                {
                    **_AUTO_RETURN,
                    "description": "The conditions of the takeover this step asks for, "
                    "unless the person sets their own (docs/state-machine.md, Auto-return).",
                }
            ),
        },
        [],
    ),
}


def _step_variant(action: str) -> dict[str, Any]:
    fields, required = _STEP_SHAPES[action]
    return {
        "type": "object",
        "title": action,
        "required": ["action", *required],
        "additionalProperties": False,
        "properties": {
            "action": {"const": action},
            **fields,
            "allowFailure": {"type": "boolean"},
            "timeoutMs": _nullable(_MILLISECONDS),
        },
    }


_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
    "Step": {
        "description": "An explicit step: the action and its fields, such as "
        f'{{"action": "goto", "url": "https://example.com"}}. Each string field is at '
        f"most {MAX_STEP_FIELD_BYTES} UTF-8 bytes, all steps {MAX_STEPS_BYTES} bytes. A fill "
        "value or typed text reaches the browser and is never stored or returned.",
        "oneOf": [_step_variant(action) for action in _STEP_ACTIONS],
    },
    "StepEvent": {
        "type": "object",
        "required": ["index", "action", "status", "description", "url", "durationMs"],
        "properties": {
            "index": {"type": "integer"},
            "action": {"type": "string"},
            "status": {
                "type": "string",
                "enum": ["started", "succeeded", "failed", "interrupted"],
                "description": "interrupted: a person took control (or paused) mid-step; "
                "the task runs the step again when control returns.",
            },
            "description": {"type": "string"},
            "url": {"type": "string"},
            "durationMs": {"type": "integer"},
            "error": {"type": "string"},
            "result": {"type": "string"},
            "handback": _ref("Handback"),
        },
    },
    "Handback": {
        "type": "object",
        "description": "What a person did while they held control, as they returned it "
        "(services/automation/README.md, 'The hand-back report'): names, labels and "
        "selectors only, never a typed value or a cookie's or storage item's value.",
        "required": [
            "urlBefore",
            "titleBefore",
            "urlAfter",
            "titleAfter",
            "navigations",
            "fieldsTyped",
            "cookiesChanged",
            "storageChanged",
            "downloads",
            "heldSeconds",
        ],
        "properties": {
            "urlBefore": {"type": "string"},
            "titleBefore": {"type": "string"},
            "urlAfter": {"type": "string"},
            "titleAfter": {"type": "string"},
            "navigations": {"type": "array", "items": {"type": "string"}},
            "fieldsTyped": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "label": {"type": "string"},
                        "selector": {"type": "string"},
                        "url": {"type": "string"},
                    },
                },
            },
            "cookiesChanged": {"type": "array", "items": _ref("NameChange")},
            "storageChanged": {"type": "array", "items": _ref("NameChange")},
            "downloads": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"fileName": {"type": "string"}, "url": {"type": "string"}},
                },
            },
            "heldSeconds": {"type": "number"},
            "returnedBy": {"type": "string"},
            "returnedAt": {"type": "string", "format": "date-time"},
            "reason": {"type": "string", "description": "return_control or auto_return"},
            "condition": {"type": "string"},
        },
    },
    "NameChange": {
        "type": "object",
        "description": "A cookie (domain: its domain) or a storage item (domain: its "
        "origin, area: localStorage or sessionStorage) added, removed or changed.",
        "properties": {
            "name": {"type": "string"},
            "domain": {"type": "string"},
            "change": {"type": "string", "enum": ["added", "removed", "changed"]},
            "area": {"type": "string"},
        },
    },
    "CreateSession": {
        "type": "object",
        "required": ["task"],
        # An external agent is the CDP client: explicit steps are the built-in one's.
        "if": {"required": ["agent"], "properties": {"agent": {"const": "external"}}},
        "then": {"properties": {"steps": {"type": "null"}}},
        "description": "Either a url and a task text to plan from, or explicit steps "
        "(then task and url may be empty). With both steps and maxSteps, there may be at "
        f"most maxSteps steps (400 otherwise). task is at most {MAX_TASK_BYTES} UTF-8 bytes, "
        f"url at most {MAX_URL_BYTES}.",
        "additionalProperties": False,
        "properties": {
            "task": {"type": "string"},
            "url": _nullable({"type": "string"}),
            "maxSteps": _nullable(
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_MAX_STEPS,
                    "description": "Absent or null: the session service's default.",
                }
            ),
            "steps": _nullable({"type": "array", "items": _ref("Step"), "maxItems": MAX_STEPS}),
            "agent": _nullable(
                {
                    "type": "string",
                    "enum": ["builtin", "external"],
                    "description": "Who drives the browser: Baton's own agent (default), or "
                    "a CDP client (external: the session opens the URL and waits in "
                    "AI_CONTROL; GET .../cdp gives the client its URL).",
                }
            ),
            "record": _nullable(
                {
                    "type": "boolean",
                    "description": "Record the session's display as video (GET "
                    ".../recording). BATON_RECORD=always records every session; "
                    "with BATON_RECORD=never, true is refused (400).",
                }
            ),
            "recordDuringTakeover": _nullable(
                {
                    "type": "boolean",
                    "description": "Default true. false: while a person has control the "
                    "recording holds its last frame, so nothing they do is in the video "
                    "(the timeline shows the gap).",
                }
            ),
            "handOver": _nullable(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "description": "When the agent stops for a person on its own; a "
                    "request_user step and a CAPTCHA always do.",
                    "properties": {
                        "onPasswordField": _nullable(
                            {
                                "type": "boolean",
                                "description": "Stop before a step while the page has an "
                                "empty password field the agent will not fill. Absent: true "
                                "for the LLM planner, false for explicit steps.",
                            }
                        )
                    },
                }
            ),
            "viewport": _nullable(
                {
                    "type": "object",
                    "required": ["width", "height"],
                    "additionalProperties": False,
                    "properties": {
                        "width": {
                            "type": "integer",
                            "minimum": MIN_VIEWPORT.width,
                            "maximum": MAX_VIEWPORT.width,
                        },
                        "height": {
                            "type": "integer",
                            "minimum": MIN_VIEWPORT.height,
                            "maximum": MAX_VIEWPORT.height,
                        },
                    },
                }
            ),
        },
        "anyOf": [
            {
                "required": ["url"],
                "properties": {"task": {"pattern": "\\S"}, "url": _HTTP_URL},
            },
            {
                "required": ["steps"],
                "properties": {
                    "steps": {"type": "array", "minItems": 1},
                    "url": _nullable({"anyOf": [_HTTP_URL, {"const": ""}]}),
                },
            },
        ],
    },
    "Control": {
        "type": "object",
        "required": ["action"],
        "properties": {
            "action": {"type": "string", "enum": list(CONTROL_ACTIONS)},
            "expectedVersion": _nullable({"type": "integer", "minimum": 0, "maximum": 2**63 - 1}),
            "to": _nullable(
                {
                    "type": "string",
                    "description": "hand_over only (required there): the user to give control "
                    "to: the owner, operator, or guest:<share id> of a live control share.",
                }
            ),
            "autoReturn": _nullable(
                {
                    **_AUTO_RETURN,
                    "description": "take_control only: control returns to the agent by "
                    "itself when any condition set holds (docs/state-machine.md, "
                    "Auto-return); at least one. 400 for a bad pattern or selector.",
                }
            ),
        },
        # `to` belongs to hand_over alone.
        "if": {"properties": {"action": {"const": "hand_over"}}},
        "then": {"required": ["to"], "properties": {"to": {"type": "string", "minLength": 1}}},
        "else": {"properties": {"to": {"type": "null"}}},
    },
    "SessionSummary": {
        "type": "object",
        "description": "A session without its step events (stepCount says how many there "
        "were): every answer but GET /api/browser-session/{id}, and every Socket.IO event.",
        "required": [
            "id",
            "state",
            "controller",
            "controllerUserId",
            "version",
            "task",
            "stepCount",
            "createdAt",
            "updatedAt",
        ],
        "properties": {
            "id": {"type": "string"},
            "state": {
                "type": "string",
                "enum": [
                    "STARTING",
                    "AI_CONTROL",
                    "USER_CONTROL",
                    "PAUSED",
                    "FINISHED",
                    "ENDED",
                    "FAILED",
                ],
            },
            "controller": {"type": ["string", "null"], "enum": ["ai", "user", None]},
            "controllerUserId": {"type": ["string", "null"]},
            "version": {"type": "integer"},
            "ownerUserId": {"type": "string"},
            "task": {
                "type": "object",
                "properties": {
                    "text": {"type": "string"},
                    "url": {"type": "string"},
                    "maxSteps": {"type": "integer"},
                    "status": {
                        "type": "string",
                        "enum": [
                            "PENDING",
                            "RUNNING",
                            "WAITING_FOR_USER",
                            "COMPLETED",
                            "FAILED",
                            "CANCELLED",
                        ],
                    },
                    "stepsCompleted": {"type": "integer"},
                    "reason": {"type": "string"},
                },
            },
            "stepCount": {"type": "integer", "minimum": 0},
            "createdAt": {"type": ["string", "null"], "format": "date-time"},
            "updatedAt": {"type": ["string", "null"], "format": "date-time"},
            "endedReason": {"type": "string"},
            "userRequestReason": {"type": "string"},
            "viewport": {
                "type": "object",
                "properties": {"width": {"type": "integer"}, "height": {"type": "integer"}},
            },
            "recording": {
                "type": "object",
                "description": "Present when the session is recorded.",
                "properties": {
                    "startedAt": {
                        "type": ["string", "null"],
                        "format": "date-time",
                        "description": "The video's time zero.",
                    }
                },
            },
            "handback": _ref("Handback"),
            "autoReturn": {
                "type": "object",
                "description": "The conditions of the takeover in progress, when it set "
                "any (docs/state-machine.md, Auto-return).",
                "properties": {
                    "urlMatches": {"type": ["string", "null"]},
                    "selectorAppears": {"type": ["string", "null"]},
                    "idleSeconds": {"type": ["number", "null"]},
                },
            },
        },
    },
    "Timeline": {
        "type": "object",
        "required": ["sessionId", "recording", "events", "inputs", "urls"],
        "properties": {
            "sessionId": {"type": "string"},
            "recording": {
                "type": ["object", "null"],
                "properties": {
                    "hostId": {"type": "string"},
                    "startedAt": {"type": "string", "format": "date-time"},
                    "pausedDuringTakeover": {"type": "boolean"},
                    "gaps": {
                        "type": "array",
                        "description": "Where the video holds its last frame (a person had "
                        "control, recordDuringTakeover false): seconds into it; toS null "
                        "while the takeover lasts.",
                        "items": {
                            "type": "object",
                            "properties": {
                                "fromS": {"type": ["number", "null"]},
                                "toS": {"type": ["number", "null"]},
                            },
                        },
                    },
                },
            },
            "events": {
                "type": "array",
                "description": "Step events (kind step, the fields of a step event) and "
                "control changes (kind control: action, userId, state, reason), oldest "
                "first; offsetS is seconds into the video (null when not recorded).",
                "items": {
                    "type": "object",
                    "required": ["kind", "at", "offsetS"],
                    "properties": {
                        "kind": {"type": "string", "enum": ["step", "control"]},
                        "at": {"type": "string", "format": "date-time"},
                        "offsetS": {"type": ["number", "null"]},
                        "action": {"type": ["string", "null"]},
                        "userId": {"type": ["string", "null"]},
                        "state": {"type": "string"},
                        "reason": {"type": "string"},
                    },
                },
            },
            "inputs": {
                "type": "array",
                "description": "The person's input reaching the browser per second: key "
                "presses and pointer events the controller's stream connection forwarded, "
                "counts only, never the keys; seconds without input are left out; the "
                "newest 600 seconds with input kept (README, Recording and replay).",
                "items": {
                    "type": "object",
                    "required": ["at", "offsetS", "keys", "pointer"],
                    "properties": {
                        "at": {"type": "string", "format": "date-time"},
                        "offsetS": {"type": ["number", "null"]},
                        "keys": {"type": "integer", "minimum": 0},
                        "pointer": {"type": "integer", "minimum": 0},
                    },
                },
            },
            "urls": {
                "type": "array",
                "description": "The page's URL each time it changed, from the steps.",
                "items": {
                    "type": "object",
                    "properties": {
                        "at": {"type": "string", "format": "date-time"},
                        "offsetS": {"type": ["number", "null"]},
                        "url": {"type": "string"},
                    },
                },
            },
        },
    },
    "Session": {
        "description": "A session with its step events, the newest "
        f"{MAX_STEP_EVENTS_KEPT} (oldest first): GET /api/browser-session/{{id}} and the "
        "session:watch acknowledgement.",
        "allOf": [
            _ref("SessionSummary"),
            {
                "type": "object",
                "required": ["steps"],
                "properties": {
                    "steps": {
                        "type": "array",
                        "items": _ref("StepEvent"),
                        "maxItems": MAX_STEP_EVENTS_KEPT,
                    }
                },
            },
        ],
    },
    "Stream": {
        "type": "object",
        "required": ["url", "viewOnly", "expiresAt"],
        "properties": {
            "url": {
                "type": "string",
                "description": "WebSocket URL (RFB over the binary subprotocol) with a "
                "short-lived token scoped to this session and caller.",
            },
            "viewOnly": {"type": "boolean"},
            "expiresAt": {"type": "string", "format": "date-time"},
        },
    },
    "Cdp": {
        "type": "object",
        "required": ["url", "expiresAt"],
        "properties": {
            "url": {
                "type": "string",
                "description": "CDP WebSocket URL with a short-lived, single-use token "
                "scoped to this session and caller.",
            },
            "expiresAt": {"type": "string", "format": "date-time"},
        },
    },
    "ShareRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["role"],
        "properties": {
            "role": {"enum": ["view", "control"]},
            "ttlSeconds": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": MAX_SHARE_TTL_S,
                "description": "Default 3600; the share ends with its session anyway.",
            },
            "label": {
                "type": "string",
                "maxLength": MAX_SHARE_LABEL_BYTES,
                "description": "Who it is for; shown beside the guest's user id.",
            },
        },
    },
    "Share": {
        "type": "object",
        "required": ["id", "role", "label", "createdBy", "createdAt", "expiresAt"],
        "properties": {
            "id": {"type": "string"},
            "role": {"enum": ["view", "control"]},
            "label": {"type": "string"},
            "createdBy": {"type": "string"},
            "createdAt": {"type": "string", "format": "date-time"},
            "expiresAt": {"type": "string", "format": "date-time"},
        },
    },
    "ShareCreated": {
        "allOf": [
            _ref("Share"),
            {
                "type": "object",
                "required": ["url", "token"],
                "properties": {
                    "url": {
                        "type": "string",
                        "description": "The session's /embed page for someone without an "
                        "account (with Take and Return Control for a control share); the "
                        "token is in its fragment.",
                    },
                    "token": {
                        "type": "string",
                        "description": "The same credential for programs: as a bearer token "
                        "it opens this session only (README, Sharing).",
                    },
                },
            },
        ],
    },
}

_SHARE_ID = {"name": "shareId", "in": "path", "required": True, "schema": {"type": "string"}}


def openapi_document() -> dict[str, Any]:
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Baton edge",
            "version": "1",
            "description": "Watch an AI agent drive a real browser and take over from it.",
        },
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The operator token (BATON_API_TOKEN), a user JWT "
                    "(HS256, BATON_JWT_SECRET, sub = user id), or a share's token (its one "
                    "session only; 403 for anything else).",
                }
            },
        },
        "paths": {
            "/api/browser-session": {
                "post": {
                    "operationId": "createSession",
                    "summary": "Start a session running a task",
                    "security": secured,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("CreateSession")}},
                    },
                    "responses": {
                        "201": _json(_ref("SessionSummary"), "The new session"),
                        **_errors(400, 401, 403, 413, 429, 503),
                    },
                },
                "get": {
                    "operationId": "listSessions",
                    "summary": "The caller's sessions, oldest first, a page at a time",
                    "security": secured,
                    "parameters": [
                        {
                            "name": "pageSize",
                            "in": "query",
                            "description": f"Sessions per page: absent or 0 means "
                            f"{DEFAULT_PAGE_SIZE}; more than {MAX_PAGE_SIZE} means "
                            f"{MAX_PAGE_SIZE}. A page may hold fewer (it stays under 3 MiB).",
                            "schema": {"type": "integer", "minimum": 0, "maximum": 999_999_999},
                        },
                        {
                            "name": "pageToken",
                            "in": "query",
                            "description": "nextPageToken of the previous page.",
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["sessions", "nextPageToken"],
                                "properties": {
                                    "sessions": {"type": "array", "items": _ref("SessionSummary")},
                                    "nextPageToken": {
                                        "type": ["string", "null"],
                                        "description": "Null on the last page.",
                                    },
                                },
                            },
                            "The sessions",
                        ),
                        **_errors(400, 401, 403, 503),
                    },
                },
            },
            "/api/browser-session/{id}": {
                "parameters": [_SESSION_ID],
                "get": {
                    "operationId": "getSession",
                    "summary": "One session",
                    "security": secured,
                    "responses": {
                        "200": _json(_ref("Session"), "The session with its steps"),
                        **_errors(400, 401, 404, 503),
                    },
                },
                "delete": {
                    "operationId": "endSession",
                    "summary": "End the session; its slot, browser and processes go away",
                    "security": secured,
                    "responses": {
                        "200": _json(_ref("SessionSummary"), "The ended session"),
                        **_errors(400, 401, 403, 404, 409, 503),
                    },
                },
            },
            "/api/browser-session/{id}/control": {
                "parameters": [_SESSION_ID],
                "put": {
                    "operationId": "changeControl",
                    "summary": "Take or return control, pause, resume or end",
                    "security": secured,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("Control")}},
                    },
                    "responses": {
                        "200": _json(_ref("SessionSummary"), "The session after the change"),
                        **_errors(400, 401, 403, 404, 409, 413, 503),
                    },
                },
            },
            "/api/browser-session/{id}/control-requests": {
                "parameters": [_SESSION_ID],
                "post": {
                    "operationId": "requestControl",
                    "summary": "Ask the person in control for it",
                    "description": "Nothing changes: every watcher gets "
                    "session:control_requested, and the person in control may answer with "
                    "hand_over (docs/state-machine.md).",
                    "security": secured,
                    "responses": {
                        "200": _json(_ref("SessionSummary"), "The session, as it is"),
                        **_errors(400, 401, 403, 404, 409, 503),
                    },
                },
            },
            "/api/browser-session/{id}/stream": {
                "parameters": [_SESSION_ID],
                "get": {
                    "operationId": "getStreamUrl",
                    "summary": "A WebSocket URL for a VNC viewer such as noVNC",
                    "security": secured,
                    "parameters": [
                        {
                            "name": "watch",
                            "in": "query",
                            "required": False,
                            "description": "true: a watch-only stream, served from the "
                            "session's shared feed at the edge; its input never reaches "
                            "the display (docs/stream.md, Watch-only streams). A view "
                            "share's streams are always watch-only.",
                            "schema": {"type": "string", "enum": ["true", "false"]},
                        }
                    ],
                    "responses": {
                        "200": _json(_ref("Stream"), "Where to connect"),
                        **_errors(400, 401, 404, 409, 503),
                    },
                },
            },
            "/api/browser-session/{id}/cdp": {
                "parameters": [_SESSION_ID],
                "get": {
                    "operationId": "getCdpUrl",
                    "summary": "A CDP WebSocket URL for an agent (Playwright, Puppeteer)",
                    "description": "Commands that change the page are held while a person "
                    "has control; add ?onUserControl=reject to the URL to have them refused "
                    "instead (services/edge/README.md, CDP).",
                    "security": secured,
                    "responses": {
                        "200": _json(_ref("Cdp"), "Where to connect"),
                        **_errors(400, 401, 403, 404, 503),
                    },
                },
            },
            "/api/browser-session/{id}/shares": {
                "parameters": [_SESSION_ID],
                "post": {
                    "operationId": "createShare",
                    "summary": "Open the session to someone without an account",
                    "security": secured,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("ShareRequest")}},
                    },
                    "responses": {
                        "201": _json(_ref("ShareCreated"), "The share, its URL and token"),
                        **_errors(400, 401, 403, 404, 409, 413, 503),
                    },
                },
                "get": {
                    "operationId": "listShares",
                    "summary": "The session's shares that still open it",
                    "security": secured,
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["shares"],
                                "properties": {"shares": {"type": "array", "items": _ref("Share")}},
                            },
                            "The shares (never their tokens)",
                        ),
                        **_errors(400, 401, 403, 404, 503),
                    },
                },
            },
            "/api/browser-session/{id}/shares/{shareId}": {
                "parameters": [_SESSION_ID, _SHARE_ID],
                "delete": {
                    "operationId": "revokeShare",
                    "summary": "Revoke a share: its token opens nothing, its connections close",
                    "security": secured,
                    "responses": {
                        "204": {"description": "Revoked"},
                        **_errors(400, 401, 403, 404, 503),
                    },
                },
            },
            "/api/browser-session/{id}/recording": {
                "parameters": [_SESSION_ID],
                "get": {
                    "operationId": "getRecording",
                    "summary": "The session's video (H.264 in fragmented MP4)",
                    "description": "While the session runs (growing) and after it ended, "
                    "until BATON_RECORDING_RETENTION_S; one byte range per request (Range: "
                    "bytes=a-b, a-, -n). 404 as well when the session was not recorded or "
                    "its recording expired.",
                    "security": secured,
                    "parameters": [
                        {
                            "name": "Range",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": _video("The whole video"),
                        "206": _video("The range asked for (Content-Range)"),
                        "416": _json(_ref("Error"), "The range starts past the end"),
                        **_errors(400, 401, 404, 503),
                    },
                },
            },
            "/api/browser-session/{id}/timeline": {
                "parameters": [_SESSION_ID],
                "get": {
                    "operationId": "getTimeline",
                    "summary": "Steps and control changes in time, placed in the video",
                    "security": secured,
                    "responses": {
                        "200": _json(_ref("Timeline"), "The timeline"),
                        **_errors(400, 401, 404, 503),
                    },
                },
            },
            "/api/audit": {
                "get": {
                    "operationId": "getAudit",
                    "summary": "The audit trail as JSON lines, oldest first (operators only)",
                    "description": "One event per line: {at, sessionId, kind, userId, "
                    "sourceAddress, detail}. Kinds: control_changed, control_requested, "
                    "share_created, share_revoked, stream_opened, stream_closed (detail: "
                    "inputForwarded, inputDropped), cdp_opened, cdp_closed (detail: commands). "
                    "Kept BATON_AUDIT_RETENTION_S. 400 when `since` is not an ISO 8601 time "
                    "with a timezone.",
                    "security": secured,
                    "parameters": [
                        {
                            "name": "since",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "format": "date-time"},
                        },
                        {
                            "name": "sessionId",
                            "in": "query",
                            "required": False,
                            "schema": _SESSION_ID["schema"],
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 10_000},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The events, one JSON object per line",
                            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                        },
                        **_errors(400, 401, 403, 503),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "getHealth",
                    "summary": "200 once the session service answers",
                    "security": [],
                    "responses": {
                        "200": {"description": "Ready"},
                        "503": _json(_ref("Error"), "Not ready"),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "getOpenApiDocument",
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1 document"}},
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "getMetrics",
                    "summary": "Prometheus metrics",
                    "description": "The operator token or BATON_METRICS_TOKEN.",
                    "security": secured,
                    "responses": {
                        "200": {
                            "description": "Text exposition format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **_errors(401, 403),
                    },
                }
            },
        },
    }


def document_text() -> str:
    """The document as docs/openapi.json holds it."""
    return json.dumps(openapi_document(), indent=2) + "\n"


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(document_text())
