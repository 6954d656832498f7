"""Bytes a second one open dashboard tab receives, and what the page costs
to load: a proxy (default chain) in front of the fake exchange, ``--bots``
bots asking every ``--every`` seconds (klines from the cache, the server
time upstream, one order refused for its missing signature), and two tabs
reading /dashboard/events for ``--seconds``: one accepting gzip (as browsers
do), one not. Reports bytes per second on the wire for each (the first whole
state, then patches), the first event's size, and the sizes of /dashboard and
/dashboard/state. ``--ws-bots N``: also N websocket bots through the
proxy's gateway (spot streams from the fake; each subscribes ``--ws-streams``
streams, bot i starting at stream i, and reads everything), as the
dashboard's websocket panel shows them.

    python bench/dashboard_bytes.py [--bots 6] [--seconds 30] [--every 0.5]
                                    [--ws-bots 0] [--ws-streams 40]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request

from common import TWISTD, free_port, process


class Tab:
    """Reads /dashboard/events, counting the bytes on the wire."""

    def __init__(self, port: int, gzip: bool) -> None:
        self.bytes = 0
        self.first_at: float | None = None
        self.first_bytes = 0
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"GET /dashboard/events HTTP/1.1\r\nHost: x\r\n"
                          + (b"Accept-Encoding: gzip, deflate, br\r\n" if gzip else b"")
                          + b"\r\n")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return
                if self.first_at is None:
                    self.first_at, self.first_bytes = time.monotonic(), len(data)
                self.bytes += len(data)

    def rate(self, seconds: float) -> float:
        """Bytes a second after the first event (steady state)."""
        return (self.bytes - self.first_bytes) / seconds


def bots(port: int, n: int, every: float, stop: threading.Event) -> None:
    def one(i: int) -> None:
        name = {"X-Bnproxy-Client": f"bot-{i}"}
        paths = ["/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=100", "/api/v3/time",
                 "/api/v3/order?symbol=BTCUSDT&side=BUY&type=MARKET&quantity=1"]
        k = 0
        while not stop.is_set():
            request = urllib.request.Request(f"http://127.0.0.1:{port}{paths[k % 3]}",
                                             headers=name, method="GET")
            with contextlib.suppress(urllib.error.URLError, OSError):
                urllib.request.urlopen(request, timeout=10).read()
            k += 1
            stop.wait(every)
    for i in range(n):
        threading.Thread(target=one, args=(i,), daemon=True).start()


WS_KINDS = ("trade", "aggTrade", "ticker", "miniTicker", "bookTicker", "kline_1m", "kline_5m",
            "depth", "depth5", "depth@100ms")
WS_SYMBOLS = ("btcusdt", "ethusdt", "solusdt", "bnbusdt", "xrpusdt", "adausdt")


def ws_bots(port: int, n: int, streams: int) -> list[socket.socket]:
    """``n`` websocket bots on spot streams, each reading all it gets."""
    names = [f"{s}@{k}" for s in WS_SYMBOLS for k in WS_KINDS]
    out = []
    for i in range(n):
        mine = [names[(i + j) % len(names)] for j in range(min(streams, len(names)))]
        # from their own loopback addresses: not the tabs' per-address connection cap
        sock = socket.create_connection(("127.0.0.1", port),
                                        source_address=(f"127.0.1.{1 + i % 250}", 0))
        sock.sendall(f"GET /stream?streams={'/'.join(mine)} HTTP/1.1\r\nHost: x\r\n"
                     "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     f"Sec-WebSocket-Version: 13\r\nX-Bnproxy-Client: ws-{i}\r\n\r\n".encode())

        def drain(s: socket.socket = sock) -> None:
            with contextlib.suppress(OSError):
                while s.recv(65536):
                    pass
        threading.Thread(target=drain, daemon=True).start()
        out.append(sock)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bots", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--every", type=float, default=0.5)
    parser.add_argument("--ws-bots", type=int, default=0)
    parser.add_argument("--ws-streams", type=int, default=40)
    args = parser.parse_args()
    xport, port = free_port(), free_port()
    tmp = tempfile.mkdtemp()
    with process(TWISTD, "-n", "--pidfile=", "--logfile=/dev/null", "bnproxy-exchange",
                 "--port", f"tcp:{xport}:interface=127.0.0.1", port=xport), \
         process(TWISTD, "-n", "--pidfile=", "--logfile=/dev/null", "bnproxy", "--port",
                 f"tcp:{port}:interface=127.0.0.1", "--state-dir", tmp, "--access-log", "none",
                 "--upstream", f"spot=http://127.0.0.1:{xport}/spot",
                 *(("--stream-upstream", f"spot=ws://127.0.0.1:{xport}/spot")
                   if args.ws_bots else ()), port=port):
        stop = threading.Event()
        bots(port, args.bots, args.every, stop)
        sockets = ws_bots(port, args.ws_bots, args.ws_streams)
        time.sleep(3)  # every bot seen, the first errors in
        gzip, plain = Tab(port, True), Tab(port, False)
        time.sleep(2)
        g0, p0 = gzip.bytes, plain.bytes
        time.sleep(args.seconds)
        g1, p1 = gzip.bytes, plain.bytes
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/dashboard/state") as r:
            state = r.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/dashboard") as r:
            page = r.read()
        stop.set()
        for sock in sockets:
            sock.close()
    doc = json.loads(state)
    print(json.dumps({
        "bots": args.bots, "requests_per_second": round(args.bots / args.every, 1),
        "seconds": args.seconds,
        "tab_bytes_per_second_gzip": round((g1 - g0) / args.seconds),
        "tab_bytes_per_second_plain": round((p1 - p0) / args.seconds),
        "first_event_bytes_gzip": gzip.first_bytes, "first_event_bytes_plain": plain.first_bytes,
        "state_bytes": len(state), "page_bytes": len(page),
        "clients_shown": len(doc["clients"]),
        "ws_bots_shown": len((doc.get("websocket") or {}).get("bots") or ()),
        "ws_panel_bytes": len(json.dumps(doc.get("websocket"), separators=(",", ":")))},
        indent=1))


if __name__ == "__main__":
    main()
