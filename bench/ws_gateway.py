"""The bots' websocket gateway: CPU per frame delivered, added latency and
memory per idle bot, with real processes on loopback.

    python bench/ws_gateway.py [--bots 100] [--streams 40] [--seconds 10] [--idle 1000]

Processes: the fake exchange (``twistd bnproxy-exchange``), the proxy
(``twistd bnproxy``, default chain) and a client process.

- Fan-out: ``--bots`` bots each subscribe ``--streams`` spot streams through
  the proxy (each bot a rotation of the same 40-stream whitelist: trades,
  aggregated trades, book tickers, 100 ms diff depth and 1m klines of 8
  pairs); over ``--seconds`` the proxy's CPU time (user + system from /proc)
  is divided by the frames it delivered (``bnproxy_ws_frames_delivered``).
- Latency: one bot straight at the fake and one through the proxy on the same
  streams; for every frame both received (the same bytes), the proxy's bot's
  arrival minus the direct bot's: the added latency, p50 and p99. Measured
  while the fan-out load runs and alone.
- Memory: ``--idle`` bots connect with no stream; the proxy's RSS growth per
  connection.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

from common import TWISTD, free_port, percentile, process

SYMBOLS = ["btcusdt", "ethusdt", "bnbusdt", "solusdt", "xrpusdt", "adausdt", "dogeusdt",
           "trxusdt"]
KINDS = ["trade", "aggTrade", "bookTicker", "depth@100ms", "kline_1m"]
WHITELIST = [f"{s}@{k}" for s in SYMBOLS for k in KINDS]

CLIENT = r'''
import sys, time, json, orjson
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
pport, xport, bots, streams, seconds, idle = (int(float(a)) for a in sys.argv[1:7])
names = json.loads(sys.argv[7])
mode = sys.argv[8]
received = [0]
arrivals = {"direct": {}, "proxy": {}}
opened = [0]
failed = [0]
class Bot(WebSocketClientProtocol):
    def onClose(self, wasClean, code, reason):
        failed[0] += 1
    def onOpen(self):
        opened[0] += 1
        if self.factory.names:
            self.sendMessage(orjson.dumps({"method": "SUBSCRIBE",
                                           "params": self.factory.names, "id": 1}))
    def onMessage(self, payload, isBinary):
        received[0] += 1
        who = self.factory.who
        if who is not None:
            arrivals[who].setdefault(payload, time.perf_counter())
def bot(port, path, names, who=None):
    f = WebSocketClientFactory(f"ws://127.0.0.1:{port}{path}")
    f.protocol = Bot
    f.names = names
    f.who = who
    f.setProtocolOptions(autoPingInterval=None)
    reactor.connectTCP("127.0.0.1", port, f)
if mode == "idle":
    for i in range(idle):
        bot(pport, "/ws", [])
    deadline = time.monotonic() + 60
    def check():
        if opened[0] + failed[0] >= idle or time.monotonic() > deadline:
            print(json.dumps({"opened": opened[0], "failed": failed[0]})); sys.stdout.flush()
            reactor.callLater(seconds, reactor.stop)
        else:
            reactor.callLater(0.2, check)
    check()
else:
    if mode == "load":
        for i in range(bots):
            mine = [names[(i + j) % len(names)] for j in range(streams)]
            reactor.callLater(i * 0.02, bot, pport, "/ws", mine)
    else:
        probe = names[:streams]
        reactor.callLater(3.0, bot, xport, "/spot/stream", probe, "direct")
        reactor.callLater(3.0, bot, pport, "/stream", probe, "proxy")
    def done():
        delays = [arrivals["proxy"][p] - t for p, t in arrivals["direct"].items()
                  if p in arrivals["proxy"] and not p.startswith(b'{"result"')]
        print(json.dumps({"received": received[0], "delays": delays,
                          "opened": opened[0]}))
        reactor.stop()
    reactor.callLater(5.0 + seconds, done)
reactor.run()
'''


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def metric(pport: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{pport}/metrics", timeout=10).read()
    total = 0.0
    for line in text.decode().splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def client(pport: int, xport: int, args, mode: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CLIENT, str(pport), str(xport), str(args.bots), str(args.streams),
         str(args.seconds), str(args.idle), json.dumps(WHITELIST), mode],
        stdout=subprocess.PIPE, text=True)


def summary_ms(delays: list[float]) -> dict:
    if not delays:
        return {"n": 0}
    return {"n": len(delays), "p50_ms": round(percentile(delays, 50) * 1000, 3),
            "p99_ms": round(percentile(delays, 99) * 1000, 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bots", type=int, default=100)
    parser.add_argument("--streams", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--idle", type=int, default=1000)
    args = parser.parse_args()
    xport, pport = free_port(), free_port()
    out: dict = {"bots": args.bots, "streams": args.streams, "seconds": args.seconds}
    with (tempfile.TemporaryDirectory() as tmp,
          process(TWISTD, "-n", "--pidfile=", "bnproxy-exchange", "--port",
                  f"tcp:{xport}:interface=127.0.0.1", port=xport),
          process(TWISTD, "-n", "--pidfile=", "--logfile", os.path.join(tmp, "p.log"),
                  "bnproxy", "--port", f"tcp:{pport}:interface=127.0.0.1",
                  "--state-dir", tmp, "--access-log", "none",
                  "--max-connections-per-client", str(args.idle + args.bots + 10),
                  *[a for m in ("spot", "usdm", "coinm") for a in (
                      "--upstream", f"{m}=http://127.0.0.1:{xport}/{m}",
                      "--stream-upstream", f"{m}=ws://127.0.0.1:{xport}/{m}")],
                  port=pport) as proxy):
        # alone: the added latency with nothing else going on
        alone = client(pport, xport, args, "probe")
        result = json.loads(alone.communicate(timeout=args.seconds + 60)[0])
        out["latency_alone"] = summary_ms(result["delays"])
        # fan-out under load
        print("latency alone done", file=sys.stderr)
        load = client(pport, xport, args, "load")
        time.sleep(4.0)  # every bot connected and subscribed
        cpu0, frames0 = cpu_seconds(proxy.pid), metric(pport, "bnproxy_ws_frames_delivered")
        relayed0 = metric(pport, "bnproxy_ws_relayed_frames")
        probe = client(pport, xport, args, "probe")  # its own process: not slowed
        # by the load client's reading
        time.sleep(args.seconds)
        cpu1, frames1 = cpu_seconds(proxy.pid), metric(pport, "bnproxy_ws_frames_delivered")
        relayed1 = metric(pport, "bnproxy_ws_relayed_frames")
        result = json.loads(load.communicate(timeout=args.seconds + 60)[0])
        probed = json.loads(probe.communicate(timeout=args.seconds + 60)[0])
        frames, cpu = frames1 - frames0, cpu1 - cpu0
        out["fanout"] = {
            "frames_delivered": int(frames), "upstream_frames": int(relayed1 - relayed0),
            "proxy_cpu_s": round(cpu, 2),
            "cpu_us_per_frame": round(cpu / frames * 1e6, 2) if frames else None,
            "frames_per_cpu_second": round(frames / cpu) if cpu else None}
        out["latency_under_load"] = summary_ms(probed["delays"])
        out["fanout"]["bots_open"] = result["opened"]
        out["fanout"]["slow_client_closes"] = metric(pport, "bnproxy_ws_slow_client_closes")
        print("fan-out done", file=sys.stderr)
        time.sleep(2.0)
        # memory per idle bot
        rss0 = rss_kib(proxy.pid)
        idle = client(pport, xport, args, "idle")
        line = idle.stdout.readline()  # once every idle bot is open
        rss1 = rss_kib(proxy.pid)
        idle.kill()
        idle.wait()
        opened = json.loads(line)["opened"]
        out["idle"] = {"connections": opened, "closed": json.loads(line)["failed"],
                       "kib_per_connection": round((rss1 - rss0) / opened, 1)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
