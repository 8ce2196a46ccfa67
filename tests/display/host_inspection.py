"""What the tests look at on the host: /proc, listening sockets, X files."""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path

from services.display.proc_info import is_running
from services.display.state_dir import ProcessRecord
from services.display.x_display_files import lock_file, socket_file


def slot_record(state_dir: Path, slot_id: str) -> ProcessRecord:
    return ProcessRecord.from_json((state_dir / "slots" / slot_id / "record.json").read_text())


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on `port` (IPv4 and IPv6)."""
    found: set[str] = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            address_hex, port_hex = fields[1].split(":")
            if int(port_hex, 16) != port or fields[3] != "0A":  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address_hex)
            # /proc prints each 32-bit word in host (little-endian) order.
            words = struct.unpack("<" + "I" * (len(raw) // 4), raw)
            packed = struct.pack(">" + "I" * len(words), *words)
            found.add(socket.inet_ntop(family, packed))
    return found


def leftovers(display: int, pids: list[int], state_dir: Path, slot_id: str) -> list[str]:
    """Everything of a slot still on the host; empty when it is fully cleaned."""
    found = [f"process {pid}" for pid in pids if is_running(pid)]
    found += [str(p) for p in (lock_file(display), socket_file(display)) if p.exists()]
    if (state_dir / "slots" / slot_id).exists():
        found.append(f"slot dir {slot_id}")
    return found


async def wait_until_gone(display: int, pids: list[int], state_dir: Path, slot_id: str) -> None:
    """Poll until the slot left nothing behind (the test's timeout bounds it)."""
    while True:
        if not leftovers(display, pids, state_dir, slot_id):
            return
        await asyncio.sleep(0.02)
