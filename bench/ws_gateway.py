"""The bots' websocket gateway: CPU per frame delivered, added latency and
memory per idle bot, with real processes on loopback.

    python bench/ws_gateway.py [--bots 100] [--streams 40] [--probes 5] [--seconds 8]
                               [--idle 1000] [--rounds 1] [--compare DIR] [--workers 1]
                               [--floor]

Processes: the fake exchange (``twistd bnproxy-exchange``), the proxy
(``twistd bnproxy``, default chain; a fresh one per round), and bots on
plain sockets in client processes of their own (``wsraw.py``: no websocket
library, so they cost the VM little and their reading does not skew the
timing). ``--compare DIR`` runs the proxy alternately from ``DIR`` (another
checkout, e.g. ``git archive`` of the base commit) and from this worktree,
``--rounds`` times each, against the same fake: before and after under the
same load of the shared machine. ``--workers N`` runs the proxy with N
workers (and a ``redis-server`` for their shared state); note that bots
connecting one after another may all land on one worker (the kernel hands
each connection to whichever process accepts first).

- Latency, upstream frame → bot frame: the proxy's spot stream connections
  go through a timing relay (``wsraw.py relay``, a plain TCP relay in front
  of the fake) that notes, for every data frame, the time just before it
  sends it on to the proxy; ``--probes`` of the bots have kernel receive
  timestamps (``SO_TIMESTAMPNS``); a frame's latency is a probe's kernel
  receive time minus the relay's send time (the same clock). Neither the
  fake's own scheduling (it writes each frame to several connections, and
  may be preempted between them) nor the probe's reading counts. Alone
  (only the probes, ``--probes`` bots), and during the fan-out: then the
  probes are ``--probes`` of the ``--bots`` bots, spread evenly over their
  connection order, all bots subscribing the same ``--streams`` with the
  same framing (raw, ``/ws`` and ``SUBSCRIBE``), so the probes share the
  load bots' cohort and the gateway writes them somewhere in the middle of
  each burst, as a typical bot, not at one end. p50/p99 over every frame
  the probes received.
- Fan-out: ``--bots`` bots each subscribe the ``--streams`` spot streams
  (trades, aggregated trades, book tickers, 100 ms diff depth and 1m klines
  of 8 pairs); over ``--seconds`` the proxy's CPU time (user + system from
  /proc) is divided by the frames it delivered
  (``bnproxy_ws_frames_delivered``).
- Memory: first, on the fresh proxy (after 20 connections opened and
  closed), ``--idle`` bots connect with no stream; the proxy's RSS growth per
  connection.
- ``--floor``: also the same latency measurement with the proxy replaced
  by a minimal fan-out forwarder on plain sockets (``wsraw.py forward``: one
  upstream connection, one ``send`` per bot per upstream read, nothing
  else), what one Python process on this machine needs at least; its rounds
  (``floor``; latency only) alternate with the proxy's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from common import TWISTD, free_port, percentile, process

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from redis_server import RedisServer  # tests/: the tests' redis-server runner

from bnproxy.testing.processes import stop, wait_listening

SYMBOLS = ["btcusdt", "ethusdt", "bnbusdt", "solusdt", "xrpusdt", "adausdt", "dogeusdt",
           "trxusdt"]
KINDS = ["trade", "aggTrade", "bookTicker", "depth@100ms", "kline_1m"]
WHITELIST = [f"{s}@{k}" for s in SYMBOLS for k in KINDS]
HERE = os.path.dirname(os.path.abspath(__file__))
WSRAW = os.path.join(HERE, "wsraw.py")


def tree(pid: int) -> list[int]:
    """``pid`` and its children (``--workers``: the parent's spawned workers)."""
    out = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the proxy: every process of it."""
    total = 0
    for p in tree(pid):
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    total = 0
    for p in tree(pid):
        with open(f"/proc/{p}/status") as f:
            total += int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
    return total


def metric(pport: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{pport}/metrics", timeout=10).read()
    total = 0.0
    for line in text.decode().splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wsraw(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, WSRAW, *map(str, args)], stdout=subprocess.PIPE,
                            text=True)


def summary_ms(delays: list[float]) -> dict:
    if not delays:
        return {"n": 0}
    return {"n": len(delays), "p50_ms": round(percentile(delays, 50) * 1000, 3),
            "p99_ms": round(percentile(delays, 99) * 1000, 3)}


@contextlib.contextmanager
def proxy(xport: int, args, pythonpath: str, floor: bool = False):
    """A proxy whose spot streams come through a timing relay (wsraw.py
    relay) in front of the fake; yields (port, process, relay's times)."""
    pport, rport = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": pythonpath}
    with tempfile.TemporaryDirectory() as tmp:
        times = os.path.join(tmp, "sent.json")
        relay = wsraw("relay", rport, xport, times)
        relay.stdout.readline()
        streams = {"spot": f"ws://127.0.0.1:{rport}/spot", "usdm": f"ws://127.0.0.1:{xport}/usdm",
                   "coinm": f"ws://127.0.0.1:{xport}/coinm"}
        cmd = [TWISTD, "-n", "--pidfile=", "--logfile", os.path.join(tmp, "p.log"),
               "bnproxy", "--port", f"tcp:{pport}:interface=127.0.0.1",
               "--state-dir", tmp, "--access-log", "none",
               "--max-connections-per-client", str(args.idle + args.bots + 10),
               *[a for m in ("spot", "usdm", "coinm") for a in (
                   "--upstream", f"{m}=http://127.0.0.1:{xport}/{m}",
                   "--stream-upstream", f"{m}={streams[m]}")]]
        sent: dict[str, float] = {}
        if floor:  # no proxy: the minimal forwarder in its place (wsraw.py forward)
            forwarder = wsraw("forward", pport, rport, json.dumps(WHITELIST[:args.streams]))
            try:
                forwarder.stdout.readline()
                yield pport, forwarder, sent
            finally:
                forwarder.terminate()
                forwarder.wait(10)
                relay.terminate()
                relay.wait(10)
                with open(times) as f:
                    sent.update(json.load(f))
            return
        redis = None
        if args.workers > 1:  # the workers need a shared state
            redis = RedisServer(os.path.join(tmp, "redis"))
            redis.start()
            cmd += ["--workers", str(args.workers), "--shared-state", redis.url]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=env, cwd=tmp)
        try:
            wait_listening(pport, proc)
            yield pport, proc, sent
        finally:
            stop(proc)
            if redis is not None:
                redis.stop()
            relay.terminate()
            relay.wait(10)
            with open(times) as f:
                sent.update(json.load(f))


def bots(pport: int, args, n: int) -> subprocess.Popen:
    """``n`` bots on the ``--streams`` streams, ``--probes`` of them timed
    (``wsraw.py bots``); its first line once they are open."""
    p = wsraw("bots", pport, args.seconds, n, json.dumps(WHITELIST[:args.streams]), args.probes)
    p.stdout.readline()
    return p


def seen(p: subprocess.Popen) -> dict:
    """What ``bots``' probes received, once its window is over: (digest,
    kernel time, user time) per frame."""
    return json.loads(p.stdout.readline())


def latency(seen: list, sent: dict[str, float]) -> dict:
    kernel = [k - sent[d] for d, k, _ in seen if d in sent]
    user = [u - sent[d] for d, _, u in seen if d in sent]
    return {**summary_ms(kernel), "unmatched": len(seen) - len(kernel),
            "user_clock": summary_ms(user)}


def one_round(xport: int, args, pythonpath: str, floor: bool = False) -> dict:
    out: dict = {}
    with proxy(xport, args, pythonpath, floor) as (pport, proc, sent):
        if floor:  # latency only: the forwarder has no metrics, no limits
            time.sleep(1.0)
            alone_bots = bots(pport, args, args.probes)
            alone = seen(alone_bots)["seen"]
            alone_bots.wait()
            load = bots(pport, args, args.bots)
            loaded = seen(load)["seen"]
            load.wait()
        else:
            one_proxy_round(pport, proc, args, out)
            alone, loaded = out.pop("alone"), out.pop("loaded")
    # (after the relay stopped: its times are read as it exits)
    out["latency_alone"] = latency(alone, sent)
    out["latency_under_load"] = latency(loaded, sent)
    return out


def one_proxy_round(pport: int, proc: subprocess.Popen, args, out: dict) -> None:
    """Memory, the probes alone, the fan-out's CPU and the probes during it,
    into ``out`` (the probes' frames as ``alone`` and ``loaded``)."""
    # memory first, on a proxy that has not yet freed what a load used
    # (RSS growth is otherwise what the freed memory could not hold)
    warm = wsraw("idle", pport, 1, 20)
    warm.communicate(timeout=60)
    time.sleep(1.0)
    rss0 = rss_kib(proc.pid)
    idle = wsraw("idle", pport, 30, args.idle)
    line = json.loads(idle.stdout.readline())  # once every idle bot is open
    time.sleep(0.5)
    rss1 = rss_kib(proc.pid)
    idle.kill()
    idle.wait()
    out["idle"] = {"connections": line["opened"], "failed": line["failed"],
                   "kib_per_connection": round((rss1 - rss0) / max(1, line["opened"]), 1)}
    time.sleep(1.0)
    alone_bots = bots(pport, args, args.probes)
    alone = seen(alone_bots)["seen"]
    alone_bots.wait()
    load = bots(pport, args, args.bots)
    time.sleep(2.0)  # every bot subscribed (the probes start noting now too)
    cpu0, frames0 = cpu_seconds(proc.pid), metric(pport, "bnproxy_ws_frames_delivered")
    relayed0 = metric(pport, "bnproxy_ws_relayed_frames")
    loaded = seen(load)["seen"]
    cpu1, frames1 = cpu_seconds(proc.pid), metric(pport, "bnproxy_ws_frames_delivered")
    relayed1 = metric(pport, "bnproxy_ws_relayed_frames")
    load.wait()
    frames, cpu = frames1 - frames0, cpu1 - cpu0
    if args.workers > 1:  # /metrics is one worker's: frames are counted by hand
        frames = relayed1 = relayed0 = 0
    out["fanout"] = {
        "bots": args.bots, "frames_delivered": int(frames),
        "upstream_frames": int(relayed1 - relayed0), "proxy_cpu_s": round(cpu, 2),
        "cpu_us_per_frame": round(cpu / frames * 1e6, 2) if frames else None,
        "slow_client_closes": metric(pport, "bnproxy_ws_slow_client_closes")}
    out["alone"], out["loaded"] = alone, loaded


def spread(rounds: list[dict], *path: str) -> str:
    values = []
    for r in rounds:
        v = r
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if v is not None:
            values.append(v)
    if not values:
        return "-"
    middle = statistics.median(values)
    middle = round(middle, 3) if isinstance(middle, float) else middle
    return f"{middle} ({min(values)}–{max(values)})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bots", type=int, default=100)
    parser.add_argument("--streams", type=int, default=40)
    parser.add_argument("--probes", type=int, default=5,
                        help="timed bots (part of --bots during the fan-out, spread over "
                             "their connection order)")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1,
                        help="the proxy's --workers (with a redis-server for --shared-state); "
                             "CPU and memory are then the sum over its processes, and CPU per "
                             "frame is not given (/metrics answers for one worker)")
    parser.add_argument("--floor", action="store_true",
                        help="also the latency through a minimal fan-out forwarder "
                             "(wsraw.py forward) in the proxy's place, rounds alternating: "
                             "the floor on this machine")
    parser.add_argument("--compare", metavar="DIR",
                        help="also run the proxy from DIR, alternating with this worktree")
    args = parser.parse_args()
    here = os.environ.get("PYTHONPATH", os.path.dirname(HERE))
    variants = {"after": here}
    if args.compare:
        variants = {"before": os.path.abspath(args.compare), "after": here}
    if args.floor:  # the floor's rounds alternate with the proxy's
        variants = {"floor": "", **variants}
    results: dict[str, list[dict]] = {v: [] for v in variants}
    xport = free_port()
    with process(TWISTD, "-n", "--pidfile=", "bnproxy-exchange", "--port",
                 f"tcp:{xport}:interface=127.0.0.1", port=xport):
        for i in range(args.rounds):
            for name, path in variants.items():
                r = one_round(xport, args, path, floor=name == "floor")
                r["load_average"] = os.getloadavg()[0]
                results[name].append(r)
                print(f"round {i + 1} {name}: {json.dumps(r)}", file=sys.stderr, flush=True)
    table = {}
    for name, rounds in results.items():
        table[name] = {
            "cpu_us_per_frame": spread(rounds, "fanout", "cpu_us_per_frame"),
            "frames_delivered": spread(rounds, "fanout", "frames_delivered"),
            "alone_p50_ms": spread(rounds, "latency_alone", "p50_ms"),
            "alone_p99_ms": spread(rounds, "latency_alone", "p99_ms"),
            "alone_user_clock_p50_ms": spread(rounds, "latency_alone", "user_clock", "p50_ms"),
            "load_p50_ms": spread(rounds, "latency_under_load", "p50_ms"),
            "load_p99_ms": spread(rounds, "latency_under_load", "p99_ms"),
            "load_user_clock_p50_ms": spread(rounds, "latency_under_load", "user_clock",
                                             "p50_ms"),
            "load_user_clock_p99_ms": spread(rounds, "latency_under_load", "user_clock",
                                             "p99_ms"),
            "kib_per_idle_bot": spread(rounds, "idle", "kib_per_connection"),
            "load_average": spread(rounds, "load_average")}
    print(json.dumps({"args": vars(args), "median (min–max)": table, "rounds": results},
                     indent=1))


if __name__ == "__main__":
    main()
