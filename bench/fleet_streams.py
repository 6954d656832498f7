"""The Freqtrade-like fleet of ``fleet.py`` through the proxy with its streams
middleware, in real time (streams need real sockets), against the fake
exchange in-process. Upstream weight is metered at the proxy's upstream agent.

    python fleet_streams.py [--minutes 6] [--timeframe 60] [--trades same-strategy]

Reports the weight per minute over the whole run and over the steady state
(after the first ``--warmup`` seconds: seeds, snapshots and the first
exchangeInfo are one-off costs).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from urllib.parse import parse_qsl

from fleet import Metered, make_bots, step_bots
from twisted.internet import reactor, task
from twisted.web.client import Agent

from bnproxy.binance.endpoints import load_endpoints
from bnproxy.chain.messages import ProxyRequest
from bnproxy.config.model import ProxyConfig
from bnproxy.service import ProxyService
from bnproxy.testing.fake.run import start_exchange


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=6)
    parser.add_argument("--warmup", type=float, default=90)
    parser.add_argument("--timeframe", type=int, default=60, choices=[60, 300])
    parser.add_argument("--trades", default="same-strategy",
                        choices=["same-strategy", "independent"])
    parser.add_argument("--chain", default="logger,allowlist,streams,cache,ratelimit")
    args = parser.parse_args()
    running = start_exchange(reactor, weight_limits={"spot": 10 ** 9}, trade_rate=0.2)
    endpoints = load_endpoints()
    metered = Metered(Agent(reactor), endpoints)
    config = ProxyConfig(listen=(), upstreams={"spot": running.rest("spot")},
                         stream_upstreams={"spot": running.stream("spot")},
                         middleware=tuple((m, {}) for m in args.chain.split(",")),
                         state_dir=tempfile.mkdtemp())
    service = ProxyService(reactor, config, agent=metered)
    service.startService()
    pairs = list(running.exchange.symbols["spot"])[:40]
    bots = make_bots(random.Random(7), pairs, args.trades, reactor.seconds())
    state = {"direct": 0, "direct_steady": 0, "upstream_at_warmup": None, "sources": {}}
    t0 = reactor.seconds()

    def send(path: str, query: str) -> None:
        ep = endpoints.lookup("spot", "GET", path)
        w = ep.weight(dict(parse_qsl(query)))
        state["direct"] += w
        if reactor.seconds() - t0 >= args.warmup:
            state["direct_steady"] += w
        request = ProxyRequest("GET", "spot", path, query.encode(), (), b"", "127.0.0.1",
                               reactor.seconds(), ep)

        def seen(r):
            state["sources"][r.source] = state["sources"].get(r.source, 0) + 1
        service.handler(request).addCallback(seen)

    def tick() -> None:
        now = reactor.seconds()
        if state["upstream_at_warmup"] is None and now - t0 >= args.warmup:
            state["upstream_at_warmup"] = metered.weight
        step_bots(bots, now, now - t0, pairs, send, args.timeframe)

    loop = task.LoopingCall(tick)
    loop.start(0.05)

    def finish() -> None:
        loop.stop()
        minutes = args.minutes
        steady_minutes = minutes - args.warmup / 60
        steady_up = metered.weight - (state["upstream_at_warmup"] or 0)
        out = {
            "minutes": minutes, "timeframe_s": args.timeframe, "trades": args.trades,
            "chain": args.chain,
            "direct_weight_per_min": round(state["direct"] / minutes, 1),
            "upstream_weight_per_min": round(metered.weight / minutes, 1),
            "saving": round(1 - metered.weight / state["direct"], 4),
            "steady_direct_weight_per_min": round(state["direct_steady"] / steady_minutes, 1),
            "steady_upstream_weight_per_min": round(steady_up / steady_minutes, 1),
            "steady_saving": round(1 - steady_up / state["direct_steady"], 4),
            "upstream_requests": metered.requests, "answers_by_source": state["sources"],
            "streams": service.middlewares[2].health()["markets"]["spot"]
            if "streams" in args.chain else None,
        }
        print(json.dumps(out, indent=2))
        d = service.stopService()
        d.addBoth(lambda _: reactor.stop())

    reactor.callLater(args.minutes * 60, finish)
    reactor.run()


if __name__ == "__main__":
    main()
