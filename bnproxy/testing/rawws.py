"""A websocket upgrade on a plain blocking socket, for tests and benches
that need many cheap bots or the raw bytes of a refusal (no websocket
library in between)."""

from __future__ import annotations

import base64
import os
import socket


def upgrade(port: int, path: str, timeout: float = 30.0,
            options: tuple[tuple[int, int, int], ...] = ()) -> tuple[socket.socket, bytes, bytes]:
    """Send an upgrade request for ``path`` to 127.0.0.1:``port`` (the
    socket ``options``, ``(level, name, value)`` each, set before it
    connects); return the socket, the response head (status line and
    headers: ``HTTP/1.1 101 …`` when accepted, a refusal's status otherwise)
    and the bytes read past it. Raises ``ConnectionError`` when the
    connection ends before the head."""
    s = socket.socket()
    for option in options:
        s.setsockopt(*option)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            s.close()
            raise ConnectionError(f"closed during the handshake: {data[:200]!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return s, head, rest
