"""BATON_CORS_ORIGINS for REST, the served assets and framing /embed.

Headers as a browser's CORS check reads them; tests/edge/test_embed.py shows a
real Chromium acting on them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.edge.origins import frame_ancestors, normalized_origins
from tests.edge.harness import Stack, bearer, running_stack, user_token

LISTED = "https://app.example"
UNLISTED = "https://evil.example"
ALICE = user_token("alice")


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    # Written as a person might: upper case and a trailing slash.
    async with running_stack(cors_origins=normalized_origins(["https://APP.example/"])) as running:
        yield running


def cors_headers(headers: object) -> dict[str, str]:
    items = headers.items()  # type: ignore[attr-defined]
    return {k.lower(): v for k, v in items if k.lower().startswith("access-control-")}


async def preflight(
    stack: Stack, path: str, origin: str, method: str
) -> tuple[int, dict[str, str]]:
    async with stack.http.options(
        f"{stack.url}{path}",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    ) as response:
        return response.status, cors_headers(response.headers)


async def test_a_listed_origin_may_call_rest_with_a_bearer_token(stack: Stack) -> None:
    session = await stack.create_session(ALICE)
    control = f"/api/browser-session/{session['id']}/control"
    for path, method in [(control, "PUT"), ("/api/browser-session", "POST"), (control, "DELETE")]:
        status, headers = await preflight(stack, path, LISTED, method)
        assert status == 200
        assert headers["access-control-allow-origin"] == LISTED
        assert method in headers["access-control-allow-methods"].split(", ")
        allowed = headers["access-control-allow-headers"].lower().split(", ")
        assert {"authorization", "content-type"} <= set(allowed)
        # Bearer tokens, never cookies: no credentials mode.
        assert "access-control-allow-credentials" not in headers

    async with stack.http.put(
        f"{stack.url}{control}",
        json={"action": "take_control"},
        headers={**bearer(ALICE), "Origin": LISTED},
    ) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Access-Control-Allow-Origin"] == LISTED
        assert "Origin" in response.headers["Vary"]
        assert response.headers["Access-Control-Expose-Headers"] == "Retry-After"
    # An error is readable too, so the page can say what went wrong.
    async with stack.http.get(
        f"{stack.url}/api/browser-session", headers={"Origin": LISTED}
    ) as response:
        assert response.status == 401
        assert response.headers["Access-Control-Allow-Origin"] == LISTED


async def test_an_unlisted_origin_gets_no_cors_header(stack: Stack) -> None:
    session = await stack.create_session(ALICE)
    path = f"/api/browser-session/{session['id']}"
    status, headers = await preflight(stack, path, UNLISTED, "GET")
    assert headers == {}
    assert status != 200
    async with stack.http.get(
        f"{stack.url}{path}", headers={**bearer(ALICE), "Origin": UNLISTED}
    ) as response:
        # The request itself is served (a browser would not let the page read it).
        assert response.status == 200
        assert cors_headers(response.headers) == {}


ASSETS = [
    "/console/console.js",
    "/console/control_badge.js",
    "/console/console.css",
    "/assets/clients/baton.js",
]


async def test_the_assets_may_be_imported_by_a_listed_origin_only(stack: Stack) -> None:
    for path in ASSETS:
        async with stack.http.get(f"{stack.url}{path}", headers={"Origin": LISTED}) as response:
            assert response.status == 200, path
            assert response.headers["Access-Control-Allow-Origin"] == LISTED, path
        async with stack.http.get(f"{stack.url}{path}", headers={"Origin": UNLISTED}) as response:
            assert response.status == 200, path
            assert cors_headers(response.headers) == {}, path
        # Loaded by /embed itself (same-origin: no Origin header), an asset must
        # not be reused from the cache for the embedding page's import.
        async with stack.http.get(f"{stack.url}{path}") as response:
            assert "Origin" in response.headers.getall("Vary"), path


async def test_embed_may_be_framed_by_the_edge_and_listed_origins_only(stack: Stack) -> None:
    session = await stack.create_session(ALICE)
    async with stack.http.get(f"{stack.url}/embed/{session['id']}") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/html")
        policy = response.headers["Content-Security-Policy"]
        assert policy == f"frame-ancestors 'self' {LISTED}"
        assert "/console/embed.js" in await response.text()
    async with stack.http.get(f"{stack.url}/embed/not%20an%20id") as response:
        assert response.status == 400
        assert "session id" in (await response.json())["error"]["message"]


def test_frame_ancestors_without_listed_origins_is_the_edge_alone() -> None:
    assert frame_ancestors(()) == "frame-ancestors 'self'"
    assert frame_ancestors(["http://B.example:81/", "http://a.example"]) == (
        "frame-ancestors 'self' http://a.example http://b.example:81"
    )
