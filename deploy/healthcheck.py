"""The container's health check: GET PATH (default /live) on the port bnproxy
was told to listen on through ``BNPROXY_PORT`` (digits, or a Twisted endpoint
string: ``tcp:N``, ``tcp:port=N:interface=H``, ``tcp6:…``, ``unix:PATH``).
Exit 0 when it answers 200, 1 otherwise (with one line saying why).

Standard library only: it runs every few seconds inside the image.
Usage: python healthcheck.py [PATH]
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import sys

TIMEOUT = 2.0
WILDCARD = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "::0": "::1"}


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=TIMEOUT)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(self._path)


def connection_for(description: str) -> http.client.HTTPConnection:
    """An HTTP connection to where ``description`` (BNPROXY_PORT) listens."""
    if description.isdigit():
        return http.client.HTTPConnection("127.0.0.1", int(description), timeout=TIMEOUT)
    # Endpoint strings separate fields by unescaped colons; "\:" is a colon.
    fields = [f.replace("\\:", ":") for f in re.split(r"(?<!\\):", description)]
    kind, args = fields[0], fields[1:]
    named = dict(a.split("=", 1) for a in args if "=" in a)
    positional = [a for a in args if "=" not in a]
    if kind in ("tcp", "tcp6"):
        port = int(named.get("port") or positional[0])
        interface = named.get("interface", "::" if kind == "tcp6" else "")
        host = WILDCARD.get(interface, interface)
        return http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    if kind == "unix":
        return _UnixConnection(named.get("address") or positional[0])
    raise ValueError(f"cannot health-check endpoint {description!r} (tcp, tcp6, unix only)")


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "/live"
    description = os.environ.get("BNPROXY_PORT") or "8080"
    try:
        conn = connection_for(description)
        conn.request("GET", path)
        status = conn.getresponse().status
    except (OSError, ValueError, IndexError, http.client.HTTPException) as e:
        print(f"bnproxy health check: {description} {path}: {e}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"bnproxy health check: {description} {path}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
