"""Loopback ports: a free one to listen on, and which TCP addresses a set of processes listens on
(read from /proc, Linux only)."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path
from typing import Any


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _decode(addr: str, v6: bool) -> str:
    host_hex, port_hex = addr.split(":")
    raw = bytes.fromhex(host_hex)
    if v6:
        # /proc prints each 32-bit word in host byte order.
        words = struct.unpack("<4I", raw)
        host = socket.inet_ntop(socket.AF_INET6, struct.pack(">4I", *words))
    else:
        host = socket.inet_ntoa(struct.pack("<I", int(host_hex, 16)))
    return f"{host}:{int(port_hex, 16)}"


def listening_addresses(pids: list[int]) -> list[str]:
    """host:port of every listening TCP socket owned by one of `pids`."""
    inodes: set[str] = set()
    for pid in pids:
        inodes |= _socket_inodes(pid)
    found = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A = LISTEN
                found.append(_decode(cols[1], v6))
    return found


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0]
    return host.startswith("127.") or host == "::1" or host.startswith("::ffff:127.")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_on_loopback(app: Any, port: int) -> None:
    """Run an ASGI app on 127.0.0.1:`port` until interrupted, quietly (the command line of a test
    server, such as a model's double)."""
    import uvicorn

    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", access_log=False
    )
