"""How fast a ban one instance hears stops the others, under load: three
``twistd bnproxy --shared-state`` processes (the ratelimit middleware only,
so every request is forwarded) on one loopback Redis, in front of one
``twistd bnproxy-exchange``; each instance asked ``--rate`` GETs a second
(one keep-alive connection each). Every ``--every`` seconds the fake bans
127.0.0.1 for ``--ban`` seconds; the first 418 from the fake reaches one
instance, which spreads the ban through Redis.

For each ban: the requests that still left another instance after the first
instance had the 418 in hand (each got the fake's 418, not the proxy's
local one; most were already on their way), those of them the bots asked
only after that moment, and the time from that 418 to the last of them.

    python bench/ban_propagation.py [--rate 200] [--bans 20]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time

from common import TWISTD, free_port, percentile, process

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from redis_server import RedisServer

PATH = "/api/v3/time"
LOCAL = b"was not sent"  # the proxy's own 418 says so


def load(port: int, rate: float, stop: threading.Event, out: list) -> None:
    """GETs at ``rate`` a second on one connection: (sent, answered, status, local)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    gap, due = 1.0 / rate, time.monotonic()
    while not stop.is_set():
        due += gap
        sent = time.monotonic()
        conn.request("GET", PATH)
        r = conn.getresponse()
        body = r.read()
        out.append((sent, time.monotonic(), r.status, LOCAL in body))
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            due = time.monotonic()  # behind: no burst to catch up
    conn.close()


def ban(xport: int, seconds: float) -> float:
    """Ban at the fake; the time just before it was asked."""
    start = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", xport, timeout=10)
    conn.request("POST", "/_fake/ban", json.dumps({"ip": "127.0.0.1", "seconds": seconds,
                                                   "market": "spot"}))
    conn.getresponse().read()
    conn.close()
    return start


def analyse(records: list[list], bans: list[float], every: float) -> list[dict]:
    """Per ban: the first upstream 418 (its instance and time), then the
    upstream 418s of the other instances after it."""
    out = []
    for start in bans:
        upstream = sorted((done, i) for i, rows in enumerate(records)
                          for sent, done, status, local in rows
                          if status == 418 and not local and start <= sent < start + every
                          - 0.5)
        if not upstream:
            continue
        first, who = upstream[0]
        others = [(sent, done) for i, rows in enumerate(records) if i != who
                  for sent, done, status, local in rows
                  if status == 418 and not local and done > first
                  and start <= sent < start + every - 0.5]
        after = [s for s, _ in others if s > first]  # asked after the 418 was in hand
        out.append({"leaked": len(others), "after": len(after),
                    "window_ms": (max(d for _, d in others) - first) * 1000 if others else 0.0})
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=200.0, help="GETs a second per instance")
    parser.add_argument("--bans", type=int, default=20)
    parser.add_argument("--every", type=float, default=3.0)
    parser.add_argument("--ban", type=float, default=1.0)
    args = parser.parse_args()
    xport, ports = free_port(), [free_port() for _ in range(3)]
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(os.path.join(tmp, "redis"))
        redis.start()
        try:
            with process(TWISTD, "-n", "--pidfile=", "bnproxy-exchange", "--port",
                         f"tcp:{xport}:interface=127.0.0.1", "--spot-weight-limit",
                         "1000000000", port=xport):
                procs = []
                for n, port in enumerate(ports):
                    state = os.path.join(tmp, f"state{n}")
                    os.makedirs(state)
                    procs.append(process(
                        TWISTD, "-n", "--pidfile=", "bnproxy", "--port",
                        f"tcp:{port}:interface=127.0.0.1", "--upstream",
                        f"spot=http://127.0.0.1:{xport}/spot", "--middleware",
                        "ratelimit:limit.spot=100000000", "--access-log", "none",
                        "--state-dir", state, "--shared-state", redis.url, port=port))
                for p in procs:
                    p.__enter__()
                try:
                    time.sleep(3)  # heartbeats: every instance ok
                    records: list[list] = [[] for _ in ports]
                    stop = threading.Event()
                    threads = [threading.Thread(target=load, args=(p, args.rate, stop, r))
                               for p, r in zip(ports, records)]
                    for t in threads:
                        t.start()
                    time.sleep(1)
                    bans = []
                    for _ in range(args.bans):
                        bans.append(ban(xport, args.ban))
                        time.sleep(args.every)
                    stop.set()
                    for t in threads:
                        t.join()
                finally:
                    for p in procs:
                        p.__exit__(None, None, None)
        finally:
            redis.stop()
    seconds = max(r[-1][1] for r in records) - min(r[0][0] for r in records)
    rates = [len(r) / seconds for r in records]
    trials = analyse(records, bans, args.every)
    windows = [t["window_ms"] for t in trials]
    leaked = [t["leaked"] for t in trials]
    after = sum(t["after"] for t in trials)
    print(f"load: {', '.join(f'{r:.0f}' for r in rates)} GETs/s per instance "
          f"(asked {args.rate:.0f}); {len(trials)} bans heard")
    print(f"requests that left another instance after the first 418: total {sum(leaked)}, "
          f"per ban max {max(leaked, default=0)}; bans with none: "
          f"{leaked.count(0)}/{len(leaked)}; of them asked after that 418 had arrived: {after}")
    print(f"window to the last of them: p50 {percentile(windows, 50):.1f} ms, "
          f"p99 {percentile(windows, 99):.1f} ms, max {max(windows, default=0):.1f} ms")


if __name__ == "__main__":
    main()
