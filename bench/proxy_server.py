"""A proxy process for benchmarks: ``python proxy_server.py PORT MODE UPSTREAM CHAIN``.

MODE ``hardened`` serves through bnproxy's own Site (``bnproxy.server.channel``);
``plain`` serves the same resource tree through a stock ``twisted.web``
Site with the same request class less the hardening mixin, so the difference
is the cost of the hardening alone.
"""

import gc
import sys
import tempfile

from twisted.internet import reactor
from twisted.web import server

from bnproxy.config.model import ProxyConfig
from bnproxy.server.site import UnparsedRequest
from bnproxy.service import ProxyService

port, mode, upstream, chain = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
config = ProxyConfig(listen=(), upstreams={"spot": upstream},
                     middleware=tuple((m, {"ttl.klines": "3600"} if m == "cache" else {})
                                      for m in chain.split(",")),
                     state_dir=tempfile.mkdtemp())
service = ProxyService(reactor, config)
if mode == "hardened":
    site = service.site
else:
    site = server.Site(service.site.resource, reactor=reactor)
    site.requestFactory = UnparsedRequest
    site.log = lambda request: None
reactor.listenTCP(port, site, interface="127.0.0.1")
service.startService()
gc.freeze()
reactor.run()
