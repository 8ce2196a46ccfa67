"""clients/js's event types name every event of docs/asyncapi.yaml.

The REST types are generated from docs/openapi.json and checked current by
`make lint` (clients/js/scripts/check-generated.js); the Socket.IO event types
are written by hand, so this reads the built package's SERVER_EVENTS and
CLIENT_EVENTS (each checked complete against the type maps by tsc) in Node.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.conftest import require_binary

ROOT = Path(__file__).resolve().parents[2]
EVENTS_MODULE = ROOT / "clients" / "js" / "dist" / "events.js"

PRINT_EVENTS = """
const events = await import(process.argv[1]);
console.log(JSON.stringify({server: events.SERVER_EVENTS, client: events.CLIENT_EVENTS}));
"""


def asyncapi_events() -> tuple[set[str], set[str]]:
    """(events the edge sends, events a client sends), from docs/asyncapi.yaml."""
    spec = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())
    messages = spec["components"]["messages"]
    sent: set[str] = set()
    received: set[str] = set()
    for operation in spec["operations"].values():
        for message in operation["messages"]:
            key = message["$ref"].rsplit("/", 1)[-1]
            name = messages[key]["name"]
            (sent if operation["action"] == "send" else received).add(name)
    return sent, received


def test_the_js_client_types_every_asyncapi_event() -> None:
    node = require_binary("node", "nodejs")
    assert EVENTS_MODULE.is_file(), "clients/js is not built: run `make setup`"
    out = subprocess.run(
        [node, "--input-type=module", "-e", PRINT_EVENTS, EVENTS_MODULE.as_uri()],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    typed = json.loads(out)
    sent, received = asyncapi_events()
    assert sent and received
    assert set(typed["server"]) == sent
    assert set(typed["client"]) == received
