"""Every command in README.md and docs/, run exactly as written.

A fenced ```sh block is run, whole, by bash (`-e -o pipefail`) from the repository's
root against a real `make run` stack (deploy.local_stack, with this helper's displays
and free ports), with the environment the README tells a user to have: the stack's
`BATON_*` variables (ports, `BATON_API_TOKEN`, `BATON_INTERNAL_TOKEN`). Each must exit 0
and print its key output. A ```sh norun block is a command that cannot run in a test;
NOT_RUN says why for each. Any other shell block is an error: mark it one or the other.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.stack_process import LauncherStack

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"sh", "bash", "shell", "console", "zsh"}
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


# First line of each block that is not run -> why not.
NOT_RUN = {
    "make run     # installs what is missing, starts the whole stack, prints the console URL": (
        "make run, test, bench and cluster are the stack and the suite themselves: this "
        "test runs inside make test, against make run's launcher (deploy.local_stack)"
    ),
    "export BATON_INTERNAL_TOKEN=$(python3 -c "
    "'import secrets; print(secrets.token_urlsafe(32))')": (
        "starts make run in the foreground; the test's stack is started the same way with "
        "a BATON_INTERNAL_TOKEN of its own"
    ),
}

# First line of each block that is run -> what its output must hold.
EXPECTED_OUTPUT = {
    "# The operator token: $BATON_API_TOKEN if you set it, else the #token= of the URL "
    "make run printed.": ['"state":"USER_CONTROL"', '"state":"ENDED"'],
    'AUTH="authorization: Bearer $BATON_INTERNAL_TOKEN"': [
        "baton.session.v1.SessionService\n",
        "rpc ChangeControl",
        '"status": "SERVING"',
        "{",
    ],
}


@dataclass(frozen=True)
class Block:
    document: Path
    language: str
    marks: tuple[str, ...]
    text: str

    @property
    def first_line(self) -> str:
        return self.text.splitlines()[0]

    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}: {self.first_line!r}"


def shell_blocks() -> list[Block]:
    blocks = []
    for document in DOCUMENTS:
        for info, text in FENCE.findall(document.read_text()):
            language, *marks = info.split() or [""]
            if language in SHELL_LANGUAGES:
                blocks.append(Block(document, language, tuple(marks), text))
    return blocks


def test_every_shell_block_is_marked_run_or_not_run_with_a_reason() -> None:
    blocks = shell_blocks()
    assert any(b.document.name == "README.md" for b in blocks), "the README was read"
    for block in blocks:
        assert block.language == "sh" and block.marks in {(), ("norun",)}, (
            f"{block.where()}: mark shell blocks ```sh (run by this test) or ```sh norun"
        )
        if block.marks == ("norun",):
            assert block.first_line in NOT_RUN, f"{block.where()}: say in NOT_RUN why not"
        else:
            assert block.first_line in EXPECTED_OUTPUT, (
                f"{block.where()}: say in EXPECTED_OUTPUT what its output must hold"
            )
    firsts = {b.first_line for b in blocks}
    assert set(NOT_RUN) <= firsts and set(EXPECTED_OUTPUT) <= firsts, "stale entries"


@pytest.mark.timeout(150)
@pytest.mark.parametrize(
    "block",
    [b for b in shell_blocks() if not b.marks],
    ids=lambda b: f"{b.document.name}:{b.first_line[:40]}",
)
def test_the_command_runs_as_written(stack: LauncherStack, block: Block) -> None:
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", block.text],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{block.where()} exited {result.returncode}:\n{output}"
    for expected in EXPECTED_OUTPUT[block.first_line]:
        assert expected in output, f"{block.where()}: no {expected!r} in:\n{output}"
    # Nothing is left behind: every session the commands created has ended.
    live = [
        s["id"]
        for s in stack.request("GET", "/api/browser-session")["sessions"]
        if s["state"] not in ("ENDED", "FAILED")
    ]
    assert live == [], f"{block.where()} left sessions behind: {live}"
