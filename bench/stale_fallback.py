"""What a stale stream's REST fallback costs upstream (issue 18 item 5), in
virtual time: the fake exchange and a proxy (streams and cache) on one
in-memory reactor, no socket, no wall clock.

    python bench/stale_fallback.py [--market spot|usdm] [--bots 20] [--seconds 60]
                                   [--limits 5,20,100]

A book and a 24 h ticker are served from their streams; then the market's
stream connections go silent (open, no message) past the quiet bound, so
both are stale. For ``--seconds``, every second each bot asks the 24 h
ticker and the book, bot i at the i-th (mod n) of ``--limits``. Reported:
the requests and weight that reached the fake exchange (its own counters and
weight table), by path, and the proxy's own weight by purpose.

"Before" is the same script run against another checkout, e.g.
``PYTHONPATH=/work/main python bench/stale_fallback.py``: the script uses
nothing but the proxy's public pieces and the fake exchange.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from urllib.parse import parse_qsl

from twisted.internet.defer import ensureDeferred, gatherResults

from bnproxy.chain.compose import as_deferred
from bnproxy.chain.messages import ProxyRequest
from bnproxy.config.model import ProxyConfig
from bnproxy.server.forwarding import resolve_market, split_target
from bnproxy.service import ProxyService
from bnproxy.testing.fake.exchange import FakeExchange
from bnproxy.testing.fake.instruments import default_instruments
from bnproxy.testing.fake.run import start_exchange
from bnproxy.testing.fake.weights import charged
from bnproxy.testing.loopback import LoopbackReactor

MARKETS = ("spot", "usdm", "coinm")
BASE = {"spot": "/api/v3", "usdm": "/fapi/v1"}
START_MS = 1_767_225_600_000 + 9 * 3_600_000 + 30 * 60_000 + 7_000  # 2026-01-01 09:30:07


def metered() -> tuple[Counter, Counter]:
    """(requests, weight) by path, as the fake exchange answers them."""
    requests: Counter = Counter()
    weight: Counter = Counter()
    answer = FakeExchange.answer

    def counted(self, market, method, path, query, body, headers, ip):
        params = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True))
        requests[path] += 1
        weight[path] += charged(market, method, path, params)
        return answer(self, market, method, path, query, body, headers, ip)

    FakeExchange.answer = counted  # type: ignore[method-assign]
    return requests, weight


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--market", choices=sorted(BASE), default="spot")
    parser.add_argument("--bots", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--limits", default="5,20,100", help="the bots' depth limits")
    args = parser.parse_args()
    market, base = args.market, BASE[args.market]
    requests, weight = metered()
    reactor = LoopbackReactor(start=START_MS / 1000)
    running = start_exchange(reactor, start_ms=START_MS, instruments=[
        i for i in default_instruments() if i.symbol in ("BTCUSDT", "ETHUSDT")])
    config = ProxyConfig(listen=(), upstreams={m: running.rest(m) for m in MARKETS},
                         stream_upstreams={m: running.stream(m) for m in MARKETS},
                         middleware=(("streams", {}), ("cache", {})),
                         state_dir=tempfile.mkdtemp(prefix="bnproxy-bench-"))
    service = ProxyService(reactor, config)
    service.startService()
    streams = service.middlewares[0]

    def ask(target: str, client: str = "10.0.0.1"):
        path, query = split_target(target.encode())
        m, binance_path = resolve_market(path.decode())
        return as_deferred(service.handler(ProxyRequest(
            "GET", m, binance_path, query, (), b"", client, reactor.seconds(),
            service.endpoints.lookup(m, "GET", binance_path))))

    ticker = f"{base}/ticker/24hr?symbol=BTCUSDT"
    limits = [int(n) for n in args.limits.split(",")]
    books = [f"{base}/depth?symbol=BTCUSDT&limit={n}" for n in limits]
    reactor.run_until(ask(f"{base}/exchangeInfo"), 30)
    reactor.run_until(gatherResults([ask(ticker), ask(books[0])]), 30)
    reactor.run_until(lambda: streams.books[(market, "BTCUSDT")].state == "live"
                      and streams.values[(market, "btcusdt@ticker")].body is not None, 30)
    reactor.sleep(1)
    served = [reactor.run_until(ask(t), 30).source for t in (ticker, books[0])]
    running.exchange.hubs[market].silence_all = True  # open, answering, no message
    reactor.sleep(35)  # past the books' quiet bound (30 s) and the ticker's (5 s)
    stale = sorted(streams.stale_streams(market))
    requests.clear()
    weight.clear()
    own_before = dict(streams.refetch.total)
    sources: Counter = Counter()
    for _ in range(args.seconds):
        answers = []
        for i in range(args.bots):
            client = f"10.0.1.{i}"
            answers += [ask(ticker, client), ask(books[i % len(books)], client)]
        for a in reactor.run_until(gatherResults(answers), 30):
            sources[(a.source, a.detail)] += 1
        reactor.sleep(1)
    own = {f"{m}/{p}": w - own_before.get((m, p), 0)
           for (m, p), w in streams.refetch.total.items() if w - own_before.get((m, p), 0)}
    paths = sorted(requests)
    print(json.dumps({
        "market": market, "bots": args.bots, "seconds": args.seconds, "limits": limits,
        "served_before_stale": served, "stale_streams": stale,
        "upstream_requests": {p: requests[p] for p in paths},
        "upstream_weight": {p: weight[p] for p in paths},
        "upstream_total": {"requests": sum(requests.values()), "weight": sum(weight.values())},
        "proxy_own_weight": own,
        "answers_by_source": {f"{s}/{d}": n for (s, d), n in sorted(sources.items())},
    }, indent=1))
    reactor.run_until(ensureDeferred(_stop(service, running)), 30)


async def _stop(service, running) -> None:
    await service.stopService()
    running.stop()


if __name__ == "__main__":
    main()
