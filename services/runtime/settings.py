"""Typed reading of environment variables for each service's Settings.

Only a service's `__main__` builds an `Env`; everything else receives frozen
settings objects.
"""

from __future__ import annotations

from collections.abc import Mapping


class ConfigError(Exception):
    """A setting has a value the service cannot use."""


class Env:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str, default: str) -> str:
        return self._environ.get(name, default)

    def optional(self, name: str) -> str | None:
        value = self._environ.get(name, "")
        return value or None

    def integer(self, name: str, default: int, minimum: int | None = None) -> int:
        raw = self._environ.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not an integer") from None
        if minimum is not None and value < minimum:
            raise ConfigError(f"{name}={value} is below the minimum {minimum}")
        return value

    def number(self, name: str, default: float, minimum: float | None = None) -> float:
        raw = self._environ.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a number") from None
        if minimum is not None and value < minimum:
            raise ConfigError(f"{name}={value} is below the minimum {minimum}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self._environ.get(name)
        if raw is None or raw == "":
            return default
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={raw!r} is not a boolean (use true or false)")

    def items(self, name: str) -> list[str]:
        raw = self._environ.get(name, "")
        return [part.strip() for part in raw.split(",") if part.strip()]
