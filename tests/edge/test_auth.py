"""Unit tests of operator, JWT and stream-token authentication."""

from __future__ import annotations

import time

import jwt
import pytest

from services.edge.auth import (
    Authenticator,
    Principal,
    bearer_token,
    console_url,
    generate_api_token,
)
from services.runtime.errors import Unauthenticated
from services.runtime.user_ids import OPERATOR_USER_ID

SECRET = "jwt-secret-for-tests-0123456789abcdef"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock | None = None) -> Authenticator:
    return Authenticator("operator-token", SECRET, clock=clock or Clock())


def in_an_hour() -> int:
    return int(time.time()) + 3600


def user_jwt(claims: dict[str, object], secret: str = SECRET, algorithm: str = "HS256") -> str:
    """A JWT with `claims`, expiring in an hour unless they say otherwise."""
    return jwt.encode({"exp": in_an_hour(), **claims}, secret, algorithm=algorithm)


def test_operator_token_is_the_operator() -> None:
    principal = make().authenticate("operator-token")
    assert principal == Principal(OPERATOR_USER_ID, operator=True)
    assert principal.expires_at is None


def test_user_jwt_names_its_subject_and_expiry() -> None:
    expiry = in_an_hour()
    principal = make().authenticate(user_jwt({"sub": "alice", "exp": expiry}))
    assert principal == Principal("alice")
    assert principal.expires_at == expiry


def test_a_user_jwt_must_expire() -> None:
    forever = jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256")
    with pytest.raises(Unauthenticated, match="no 'exp' claim"):
        make().authenticate(forever)


def test_a_user_jwt_may_live_at_most_the_maximum_lifetime() -> None:
    now = int(time.time())
    auth = Authenticator("operator-token", SECRET, jwt_max_lifetime_s=3600)
    # Issued long ago, but its lifetime (exp - iat) is within the bound.
    assert auth.authenticate(user_jwt({"sub": "alice", "iat": now - 3000, "exp": now + 600}))
    for claims in (
        {"sub": "alice", "iat": now, "exp": now + 3601},
        {"sub": "alice", "iat": now - 7200, "exp": now + 60},
        # Without iat, measured from now.
        {"sub": "alice", "exp": now + 7200},
    ):
        with pytest.raises(Unauthenticated, match="BATON_JWT_MAX_LIFETIME_S"):
            auth.authenticate(user_jwt(claims))
    # The default: a day.
    with pytest.raises(Unauthenticated, match="longer than the allowed 86400 s"):
        make().authenticate(user_jwt({"sub": "alice", "exp": now + 2 * 86400}))


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


def test_a_stream_token_is_used_once() -> None:
    clock = Clock()
    auth = make(clock)
    grant = auth.issue_stream_token("s1", Principal("alice"), lifetime=60)
    assert auth.redeem_stream_token(grant.token, "s1") == Principal("alice")
    with pytest.raises(Unauthenticated, match="already used"):
        auth.redeem_stream_token(grant.token, "s1")
    # Verifying alone spends nothing; each URL asked for is its own token.
    again = auth.issue_stream_token("s1", Principal("alice"), lifetime=60)
    assert auth.verify_stream_token(again.token, "s1") == Principal("alice")
    assert auth.redeem_stream_token(again.token, "s1") == Principal("alice")
    # Spent tokens are forgotten once they would have expired anyway.
    assert len(auth.used_stream_tokens) == 2
    clock.now += 61
    fresh = auth.issue_stream_token("s1", Principal("alice"), lifetime=60)
    auth.redeem_stream_token(fresh.token, "s1")
    assert len(auth.used_stream_tokens) == 1


def test_a_stream_token_carries_and_is_bounded_by_the_jwt_expiry() -> None:
    clock = Clock()
    auth = make(clock)
    alice = Principal("alice", expires_at=clock.now + 10)
    grant = auth.issue_stream_token("s1", alice, lifetime=60)
    assert grant.expires_at == clock.now + 10
    assert auth.redeem_stream_token(grant.token, "s1").expires_at == clock.now + 10
    operator = auth.issue_stream_token("s1", Principal(OPERATOR_USER_ID, operator=True), 60)
    assert auth.redeem_stream_token(operator.token, "s1").expires_at is None


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
