"""CPU cost of the hardening per cache hit, in-process (no sockets, so no
scheduler noise): the same resource tree behind bnproxy's hardened Site and
behind a stock twisted.web Site, fed the same keep-alive requests through a
StringTransport, alternating blocks. Pin it: ``taskset -c 0 python hardening_cpu.py``.
"""

from __future__ import annotations

import gc
import json
import statistics
import tempfile
import time

from treq.testing import RequestTraversalAgent
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.web import resource, server

from bnproxy.config.model import ProxyConfig
from bnproxy.server.forwarding import UnparsedRequest
from bnproxy.service import ProxyService

BODY = b'[[1767225600000,"65000.00000000"]]' * 500
REQUEST = (b"GET /api/v3/klines?symbol=BTCUSDT&interval=1h&limit=100 HTTP/1.1\r\n"
           b"Host: proxy\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n")


class Upstream(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        return BODY


def per_request_us(site: server.Site, n: int) -> float:
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 1))
    protocol.makeConnection(transport)
    t = time.perf_counter()
    for _ in range(n):
        protocol.dataReceived(REQUEST)
        transport.clear()
    return (time.perf_counter() - t) / n * 1e6


def main() -> None:
    agent = RequestTraversalAgent(Upstream())
    config = ProxyConfig(listen=(), upstreams={"spot": "http://fake"},
                         middleware=(("cache", {"ttl.klines": 1e9}),),
                         state_dir=tempfile.mkdtemp())
    service = ProxyService(task.Clock(), config, agent=agent)
    hardened = service.site
    plain = server.Site(hardened.resource, reactor=task.Clock())
    plain.requestFactory = UnparsedRequest  # the same request class, less the hardening
    plain.log = lambda request: None  # type: ignore[method-assign]
    # Fill the cache once.
    proto = hardened.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    tr = StringTransport()
    proto.makeConnection(tr)
    proto.dataReceived(REQUEST)
    for _ in range(10):
        agent.flush()
    assert b"x-cache: miss" in tr.value().lower()
    gc.freeze()
    results: dict[str, list[float]] = {"hardened": [], "plain": []}
    for _ in range(40):  # short alternating blocks: drift hits both alike
        results["hardened"].append(per_request_us(hardened, 500))
        results["plain"].append(per_request_us(plain, 500))
    med = {k: statistics.median(v) for k, v in results.items()}
    paired = statistics.median(h / p for h, p in zip(results["hardened"], results["plain"]))
    print(json.dumps({"per_request_us_median": {k: round(v, 2) for k, v in med.items()},
                      "hardening_cpu_cost_percent": round((paired - 1) * 100, 2),
                      "throughput_ratio": round(1 / paired, 3)}, indent=2))


if __name__ == "__main__":
    main()
