"""A display's X authority: one random MIT-MAGIC-COOKIE-1 in an Xauthority file.

The X server is started with `-auth <file>` and refuses any client that does
not present the cookie; whatever Baton runs on the display (Chromium, x11vnc)
gets the file through XAUTHORITY or -auth. Format (Xau, libXau's AuWrite): for
each entry family (u16), address, display number, auth name and auth data,
each a u16 length then bytes, all big-endian.
"""

from __future__ import annotations

import os
import secrets
import struct
from pathlib import Path

AUTH_NAME = b"MIT-MAGIC-COOKIE-1"
COOKIE_SIZE = 16
# FamilyWild: the entry holds for the display whatever address a client uses.
FAMILY_WILD = 0xFFFF


def _counted(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def xauthority_entry(display: int, cookie: bytes) -> bytes:
    return (
        struct.pack(">H", FAMILY_WILD)
        + _counted(b"")
        + _counted(str(display).encode())
        + _counted(AUTH_NAME)
        + _counted(cookie)
    )


def write_xauthority(path: Path, display: int) -> None:
    """A fresh cookie for `display` in `path`, mode 0600 from its creation."""
    entry = xauthority_entry(display, secrets.token_bytes(COOKIE_SIZE))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(entry)
