"""A bare twisted.web resource serving fixed bytes: the baseline the proxy's
cache hits are compared against.  python bare_server.py PORT FILE"""

import sys

from twisted.internet import reactor
from twisted.web import resource, server


class Bytes(resource.Resource):
    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json;charset=UTF-8")
        return self.body


site = server.Site(Bytes(open(sys.argv[2], "rb").read()))
site.log = lambda request: None
reactor.listenTCP(int(sys.argv[1]), site, interface="127.0.0.1")
reactor.run()
