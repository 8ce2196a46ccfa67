"""The hand-back report's JSON form, one definition for every place that shows
it: REST and Socket.IO (the edge's json_views) and external CDP clients'
`Baton.controlReturned` event (automation's cdp_gate)."""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict

from baton.automation.v1 import automation_pb2

# The CDP event an external agent gets as a person returns control to it.
CONTROL_RETURNED_METHOD = "Baton.controlReturned"


def handback_json(handback: automation_pb2.Handback) -> dict[str, Any]:
    """camelCase, every field present (empty lists and strings included)."""
    return MessageToDict(handback, always_print_fields_with_no_presence=True)
