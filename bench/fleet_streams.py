"""A Freqtrade-like fleet through the proxy with its streams middleware, in
virtual time against the fake exchange in-process: REST through treq's
``RequestTraversalAgent``, websocket streams through an in-memory bridge from
each of the proxy's stream connections to the fake's stream hub (no socket).
Upstream weight is metered at the proxy's upstream agent; "direct" is the
weight the same requests would cost sent straight to Binance.

    python bench/fleet_streams.py [--minutes 8] [--restart-at 5] [--bots 10] [--pairs 40]

The fleet: 10 bots, one whitelist of 40 spot pairs, 1m timeframe, each bot
running Freqtrade's loop (an iteration every 5 s, re-aligned to the candle +
1 s, with its own jitter). At start each bot loads exchangeInfo and 1000
candles of every pair; then on each new candle it refreshes every pair with
``startTime`` two candles back; every iteration it reads ``depth?limit=5``
for each open trade. Trades open and close on changing pairs: each bot holds
up to 5, each lasting 1 to 4 minutes, the next one opening on a pair drawn
from the whitelist. At ``--restart-at`` minutes the proxy restarts (a new
process: every stream, book, series and held answer gone) while the bots run on.

Reports whole-run upstream weight versus direct, the first minute after the
cold start and after the restart versus the direct fleet's first minute, and
the steady state (the minutes that are neither).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from urllib.parse import parse_qsl

import orjson
from fleet import EPOCH, Metered
from treq.testing import RequestTraversalAgent
from twisted.internet import task
from twisted.internet.defer import succeed

from bnproxy.binance.endpoints import load_endpoints
from bnproxy.chain.compose import as_deferred
from bnproxy.chain.messages import ProxyRequest
from bnproxy.config.model import ProxyConfig
from bnproxy.middleware.streams import manager as stream_manager
from bnproxy.service import ProxyService
from bnproxy.testing import FakeExchange


class _ServerSide:
    """What the fake's hub sees: a subscriber whose messages go to the
    proxy's connection, after the clock turns (as a socket would)."""

    combined = True
    route = None

    def __init__(self, hub, conn, clock) -> None:
        self.hub, self.conn, self.clock = hub, conn, clock
        self.streams: set[str] = set()
        self.opened_ms = hub.markets.now()
        self.closed = False

    def allowed(self, name: str) -> bool:
        return True

    def sendMessage(self, payload: bytes, isBinary: bool = False) -> None:
        if not self.closed:
            self.clock.callLater(0, self._deliver, payload)

    def _deliver(self, payload: bytes) -> None:
        if not self.closed:
            self.conn.received(payload)

    def dropConnection(self, abort: bool = False) -> None:
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.hub.unregister(self)


class _ClientSide:
    """What the proxy's connection sees as its websocket protocol."""

    def __init__(self, server: _ServerSide) -> None:
        self.server = server

    def sendMessage(self, payload: bytes, isBinary: bool = False) -> None:
        reply = self.server.hub.control(self.server, payload)
        self.server.sendMessage(orjson.dumps(reply))

    def sendClose(self, code: int = 1000) -> None:
        self.server.close()


def bridge_streams(exchange: FakeExchange, clock) -> None:
    """Make every proxy stream connection talk to the fake's hub in memory."""

    def start(conn) -> None:
        hub = exchange.hubs[conn.manager.market.name]
        server = _ServerSide(hub, conn, clock)
        hub.register(server)
        conn._bridge = server
        conn.opened(_ClientSide(server))

    def stop(conn):
        conn.retiring = True
        server = getattr(conn, "_bridge", None)
        if server is not None:
            server.close()
        conn.protocol = None
        return succeed(None)

    stream_manager.Connection.start = start
    stream_manager.Connection.stop = stop


def make_bots(rng: random.Random, n: int, now: float) -> list[dict]:
    return [{"jitter": rng.uniform(0, 0.8), "next": now + rng.uniform(0, 5), "candle": None,
             "trades": {}, "started": False} for _ in range(n)]


def step_bots(bots: list[dict], rng: random.Random, now: float, pairs: list[str], send,
              timeframe_s: int = 60) -> None:
    tf = {60: "1m", 300: "5m"}[timeframe_s]
    for bot in bots:
        if now < bot["next"] + bot["jitter"]:
            continue
        wake = bot["next"]
        if not bot["started"]:  # Freqtrade's start: markets, then the startup candles
            bot["started"] = True
            send("/api/v3/exchangeInfo", "")
            for pair in pairs:
                send("/api/v3/klines", f"symbol={pair}&interval={tf}&limit=1000")
        candle = int(now // timeframe_s)
        if bot["candle"] != candle:
            if bot["candle"] is not None:
                since = (candle - 2) * timeframe_s * 1000
                for pair in pairs:
                    send("/api/v3/klines", f"symbol={pair}&interval={tf}&startTime={since}")
            bot["candle"] = candle
        trades = bot["trades"]
        for pair, until in list(trades.items()):
            if now >= until:  # the trade closes (its exit read the book below)
                del trades[pair]
        while len(trades) < 5:  # a new trade opens on some pair of the whitelist
            pair = rng.choice([p for p in pairs if p not in trades])
            trades[pair] = now + rng.uniform(60, 240)
        for pair in trades:
            send("/api/v3/depth", f"symbol={pair}&limit=5")
        to_boundary = (candle + 1) * timeframe_s - wake
        sleep = 5.0
        if to_boundary < sleep < to_boundary + 1:
            sleep = to_boundary + 1
        bot["next"] = wake + min(sleep, to_boundary + 1)


def run(minutes: float, restart_at: float | None, n_bots: int, n_pairs: int,
        chain: list[str], state_dir: str) -> dict:
    clock = task.Clock()
    clock.advance(EPOCH)
    exchange = FakeExchange(clock, start_ms=EPOCH * 1000, weight_limits={"spot": 10 ** 9},
                            trade_rate=0.2).start()
    bridge_streams(exchange, clock)
    endpoints = load_endpoints()
    agent = RequestTraversalAgent(exchange.resource())
    metered = Metered(agent, endpoints)

    def start_proxy() -> ProxyService:
        service = ProxyService(clock, ProxyConfig(
            listen=(), upstreams={"spot": "http://fake/spot"},
            stream_upstreams={"spot": "ws://fake/spot"},
            middleware=tuple((m, {}) for m in chain), state_dir=state_dir), agent=metered)
        service.startService()
        return service

    service = start_proxy()
    rng = random.Random(7)
    pairs = list(exchange.symbols["spot"])[:n_pairs]
    bots = make_bots(rng, n_bots, clock.seconds())
    n_minutes = int(minutes + 0.999)
    direct = [0] * n_minutes
    upstream = [0] * n_minutes
    sources: dict[str, int] = {}
    t0 = clock.seconds()

    def send(path: str, query: str) -> None:
        ep = endpoints.lookup("spot", "GET", path)
        minute = min(n_minutes - 1, int((clock.seconds() - t0) // 60))
        direct[minute] += ep.weight(dict(parse_qsl(query)))
        request = ProxyRequest("GET", "spot", path, query.encode(), (), b"", "127.0.0.1",
                               clock.seconds(), ep)

        def seen(r):
            sources[r.source] = sources.get(r.source, 0) + 1
        as_deferred(service.handler(request)).addCallback(seen)

    step = 0.05
    restarted = False
    own_before_restart = None
    counted = 0
    for i in range(int(minutes * 60 / step)):
        now = clock.seconds()
        if restart_at is not None and not restarted and now - t0 >= restart_at * 60:
            restarted = True
            own_before_restart = service.middlewares[chain.index("streams")].health()
            service.stopService()
            agent.flush()
            service = start_proxy()  # a new process: nothing held
        minute = min(n_minutes - 1, int((now - t0) // 60))
        step_bots(bots, rng, now, pairs, send)
        if i % 4 == 0:
            agent.flush()
        upstream[minute] += metered.weight - counted
        counted = metered.weight
        clock.advance(step)
    streams = service.middlewares[chain.index("streams")]
    service.stopService()
    for _ in range(20):
        agent.flush()
        clock.advance(0.1)
    restart_minute = int(restart_at) if restart_at is not None else None
    transient = {0, 1} | ({restart_minute} if restart_minute is not None else set())
    steady = [m for m in range(n_minutes) if m not in transient]
    steady_direct = sum(direct[m] for m in steady)
    steady_up = sum(upstream[m] for m in steady)
    out = {
        "bots": n_bots, "pairs": n_pairs, "minutes": minutes, "restart_at": restart_at,
        "chain": ",".join(chain),
        "direct_weight_by_minute": direct, "upstream_weight_by_minute": upstream,
        "whole_run_upstream_vs_direct": round(sum(upstream) / sum(direct), 4),
        "first_minute_vs_direct_first_minute": round(upstream[0] / direct[0], 4),
        "steady_minutes": steady,
        "steady_saving": round(1 - steady_up / steady_direct, 4) if steady_direct else None,
        "upstream_requests": metered.requests, "answers_by_source": sources,
        "own_weight_after_restart": streams.health()["own_weight"],
        "own_only_weight": sum(_own_only(h) for h in (
            streams.health()["own_weight"], (own_before_restart or {}).get("own_weight"))),
        "own_weight_before_restart": (own_before_restart or {}).get("own_weight"),
    }
    if restart_minute is not None:
        out["minute_after_restart_vs_direct_first_minute"] = round(
            upstream[restart_minute] / direct[0], 4)
    return out


def _own_only(own: dict | None) -> int:
    """The weight of own requests that answered no waiting bot request."""
    if not own:
        return 0
    total = sum(w for p in own.get("by_purpose", {}).values() for w in p.values())
    return total - sum(w for p in own.get("answering_bots", {}).values() for w in p.values())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=8)
    parser.add_argument("--restart-at", type=float, default=5)
    parser.add_argument("--bots", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--chain", default="logger,allowlist,streams,cache,ratelimit")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bnproxy-bench-") as state_dir:
        result = run(args.minutes, args.restart_at if args.restart_at > 0 else None,
                     args.bots, args.pairs, args.chain.split(","), state_dir)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
