"""A Freqtrade-like fleet against the fake exchange, in virtual time: upstream
request weight per minute sent straight to the exchange versus through the
proxy.

10 bots share a whitelist of 40 spot pairs on the 5m timeframe and run the
loop Freqtrade's worker runs: an iteration every 5 s (`process_throttle_secs`),
re-aligned to each new candle plus 1 s (`Worker._throttle`), each bot with its
own processing jitter (up to 0.8 s). On the first iteration of a candle a bot
refreshes klines for all 40 pairs (Freqtrade's `since` refresh: the last two
candles); every iteration it fetches `depth?limit=5` for each of its 5 open
trades; hourly it fetches `exchangeInfo`. Open trades come from one of two
models: `same-strategy` (the bots run one strategy, so their trades fall on the
same 10 signal pairs) or `independent` (trades uniform over the 40 pairs).

    python fleet.py [--minutes 60] [--chain cache] [--trades same-strategy]
"""

from __future__ import annotations

import argparse
import json
import random
from urllib.parse import parse_qsl

from treq.testing import RequestTraversalAgent
from twisted.internet import task
from twisted.web.iweb import IAgent
from zope.interface import implementer

from bnproxy.binance.endpoints import load_endpoints
from bnproxy.chain.messages import ProxyRequest
from bnproxy.config.model import ProxyConfig
from bnproxy.service import ProxyService
from bnproxy.testing import FakeExchange

EPOCH = 1_767_225_600


@implementer(IAgent)
class Metered:
    """Counts the weight of what reaches the exchange."""

    def __init__(self, inner, endpoints) -> None:
        self.inner = inner
        self.endpoints = endpoints
        self.weight = 0
        self.requests = 0

    def request(self, method, uri, headers=None, bodyProducer=None):
        path, _, query = uri.split(b"/spot", 1)[1].partition(b"?")
        ep = self.endpoints.lookup("spot", method.decode(), path.decode())
        params = dict(parse_qsl(query.decode()))
        self.weight += ep.weight(params) if ep else 1
        self.requests += 1
        return self.inner.request(method, uri, headers, bodyProducer)


def make_bots(rng: random.Random, pairs: list[str], trades: str, now: float) -> list[dict]:
    signal = rng.sample(pairs, 10)
    bots = []
    for _ in range(10):
        open_trades = rng.sample(signal if trades == "same-strategy" else pairs, 5)
        bots.append({"jitter": rng.uniform(0, 0.8), "trades": open_trades,
                     "info_every": 3600, "info_next": rng.uniform(0, 3600),
                     "next": now + rng.uniform(0, 5), "candle": None})
    return bots


def step_bots(bots: list[dict], now: float, elapsed: float, pairs: list[str], send,
              timeframe_s: int = 300) -> None:
    """One pass of every bot's Freqtrade-like worker loop at time ``now``."""
    tf_name = {60: "1m", 300: "5m"}[timeframe_s]
    for bot in bots:
        if now < bot["next"] + bot["jitter"]:  # requests go out jitter into the iteration
            continue
        wake = bot["next"]
        candle = int(now // timeframe_s)
        if bot["candle"] != candle:  # first iteration of a new candle
            bot["candle"] = candle
            since = (candle - 2) * timeframe_s * 1000
            for pair in pairs:
                send("/api/v3/klines", f"symbol={pair}&interval={tf_name}&startTime={since}")
        for pair in bot["trades"]:
            send("/api/v3/depth", f"symbol={pair}&limit=5")
        if elapsed >= bot["info_next"]:
            bot["info_next"] += bot["info_every"]
            send("/api/v3/exchangeInfo", "")
        # Worker._throttle: 5 s start to start, but never past the next candle + 1 s.
        to_boundary = (candle + 1) * timeframe_s - wake
        sleep = 5.0
        if to_boundary < sleep < to_boundary + 1:
            sleep = to_boundary + 1
        bot["next"] = wake + min(sleep, to_boundary + 1)


def run(minutes: int, chain: list[str] | None, trades: str) -> dict:
    clock = task.Clock()
    clock.advance(EPOCH)
    exchange = FakeExchange(clock, start_ms=EPOCH * 1000, weight_limits={"spot": 10 ** 9},
                            trade_rate=0.2).start()
    endpoints = load_endpoints()
    agent = RequestTraversalAgent(exchange.resource())
    metered = Metered(agent, endpoints)
    direct_weight = 0
    handler = None
    if chain is not None:
        import tempfile
        service = ProxyService(clock, ProxyConfig(
            listen=(), upstreams={"spot": "http://fake/spot"},
            middleware=tuple((m, {}) for m in chain), state_dir=tempfile.mkdtemp()),
            agent=metered)
        service.startService()
        handler = service.handler
    rng = random.Random(7)
    pairs = list(exchange.symbols["spot"])[:40]
    bots = make_bots(rng, pairs, trades, clock.seconds())
    answered = [0]
    sent = [0]

    def send(path: str, query: str) -> None:
        nonlocal direct_weight
        ep = endpoints.lookup("spot", "GET", path)
        direct_weight += ep.weight(dict(parse_qsl(query)))
        sent[0] += 1
        if handler is None:
            answered[0] += 1
            return
        request = ProxyRequest("GET", "spot", path, query.encode(), (), b"", "127.0.0.1",
                               clock.seconds(), ep)
        handler(request).addCallback(lambda r: answered.__setitem__(0, answered[0] + 1))

    step = 0.05
    t0 = clock.seconds()
    for i in range(int(minutes * 60 / step)):
        now = clock.seconds()
        step_bots(bots, now, now - t0, pairs, send)
        clock.advance(step)
        if i % 4 == 0:
            agent.flush()
    for _ in range(50):
        agent.flush()
        clock.advance(0.1)
    return {"direct_weight_per_min": direct_weight / minutes,
            "upstream_weight_per_min": (metered.weight if handler else direct_weight) / minutes,
            "requests": sent[0], "upstream_requests": metered.requests,
            "answered": answered[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--chain", action="append", default=None,
                        help="comma-separated middleware chain (repeatable)")
    parser.add_argument("--trades", action="append", default=None,
                        choices=["same-strategy", "independent"])
    args = parser.parse_args()
    chains = args.chain or ["cache", "logger,allowlist,cache,ratelimit"]
    out = {}
    for trades in args.trades or ["same-strategy", "independent"]:
        for spec in chains:
            result = run(args.minutes, spec.split(","), trades)
            result["saving"] = round(1 - result["upstream_weight_per_min"]
                                     / result["direct_weight_per_min"], 4)
            out[f"{trades} / {spec}"] = result
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
