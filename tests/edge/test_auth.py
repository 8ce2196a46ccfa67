"""Unit tests of operator, JWT and stream-token authentication."""

from __future__ import annotations

import jwt
import pytest

from services.edge.auth import (
    OPERATOR_USER_ID,
    Authenticator,
    Principal,
    bearer_token,
    console_url,
    generate_api_token,
)
from services.runtime.errors import Unauthenticated

SECRET = "jwt-secret-for-tests-0123456789abcdef"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock | None = None) -> Authenticator:
    return Authenticator("operator-token", SECRET, clock=clock or Clock())


def user_jwt(claims: dict[str, object], secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def test_operator_token_is_the_operator() -> None:
    assert make().authenticate("operator-token") == Principal(OPERATOR_USER_ID, operator=True)


def test_user_jwt_names_its_subject() -> None:
    assert make().authenticate(user_jwt({"sub": "alice"})) == Principal("alice")


@pytest.mark.parametrize(
    "token",
    [
        "wrong-token",
        user_jwt({"sub": "alice"}, secret="another-secret-0123456789abcdefghij"),
        user_jwt({"name": "alice"}),
        user_jwt({"sub": "alice", "exp": 1}),
        user_jwt({"sub": ""}),
        # The operator's user id: such a user would own the operator's sessions.
        user_jwt({"sub": OPERATOR_USER_ID}),
        user_jwt({"sub": "alice", "nbf": 2_000_000_000}),
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.",
        # Not encodable as UTF-8 (a Socket.IO auth token can be any JSON string).
        "\ud800",
    ],
)
def test_bad_tokens_are_rejected(token: str) -> None:
    with pytest.raises(Unauthenticated):
        make().authenticate(token)


def test_jwts_are_rejected_when_no_secret_is_configured() -> None:
    with pytest.raises(Unauthenticated):
        Authenticator("operator-token", None).authenticate(user_jwt({"sub": "alice"}))


def test_bearer_header_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    for header in (None, "", "Basic abc", "Bearer", "Bearer  "):
        with pytest.raises(Unauthenticated):
            bearer_token(header)


def test_authenticate_header() -> None:
    assert make().authenticate_header("Bearer operator-token").operator


def test_stream_token_round_trip_is_scoped_to_session_and_user() -> None:
    clock = Clock()
    auth = make(clock)
    grant = auth.issue_stream_token("s1", Principal("alice"), lifetime=60)
    assert grant.expires_at == clock.now + 60
    assert auth.verify_stream_token(grant.token, "s1") == Principal("alice")
    with pytest.raises(Unauthenticated, match="another session"):
        auth.verify_stream_token(grant.token, "s2")


def test_stream_token_expires() -> None:
    clock = Clock()
    auth = make(clock)
    grant = auth.issue_stream_token("s1", Principal("alice"), lifetime=60)
    clock.now += 61
    with pytest.raises(Unauthenticated, match="expired"):
        auth.verify_stream_token(grant.token, "s1")


def test_tampered_or_foreign_stream_token_is_rejected() -> None:
    auth = make()
    grant = auth.issue_stream_token("s1", Principal("alice"), lifetime=60)
    payload, signature = grant.token.split(".")
    forged = auth.issue_stream_token("s1", Principal("mallory"), lifetime=60)
    for token in (
        f"{forged.token.split('.')[0]}.{signature}",
        f"{payload}.{signature[:-2]}",
        "not-a-token",
        "!!!.???",
        Authenticator("other-operator-token", SECRET)
        .issue_stream_token("s1", Principal("alice"), 60)
        .token,
    ):
        with pytest.raises(Unauthenticated):
            auth.verify_stream_token(token, "s1")


def test_edges_sharing_the_operator_token_accept_each_others_stream_tokens() -> None:
    grant = make().issue_stream_token("s1", Principal("bob"), lifetime=60)
    assert make().verify_stream_token(grant.token, "s1") == Principal("bob")


def test_generated_token_and_console_url() -> None:
    first, second = generate_api_token(), generate_api_token()
    assert first != second
    assert len(first) >= 32
    assert console_url("http://127.0.0.1:8080/", first) == f"http://127.0.0.1:8080/#token={first}"
