"""Who is calling: operator token, user JWTs and short-lived stream tokens.

- The operator token (BATON_API_TOKEN) acts for everyone.
- A user JWT (HS256 with BATON_JWT_SECRET) names its user in `sub`; it must
  carry `exp`, at most BATON_JWT_MAX_LIFETIME_S after its `iat` (or after now,
  without `iat`), so no user token lives forever.
- A stream token is what a browser puts in the stream WebSocket URL, since
  browsers cannot set headers on WebSockets: an HMAC-signed claim scoped to one
  session and one user, valid for a short time (long enough to connect), used
  once (`StreamTokenLedger`), and carrying the expiry of the JWT it was asked
  with, so the connection it opens closes when that JWT expires.
- A share token opens one session to someone without an account (README,
  "Sharing"): signed like a stream token, naming the session, the share and
  its role, valid until the share expires and used as often as needed; the
  session service refuses it once the share is revoked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import jwt

from services.runtime.errors import Unauthenticated
from services.runtime.user_ids import OPERATOR_USER_ID, guest_user_id, is_guest

_STREAM_TOKEN_CONTEXT = b"baton stream token v1"
DEFAULT_JWT_MAX_LIFETIME_S = 24 * 3600.0

# What a session-scoped token opens (issue_stream_token).
STREAM_USE = "stream"
# A stream that only watches: served from the session's shared feed at the edge
# (docs/stream.md, "Watch-only streams"); its input never reaches the display.
WATCH_USE = "watch"
CDP_USE = "cdp"
SHARE_USE = "share"


@dataclass(frozen=True)
class ShareScope:
    """What a share's token opens: one session, to watch or also to control."""

    session_id: str
    share_id: str
    role: str


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    `expires_at` (epoch seconds) is when the credential it came from expires:
    None for the operator token. It says nothing about who the caller is, so
    it takes no part in equality.
    """

    user_id: str
    operator: bool = False
    expires_at: float | None = field(default=None, compare=False)
    # Set for a share's holder (user guest:<share id>): that session only.
    share: ShareScope | None = None
    # The client address of the connection it came on (the socket's peer), for
    # the audit trail (README "Audit trail"); not who the caller is.
    source_address: str = field(default="", compare=False)

    def at(self, client: tuple[str, int] | None) -> Principal:
        """This principal, calling from `client` (a request's or WebSocket's peer)."""
        return replace(self, source_address=client[0] if client else "")


@dataclass(frozen=True)
class StreamGrant:
    token: str
    expires_at: float


class StreamTokenLedger:
    """The stream tokens already used, each kept until it would have expired.

    A stream URL travels through places a header does not (browser history,
    proxies' logs): used once, a copy of it opens nothing. Its size is bounded
    by the tokens issued within one token lifetime.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._used: dict[str, float] = {}

    def redeem(self, nonce: str, expires_at: float) -> None:
        """Mark `nonce` used; Unauthenticated if it already was."""
        now = self._clock()
        for old, expiry in list(self._used.items()):
            if expiry < now:
                del self._used[old]
        if nonce in self._used:
            raise Unauthenticated("stream token already used: ask for a new stream URL")
        self._used[nonce] = expires_at

    def __len__(self) -> int:
        return len(self._used)


def generate_api_token() -> str:
    """A fresh operator token, for when BATON_API_TOKEN is unset."""
    return secrets.token_urlsafe(24)


def console_url(base_url: str, api_token: str) -> str:
    """The console URL carrying the operator token (in the fragment, never logged)."""
    return f"{base_url.rstrip('/')}/#token={api_token}"


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header value."""
    if not authorization:
        raise Unauthenticated("missing Authorization: Bearer token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization must be 'Bearer <token>'")
    return token.strip()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Authenticator:
    def __init__(
        self,
        api_token: str,
        jwt_secret: str | None,
        stream_secret: bytes | None = None,
        clock: Callable[[], float] = time.time,
        jwt_max_lifetime_s: float = DEFAULT_JWT_MAX_LIFETIME_S,
    ) -> None:
        if not api_token:
            raise ValueError("api_token must not be empty")
        self._api_token = api_token
        self._jwt_secret = jwt_secret
        # Derived from the operator token unless given, so edges sharing that
        # token accept each other's stream tokens.
        self._stream_key = stream_secret or hmac.digest(
            api_token.encode(), _STREAM_TOKEN_CONTEXT, hashlib.sha256
        )
        self._clock = clock
        self._jwt_max_lifetime_s = jwt_max_lifetime_s
        self.used_stream_tokens = StreamTokenLedger(clock)

    def authenticate(self, token: str) -> Principal:
        """The caller a bearer token (operator token or user JWT) stands for."""
        try:
            # A Socket.IO auth token is any JSON string, lone surrogates included.
            raw = token.encode()
        except UnicodeEncodeError:
            raise Unauthenticated("invalid token") from None
        if hmac.compare_digest(raw, self._api_token.encode()):
            return Principal(OPERATOR_USER_ID, operator=True)
        if token.count(".") == 1:
            # A JWT has three parts; a signed token of ours two.
            return self._share_principal(token)
        if self._jwt_secret is None:
            raise Unauthenticated("invalid token")
        try:
            claims = jwt.decode(
                raw,
                self._jwt_secret,
                algorithms=["HS256"],
                options={"require": ["sub", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(
                f"token has no {exc.claim!r} claim (user tokens must name a subject and expire)"
            ) from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("invalid token") from None
        expires_at = float(claims["exp"])
        issued_at = claims.get("iat")
        # PyJWT checked exp against time.time(): so does this, without iat.
        start = float(issued_at) if isinstance(issued_at, int | float) else time.time()
        if expires_at - start > self._jwt_max_lifetime_s:
            raise Unauthenticated(
                f"token lives longer than the allowed {self._jwt_max_lifetime_s:g} s "
                "(BATON_JWT_MAX_LIFETIME_S): issue one with an earlier exp"
            )
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("token has no subject")
        if subject == OPERATOR_USER_ID:
            # The session service knows the operator's sessions by this user
            # id: a user named so would own them and share their input gate.
            raise Unauthenticated(f"the subject {OPERATOR_USER_ID!r} is reserved")
        if is_guest(subject):
            raise Unauthenticated("subjects starting 'guest:' are reserved for shares")
        return Principal(subject, expires_at=expires_at)

    def issue_share_token(self, scope: ShareScope, expires_at: float) -> str:
        """The bearer token of a share: valid until the share expires."""
        claims = {
            "sid": scope.session_id,
            "shid": scope.share_id,
            "role": scope.role,
            "exp": round(expires_at, 3),
            "use": SHARE_USE,
        }
        return self._sign(claims)

    def _share_principal(self, token: str) -> Principal:
        claims = self._verified_claims(token)
        if claims.get("use") != SHARE_USE:
            raise Unauthenticated("invalid token")
        scope = ShareScope(str(claims["sid"]), str(claims["shid"]), str(claims["role"]))
        return Principal(
            guest_user_id(scope.share_id), expires_at=float(claims["exp"]), share=scope
        )

    def authenticate_header(self, authorization: str | None) -> Principal:
        return self.authenticate(bearer_token(authorization))

    def issue_stream_token(
        self, session_id: str, principal: Principal, lifetime: float, use: str = STREAM_USE
    ) -> StreamGrant:
        """A short-lived token for one session's `use`: its stream, or its CDP endpoint."""
        expires_at = self._clock() + lifetime
        if principal.expires_at is not None:
            expires_at = min(expires_at, principal.expires_at)
        claims: dict[str, Any] = {
            "sid": session_id,
            "sub": principal.user_id,
            "op": principal.operator,
            "exp": round(expires_at, 3),
            # The caller's own credential's expiry: the connection ends with it.
            "pexp": principal.expires_at,
            "jti": secrets.token_urlsafe(12),
            "use": use,
        }
        if principal.share is not None:
            claims["shid"] = principal.share.share_id
            claims["role"] = principal.share.role
        return StreamGrant(self._sign(claims), expires_at)

    def _sign(self, claims: dict[str, Any]) -> str:
        payload = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
        signature = hmac.digest(self._stream_key, payload, hashlib.sha256)
        return f"{_b64encode(payload)}.{_b64encode(signature)}"

    def verify_stream_token(self, token: str, session_id: str, use: str = STREAM_USE) -> Principal:
        """The user a stream token was issued to, if it is valid for `session_id` now."""
        return self._stream_claims(token, session_id, (use,))[0]

    def redeem_stream_token(self, token: str, session_id: str, use: str = STREAM_USE) -> Principal:
        """As verify_stream_token, and the token is spent: a second use is refused."""
        return self.redeem_viewer_token(token, session_id, (use,))[1]

    def redeem_viewer_token(
        self, token: str, session_id: str, uses: tuple[str, ...] = (STREAM_USE, WATCH_USE)
    ) -> tuple[str, Principal]:
        """A token for one of `uses`, spent: which use it was for, and whose it is."""
        principal, claims = self._stream_claims(token, session_id, uses)
        nonce = claims.get("jti")
        if not isinstance(nonce, str):
            raise Unauthenticated("stream token has no id: ask for a new stream URL")
        self.used_stream_tokens.redeem(nonce, float(claims["exp"]))
        return str(claims.get("use", STREAM_USE)), principal

    def _verified_claims(self, token: str) -> dict[str, Any]:
        """The claims of a token this edge (or one sharing its key) signed, if unexpired."""
        encoded_payload, dot, encoded_signature = token.partition(".")
        if not dot:
            raise Unauthenticated("malformed stream token")
        try:
            payload = _b64decode(encoded_payload)
            signature = _b64decode(encoded_signature)
        except (binascii.Error, ValueError):
            raise Unauthenticated("malformed stream token") from None
        expected = hmac.digest(self._stream_key, payload, hashlib.sha256)
        if not hmac.compare_digest(signature, expected):
            raise Unauthenticated("invalid stream token")
        claims: dict[str, Any] = json.loads(payload)
        if float(claims["exp"]) < self._clock():
            expired = "share" if claims.get("use") == SHARE_USE else "stream token"
            raise Unauthenticated(f"{expired} expired")
        return claims

    def _stream_claims(
        self, token: str, session_id: str, uses: tuple[str, ...]
    ) -> tuple[Principal, dict[str, Any]]:
        claims = self._verified_claims(token)
        if claims.get("sid") != session_id:
            raise Unauthenticated("stream token is for another session")
        if claims.get("use", STREAM_USE) not in uses:
            raise Unauthenticated(
                f"the token is for a session's {claims.get('use')}, not its {uses[0]}"
            )
        principal_expiry = claims.get("pexp")
        share_id = claims.get("shid")
        principal = Principal(
            str(claims["sub"]),
            operator=bool(claims["op"]),
            expires_at=None if principal_expiry is None else float(principal_expiry),
            share=None
            if share_id is None
            else ShareScope(session_id, str(share_id), str(claims["role"])),
        )
        return principal, claims
