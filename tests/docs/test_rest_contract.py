"""The REST contract as the repository holds it (docs/openapi.json) and as a real edge
serves it: the same document, every operation named, OPTIONS answering every route's
real methods."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp

from tests.edge.harness import running_stack

DOCS = Path(__file__).resolve().parents[2] / "docs"
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
CAMEL_CASE = re.compile(r"^[a-z][a-z0-9]*(?:[A-Z][a-z0-9]*)*$")


def operations(document: dict[str, object]) -> list[tuple[str, str, dict[str, object]]]:
    paths = document["paths"]
    assert isinstance(paths, dict)
    return [
        (path, method, operation)
        for path, item in paths.items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def test_every_operation_has_a_unique_camel_case_operation_id() -> None:
    document = json.loads((DOCS / "openapi.json").read_text())
    found = operations(document)
    assert len(found) >= 9, "the positive marker: the document's operations were read"
    ids = [str(operation.get("operationId", "")) for _, _, operation in found]
    unnamed = [
        f"{method.upper()} {path}" for (path, method, _), i in zip(found, ids, strict=True) if not i
    ]
    assert not unnamed, f"operations without an operationId: {unnamed}"
    assert all(CAMEL_CASE.match(i) for i in ids), ids
    assert len(set(ids)) == len(ids), f"operationIds must be unique: {ids}"
    # Stable: client generators name their methods after these.
    assert {"createSession", "listSessions", "getSession", "changeControl"} <= set(ids)


async def test_the_repository_copy_is_what_the_edge_serves_and_options_lists_methods() -> None:
    document = json.loads((DOCS / "openapi.json").read_text())
    async with running_stack() as stack, aiohttp.ClientSession() as client:
        async with client.get(f"{stack.url}/openapi.json") as reply:
            assert reply.status == 200
            served = await reply.json()
        assert served == document, (
            "docs/openapi.json differs from the edge's /openapi.json: run `make docs` and commit"
        )
        paths = document["paths"]
        assert isinstance(paths, dict)
        for path, item in paths.items():
            declared = {method.upper() for method in item if method in HTTP_METHODS}
            expected = declared | {"OPTIONS"} | ({"HEAD"} if "GET" in declared else set())
            # No credentials: a preflight carries none.
            async with client.options(stack.url + path.replace("{id}", "s-1")) as reply:
                assert reply.status == 204, (path, reply.status, await reply.text())
                allow = {m.strip() for m in reply.headers.get("Allow", "").split(",")}
            assert allow == expected, (path, allow)
        async with client.options(f"{stack.url}/api/browser-session") as reply:
            assert reply.headers["Allow"] == "GET, HEAD, OPTIONS, POST"
