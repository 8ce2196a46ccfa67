"""The internal credential: read once, required by every service, made by `make run`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deploy.local_stack import with_internal_token
from services.runtime.internal_auth import ENV_NAME, InternalToken
from services.runtime.settings import ConfigError, Env
from tests.conftest import INTERNAL_TOKEN, free_port


def test_the_token_is_read_once_checked_and_never_printed() -> None:
    assert InternalToken.from_env(Env({ENV_NAME: INTERNAL_TOKEN.value})) == INTERNAL_TOKEN
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        InternalToken.from_env(Env({ENV_NAME: "short"}))
    with pytest.raises(ConfigError, match=f"{ENV_NAME} is not set"):
        InternalToken.from_env(Env({}))
    assert INTERNAL_TOKEN.value not in repr(INTERNAL_TOKEN)
    assert INTERNAL_TOKEN.admits([("authorization", INTERNAL_TOKEN.header)])
    assert not INTERNAL_TOKEN.admits([("authorization", INTERNAL_TOKEN.value)])
    assert not INTERNAL_TOKEN.admits([("authorization", INTERNAL_TOKEN.header + "x")])
    assert not INTERNAL_TOKEN.admits(None)


def test_make_run_generates_one_token_per_run_and_keeps_a_given_one() -> None:
    generated = with_internal_token({"PATH": "/bin"})
    assert len(generated[ENV_NAME]) >= 32
    assert generated["PATH"] == "/bin"
    assert with_internal_token({})[ENV_NAME] != generated[ENV_NAME]
    assert with_internal_token({ENV_NAME: INTERNAL_TOKEN.value})[ENV_NAME] == INTERNAL_TOKEN.value


@pytest.mark.parametrize("service", ["session", "display", "automation", "edge"])
def test_a_service_without_the_token_refuses_to_start_with_one_line(service: str) -> None:
    env = {name: value for name, value in os.environ.items() if name != ENV_NAME}
    env[f"BATON_{service.upper()}_PORT"] = str(free_port())
    result = subprocess.run(
        [sys.executable, "-m", f"services.{service}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {ENV_NAME} is not set: every Baton service needs the deployment's internal "
        "credential (at least 32 bytes; `make run` generates one)"
    ]
