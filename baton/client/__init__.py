"""A Python client for Baton's edge, for backends and agents (README.md, "Python client").

- `BatonClient`: the REST API (docs/openapi.json), one method per operation,
  and `events()`: the Socket.IO events (docs/asyncapi.yaml).
- `ApiError`: every refusal or failure of the edge, with its HTTP status, code
  and message.
- `baton.client.types`: the answers' and events' shapes, as typed dictionaries.
- `baton.client.services`: channels and stubs for calling the gRPC services
  directly, inside the deployment.
"""

from baton.client.errors import ApiError
from baton.client.events import EVENT_NAMES, Event, EventStream
from baton.client.rest import BatonClient
from baton.client.types import Cdp, Session, SessionPage, SessionSummary, StepEvent, Stream

__all__ = [
    "EVENT_NAMES",
    "ApiError",
    "BatonClient",
    "Cdp",
    "Event",
    "EventStream",
    "Session",
    "SessionPage",
    "SessionSummary",
    "StepEvent",
    "Stream",
]
