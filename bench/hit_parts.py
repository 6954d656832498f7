"""Where a fast-path hit's instructions go, part by part: the default chain
and the fake exchange in memory (one ``LoopbackReactor``, virtual time), the
same hit fed to ``FastChannel.dataReceived`` and each part called alone,
``--calls`` times each inside ``functools.reduce``, under callgrind with
counting on only inside ``functools_reduce`` and a dump after each:

    python bench/hit_parts.py [--calls 2000] [--target 0]

``--target``: 0 depth ``limit=5``, 1 depth ``limit=20``, 2 ``ticker/24hr``,
3 ``exchangeInfo``. The reactor's share (``epoll``, ``doRead``, the socket
calls) is not in these figures: ``bench/hits_cost.py`` counts the whole
process.
"""

from __future__ import annotations

import argparse
import functools
import glob
import os
import re
import subprocess
import sys
import tempfile

TARGETS = ["/api/v3/depth?symbol=BTCUSDT&limit=5", "/api/v3/depth?symbol=BTCUSDT&limit=20",
           "/api/v3/ticker/24hr?symbol=BTCUSDT", "/api/v3/exchangeInfo"]
START_MS = 1_767_225_600_000 + 9 * 3_600_000 + 30 * 60_000 + 7_000
SYMBOLS = {"BTCUSDT", "ETHUSDT"}


class _Null:
    """A transport that takes every write."""

    disconnecting = False

    def __init__(self, peer) -> None:
        self.peer = peer

    def write(self, data: bytes) -> None:
        pass

    def getPeer(self):
        return self.peer

    def getHost(self):
        return self.peer

    def registerProducer(self, *args) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def loseConnection(self) -> None:
        pass

    abortConnection = loseConnection

    def setTcpNoDelay(self, *args) -> None:
        pass


def parts(calls: int, which: int) -> list[str]:
    """Run each part ``calls`` times inside ``functools.reduce``; their names."""
    from twisted.internet.address import IPv4Address

    from bnproxy.chain.compose import as_deferred
    from bnproxy.chain.messages import ProxyRequest
    from bnproxy.config.model import ProxyConfig
    from bnproxy.server.accesslog import AccessLogWriter
    from bnproxy.server.forwarding import resolve_market, split_target
    from bnproxy.service import ProxyService
    from bnproxy.testing.fake.instruments import default_instruments
    from bnproxy.testing.fake.run import start_exchange
    from bnproxy.testing.harness import DEFAULT, chain
    from bnproxy.testing.loopback import LoopbackReactor

    reactor = LoopbackReactor(start=START_MS / 1000)
    running = start_exchange(reactor, start_ms=START_MS, instruments=[
        i for i in default_instruments() if i.symbol in SYMBOLS])
    config = ProxyConfig(listen=(), upstreams={"spot": running.rest("spot")},
                         stream_upstreams={"spot": running.stream("spot")},
                         middleware=chain(*DEFAULT), state_dir=tempfile.mkdtemp())
    service = ProxyService(reactor, config)
    service.startService()
    middlewares = {m.name: m for m in service.proxy.middlewares}
    logger, streams = middlewares["logger"], middlewares["streams"]
    logger.output = AccessLogWriter(reactor, stream=open(os.devnull, "wb"))

    def ask(target: str):
        path, query = split_target(target.encode())
        market, binance_path = resolve_market(path.decode())
        request = ProxyRequest("GET", market, binance_path, query, (), b"", "127.0.0.1",
                               reactor.seconds(),
                               service.endpoints.lookup(market, "GET", binance_path))
        return reactor.run_until(as_deferred(service.handler(request)), 30)

    for target in TARGETS:
        ask(target)
    reactor.run_until(lambda: all(  # (exchangeInfo: held by the cache until its stream is up)
        ask(t).source == ("cache" if "exchangeInfo" in t else "stream") for t in TARGETS), 60)
    peer = IPv4Address("TCP", "127.0.0.1", 40000)
    channel = service.site.buildProtocol(peer)
    channel.makeConnection(_Null(peer))
    data = (b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: ccxt/4.3\r\n\r\n"
            % TARGETS[which].encode())
    for _ in range(3):
        channel.dataReceived(data)
    assert channel.fast_hits == 3, "not a fast path hit"
    head = channel._heads[data]
    forward = channel._forward
    fields = forward._prepared[head.url]
    request = ProxyRequest(**{k: fields[k] for k in (
        "method", "market", "path", "query", "body", "endpoint")},
        headers=head.pairs, client=channel._client, arrival=reactor.seconds())
    answer = streams.fast_handle(request, lambda r: None) or \
        middlewares["cache"].fast_handle(request, lambda r: None)
    names = []

    def part(name: str, call) -> None:
        names.append(name)
        functools.reduce(lambda _, __: call(), range(calls), None)

    part("(the loop itself)", lambda: None)
    part("FastChannel.dataReceived, all of a hit", lambda: channel.dataReceived(data))
    part("ForwardingResource.answer_fast", lambda: forward.answer_fast(
        head.url, head.pairs, peer, channel._client))
    part("the fast chain", lambda: forward.fast[0](request, forward.fast[1]))
    part("streams fast_handle", lambda: streams.fast_handle(request, lambda r: None))
    part("logger: line and ledger", lambda: logger._log_one(answer, request))
    part("ledger alone", lambda: logger.ledger.count("127.0.0.1", request, answer))
    part("metrics and the dashboard's observer", lambda: forward._answered(request, answer))
    part("writing", lambda: channel._write_answer(answer))
    return names


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--target", type=int, default=0)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        print("\n".join(parts(args.calls, args.target)))
        return
    out = tempfile.mkdtemp()
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    names = subprocess.run(
        ["valgrind", "--tool=callgrind", "--toggle-collect=functools_reduce",
         "--dump-after=functools_reduce", f"--callgrind-out-file={out}/cg",
         sys.executable, __file__, "--inside", "--calls", str(args.calls),
         "--target", str(args.target)],
        capture_output=True, text=True, env=env, check=True, timeout=1800).stdout.split("\n")
    names = [n for n in names if n]
    dumps = sorted(glob.glob(f"{out}/cg.*"), key=lambda p: int(p.rsplit(".", 1)[1]))
    totals = []
    for path in dumps[-len(names):]:  # (an import may call reduce before the parts)
        with open(path) as f:
            totals.append(int(re.search(r"^summary: (\d+)", f.read(), re.M).group(1)))
    print(f"{TARGETS[args.target]}: instructions per call")
    for name, total in zip(names, totals, strict=True):
        print(f"  {name:45s} {total / args.calls:9,.0f}")


if __name__ == "__main__":
    main()
