"""Thin helpers over the gRPC stubs, for a backend inside the deployment that calls
Baton's services directly rather than through the edge.

The services accept only callers holding the deployment's internal credential
(BATON_INTERNAL_TOKEN) and, when configured, TLS (BATON_GRPC_TLS_*): README.md,
"Security". A channel from here carries both as the services' own channels do
(services/runtime/grpc_client.py). Every SessionService call names its `actor`:
`operator()` acts for the deployment, `user(id)` as that user (who sees and
controls only their own sessions).

    async with open_service_channel("127.0.0.1:50051", token) as channel:
        sessions = session_service(channel)
        answer = await sessions.ListSessions(
            session_pb2.ListSessionsRequest(actor=operator())
        )
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import grpc

from baton.automation.v1 import automation_pb2_grpc
from baton.display.v1 import display_pb2_grpc
from baton.session.v1 import session_pb2, session_pb2_grpc
from services.runtime.grpc_client import open_channel
from services.runtime.grpc_tls import PLAINTEXT, GrpcTls
from services.runtime.internal_auth import InternalToken
from services.runtime.settings import Env

# Where each service listens by default (docs/settings.md).
SESSION_ADDRESS = "127.0.0.1:50051"


def open_service_channel(
    address: str, internal_token: str, tls: GrpcTls = PLAINTEXT
) -> grpc.aio.Channel:
    """A channel to one service (an async context manager: it closes on exit).
    ConfigError when the token is shorter than the services accept."""
    return open_channel(address, InternalToken(internal_token), tls)


def channel_from_env(
    address_variable: str = "BATON_SESSION_ADDRESS",
    default_address: str = SESSION_ADDRESS,
    environ: Mapping[str, str] | None = None,
) -> grpc.aio.Channel:
    """A channel configured as the services configure theirs: the address in
    `address_variable`, BATON_INTERNAL_TOKEN and the BATON_GRPC_TLS_* files."""
    env = Env(os.environ if environ is None else environ)
    return open_channel(
        env.text(address_variable, default_address),
        InternalToken.from_env(env),
        GrpcTls.from_env(env),
    )


def session_service(channel: grpc.aio.Channel) -> session_pb2_grpc.SessionServiceAsyncStub:
    """The session service: create, read, list, control and end sessions, watch events."""
    return session_pb2_grpc.SessionServiceStub(channel)


def display_service(channel: grpc.aio.Channel) -> display_pb2_grpc.DisplayServiceAsyncStub:
    return display_pb2_grpc.DisplayServiceStub(channel)


def automation_service(
    channel: grpc.aio.Channel,
) -> automation_pb2_grpc.AutomationServiceAsyncStub:
    return automation_pb2_grpc.AutomationServiceStub(channel)


def operator(user_id: str = "operator") -> session_pb2.Actor:
    """The actor of an operator: every session, every action."""
    return session_pb2.Actor(user_id=user_id, operator=True)


def user(user_id: str) -> session_pb2.Actor:
    """The actor of one user: their own sessions only."""
    return session_pb2.Actor(user_id=user_id, operator=False)
