"""The image's Python dependencies are locked (issue 11): deploy/requirements.lock
pins one version of every runtime dependency pyproject.toml names, and each pin
satisfies pyproject's range, so `make lock` was run after the last change."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def locked() -> dict[str, str]:
    """Canonical name -> pinned version; every line must be `name==version`."""
    pins: dict[str, str] = {}
    for line in (ROOT / "deploy" / "requirements.lock").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, version = line.strip().partition("==")
        assert sep and version and " " not in version, f"not pinned with ==: {line!r}"
        pins[canonicalize_name(name)] = version
    return pins


def test_the_lock_pins_every_runtime_dependency_within_its_range() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = locked()
    # Positive marker: the lock holds what we know the services import.
    assert "grpcio" in pins and "playwright" in pins
    for text in declared:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} (pyproject.toml) is not in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {requirement.name}=={pins[name]}, outside pyproject's "
            f"{requirement.specifier}: run `make lock`"
        )


def test_the_lock_holds_no_development_tool() -> None:
    """What the image installs is the runtime set only (no pytest, mypy, ...)."""
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    dev_names = {canonicalize_name(Requirement(text).name) for text in dev["dev"]}
    runtime = {
        canonicalize_name(Requirement(text).name)
        for text in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    assert "pytest" in dev_names
    assert not (set(locked()) & (dev_names - runtime))
