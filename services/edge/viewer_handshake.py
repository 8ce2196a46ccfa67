"""The edge's side of a viewer's RFB handshake: the edge is the viewer's server.

The viewer (noVNC) sees security type None: Baton has already authenticated
the person with the stream token, and the VNC password of the slot never leaves
Baton's services. The edge then opens its own RFB connection upstream with the
slot's password (VncAuth) and passes the server's ServerInit on. RFC 6143 7.1:
ProtocolVersion both ways, the security handshake (3.3: the server names the
type; 3.7 and later: the client chooses from a list; SecurityResult from 3.8),
then the client's one-byte ClientInit.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable

from services.edge.rfb_filter import SECURITY_NONE, RfbProtocolError, parse_protocol_version

SERVER_VERSION = b"RFB 003.008\n"


class _Reader:
    def __init__(self, receive: Callable[[], Awaitable[bytes]]) -> None:
        self._receive = receive
        self.buffer = bytearray()

    async def take(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self.buffer += await self._receive()
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data


async def serve_viewer_handshake(
    receive: Callable[[], Awaitable[bytes]], send: Callable[[bytes], Awaitable[None]]
) -> bytes:
    """Run the handshake up to and including ClientInit; answer the bytes read past it.

    The caller bounds it in time and sends ServerInit itself. A viewer that
    speaks something else gets RfbProtocolError.
    """
    reader = _Reader(receive)
    await send(SERVER_VERSION)
    major, minor = parse_protocol_version(await reader.take(12))
    if major != 3:
        raise RfbProtocolError(f"unsupported RFB version {major}.{minor}")
    if minor >= 7:
        await send(bytes([1, SECURITY_NONE]))
        (choice,) = await reader.take(1)
        if choice != SECURITY_NONE:
            if minor >= 8:
                reason = b"security type None only"
                await send(struct.pack(">I", 1) + struct.pack(">I", len(reason)) + reason)
            raise RfbProtocolError(f"unsupported security type {choice}")
        if minor >= 8:
            await send(struct.pack(">I", 0))
    else:
        # 3.3 (and the unofficial 3.4-3.6, treated as 3.3): no SecurityResult for None.
        await send(struct.pack(">I", SECURITY_NONE))
    # ClientInit's shared flag is ignored: upstream is always shared.
    await reader.take(1)
    return bytes(reader.buffer)
