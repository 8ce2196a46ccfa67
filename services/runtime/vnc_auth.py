"""VNC authentication (RFB security type 2) and TigerVNC's password file.

One definition for everything in Baton that speaks VncAuth: the display writes
each slot's password file and probes its slots with it, the edge authenticates
upstream with it. RFC 6143 7.2.2: the server sends a 16-byte challenge, the
client answers it DES-encrypted (ECB) with the password as the key, the bits of
each key byte reversed (a quirk of the original implementation). The password
file (`vncpasswd`, read by Xvnc's -PasswordFile and x11vnc's -rfbauth) holds the
8-byte password DES-encrypted with a fixed, well-known key: it obfuscates,
the file's mode 0600 is what protects it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

CHALLENGE_SIZE = 16
PASSWORD_SIZE = 8
# vncpasswd's fixed key, as standard DES sees it (its bits already reversed).
_FILE_KEY = bytes.fromhex("e84ad660c4721ae0")


def new_password() -> str:
    """A random slot password: VncAuth uses at most 8 bytes, here 48 random bits."""
    return secrets.token_urlsafe(6)


def _des_encrypt(key: bytes, data: bytes) -> bytes:
    # Three equal keys make TripleDES single DES (what VncAuth uses).
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def _des_decrypt(key: bytes, data: bytes) -> bytes:
    decryptor = Cipher(TripleDES(key * 3), modes.ECB()).decryptor()
    return decryptor.update(data) + decryptor.finalize()


def _key(password: str) -> bytes:
    raw = password.encode()[:PASSWORD_SIZE].ljust(PASSWORD_SIZE, b"\0")
    return bytes(int(f"{byte:08b}"[::-1], 2) for byte in raw)


def challenge_response(password: str, challenge: bytes) -> bytes:
    """The client's 16-byte answer to a server's VncAuth challenge."""
    if len(challenge) != CHALLENGE_SIZE:
        raise ValueError(f"a VncAuth challenge has {CHALLENGE_SIZE} bytes, not {len(challenge)}")
    return _des_encrypt(_key(password), challenge)


def obfuscated(password: str) -> bytes:
    """The 8 bytes of a TigerVNC / x11vnc password file for `password`."""
    raw = password.encode()[:PASSWORD_SIZE].ljust(PASSWORD_SIZE, b"\0")
    return _des_encrypt(_FILE_KEY, raw)


def read_password_file(path: Path) -> str:
    """The password in a password file (the inverse of `write_password_file`)."""
    raw = _des_decrypt(_FILE_KEY, path.read_bytes()[:PASSWORD_SIZE])
    return raw.rstrip(b"\0").decode()


def write_password_file(path: Path, password: str) -> None:
    """Write the file with mode 0600 from its creation (never readable by others)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(obfuscated(password))
