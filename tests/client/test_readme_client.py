"""The README's "Python client" block, run as written against the whole stack."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from baton.client import BatonClient
from services.display.settings import NumberRange
from tests.edge.full_stack import FullStack, full_stack
from tests.edge.harness import user_token

README = Path(__file__).resolve().parents[2] / "README.md"
DISPLAYS = NumberRange(2510, 2514)
VNC_PORTS = NumberRange(22510, 22514)
ALICE = user_token("alice")


def readme_block() -> str:
    text = README.read_text()
    section = text[text.index("## Python client") :]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match is not None, "the section has its python block"
    return match.group(1)


@pytest_asyncio.fixture
async def stack(tmp_path: Path) -> AsyncIterator[FullStack]:
    async with full_stack(tmp_path, DISPLAYS, VNC_PORTS) as running:
        yield running


@pytest.mark.asyncio
async def test_the_readme_s_client_example_runs_as_written(
    stack: FullStack, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace: dict[str, object] = {}
    exec(compile(readme_block(), str(README), "exec"), namespace)
    main = namespace["main"]
    assert callable(main)
    await main(stack.url, ALICE, stack.site.form_url)
    printed = capsys.readouterr().out.splitlines()
    session_id = printed[0].split()[1]
    assert printed[0].endswith(" AI_CONTROL")
    assert printed[1] == "now USER_CONTROL"
    assert printed[2].startswith("live view: ws://")
    assert printed[3].startswith("409 ")
    assert printed[4].startswith("CDP: ws://") and "/cdp/ws?token=" in printed[4]
    async with BatonClient(stack.url, ALICE) as baton:
        assert (await baton.get_session(session_id))["state"] == "ENDED"
