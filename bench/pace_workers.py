"""The upstream new-connection pace with --workers 2 and --shared-state on a
loopback Redis, in front of one fake exchange process: 150 bots open
USD-M user-data streams (/usdm/ws/<listenKey>, one upstream connection each)
at once; a bot the pace turns away (429: user-data connections take at
most 40 of a minute's 50) tries again 5 s later. The fake's count of websocket connections is read
every second.

    python bench/pace_workers.py [SECONDS] [BOTS]

Prints the new upstream connections in each clock minute (the pace's
window): user-data connections get at most 40 a minute for the whole fleet
(the pace's 50, so 300 in any 5 minutes, less 10 kept for market data), not
40 per worker."""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from redis_server import RedisServer

from bnproxy.middleware.streams.pace import USER_DATA_LIMIT
from bnproxy.testing.processes import TWISTD, free_port, stop, wait_listening
from bnproxy.testing.rawws import upgrade

SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 130
BOTS = int(sys.argv[2]) if len(sys.argv) > 2 else 150


def upstream_total(xport: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{xport}/_fake/", timeout=10) as r:
        return json.loads(r.read())["ws"]["connections_total"]


def bot(port: int, n: int, until: float, held: list, turned_away: list) -> None:
    """Open the user-data stream; turned away (a refusal, or a close frame
    after the handshake), again 5 s later."""
    key = hashlib.sha256(f"bot{n}".encode()).hexdigest()
    while time.time() < until:
        s, head, rest = upgrade(port, f"/usdm/ws/{key}")
        s.settimeout(1.0)
        try:
            rest += s.recv(4096)
        except OSError:
            pass
        if head.startswith(b"HTTP/1.1 101") and not rest.startswith(b"\x88"):
            held.append(s)  # relayed: kept open
            return
        turned_away.append(time.time())
        s.close()
        time.sleep(5)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(os.path.join(tmp, "redis"))
        server.start()
        xport, port = free_port(), free_port()
        exchange = proxy = None
        try:
            exchange = subprocess.Popen(
                [TWISTD, "-n", "--pidfile=", "bnproxy-exchange", "--port",
                 f"tcp:{xport}:interface=127.0.0.1"], cwd=tmp,
                stdout=open(os.devnull, "w"), stderr=open(os.devnull, "w"))
            wait_listening(xport, exchange)
            os.makedirs(os.path.join(tmp, "state"))
            proxy = subprocess.Popen(
                [TWISTD, "-n", "--pidfile=", "bnproxy", "--port",
                 f"tcp:{port}:interface=127.0.0.1",
                 "--upstream", f"usdm=http://127.0.0.1:{xport}/usdm",
                 "--stream-upstream", f"usdm=ws://127.0.0.1:{xport}/usdm",
                 "--shared-state", server.url, "--workers", "2",
                 "--state-dir", os.path.join(tmp, "state"), "--access-log", "none"],
                cwd=tmp, stdout=open(os.devnull, "w"), stderr=open(os.devnull, "w"))
            wait_listening(port, proxy)
            time.sleep(3)
            base = upstream_total(xport)
            start = time.time()
            held: list = []
            away: list = []
            threads = [threading.Thread(target=bot, args=(port, n, start + SECONDS, held, away),
                                        daemon=True) for n in range(BOTS)]
            for t in threads:
                t.start()
            samples = []  # (wall-clock time, new upstream connections so far)
            while time.time() < start + SECONDS:
                samples.append((time.time(), upstream_total(xport) - base))
                time.sleep(0.25)
            for s in held:
                s.close()
        finally:
            for p in (proxy, exchange):
                if p is not None:
                    stop(p, 40)
            server.stop()
    print(f"{BOTS} bots, {SECONDS} s, --workers 2 --shared-state: {len(held)} relayed, "
          f"{len(away)} turn-aways (refused with 429, retried)")
    # new connections in each one-minute window of the clock (what the pace counts),
    # attributed to the window of the sample that saw them (sampled every 0.25 s)
    windows: dict[int, int] = {}
    last = 0
    for t, n in samples:
        windows[int(t // 60)] = windows.get(int(t // 60), 0) + n - last
        last = n
    print("upstream connections per clock minute (first and last partial): "
          f"{list(windows.values())}; total {last}; user-data allowed {USER_DATA_LIMIT} a minute for the fleet")


if __name__ == "__main__":
    main()
