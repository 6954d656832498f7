"""The bots' side of the HTTP server, hardened where stock twisted.web is not.

- an absolute deadline for the request line and headers (slowloris) and one
  for the body (408 and close);
- a body-size cap answered with 413 before the body is read: for a
  ``Content-Length``, for ``Expect: 100-continue`` (no 100 is sent) and for
  chunked bodies as they arrive;
- ``Transfer-Encoding`` other than ``chunked``, any ``Transfer-Encoding`` on
  HTTP/1.0, and obs-folded header lines are refused with 400;
- caps on header count and bytes (400);
- a cap on open connections per client address (503);
- an idle keep-alive timeout, and a send deadline for bots that stop reading.
"""

from __future__ import annotations

from collections import defaultdict

from twisted.logger import Logger
from twisted.web import http

from bnproxy.binance.errors import error_body
from bnproxy.config import ServerLimits

_log = Logger(namespace="bnproxy.server")

REASONS = {400: b"Bad Request", 408: b"Request Timeout", 413: b"Payload Too Large",
           503: b"Service Unavailable"}


def error_bytes(status: int, msg: str) -> bytes:
    body = error_body(-1000 if status != 413 else -1104, f"bnproxy: {msg}")
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/json;charset=UTF-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (status, REASONS[status], len(body), body))


class HardenedChannel(http.HTTPChannel):
    limits: ServerLimits = ServerLimits()

    def connectionMade(self) -> None:  # noqa: N802
        self._header_timer = None
        self._body_timer = None
        self._send_timer = None
        self._in_headers = False
        self._body_seen = 0
        self._failed = False
        super().connectionMade()

    # -- parsing -------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self._failed:
            return
        if (self._header_timer is None and not self._handlingRequest
                and not self._in_headers and data):
            self._header_timer = self.callLater(self.limits.header_timeout, self._timed_out,
                                                "request headers")
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:  # noqa: N802
        if self._failed:
            return
        if not self._in_headers:
            if line:  # the request line (an empty line before it is tolerated)
                self._in_headers = True
        elif line == b"":
            self._in_headers = False
        elif line[:1] in (b" ", b"\t"):
            return self.refuse(400, "obsolete line folding in a header")
        return super().lineReceived(line)

    def headerReceived(self, line: bytes) -> bool:  # noqa: N802
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"transfer-encoding":
            if self._version != b"HTTP/1.1":
                self.refuse(400, "Transfer-Encoding is not allowed on HTTP/1.0")
                return False
            if value.strip().lower() != b"chunked":
                self.refuse(400, "only chunked Transfer-Encoding is accepted")
                return False
        return super().headerReceived(line)

    def allHeadersReceived(self) -> None:  # noqa: N802
        self._cancel("_header_timer")
        self._in_headers = False
        if self.length is not None and self.length > self.limits.max_body:
            return self.refuse(413, f"request body over {self.limits.max_body} bytes")
        self._body_seen = 0
        if self.length != 0:
            self._body_timer = self.callLater(self.limits.body_timeout, self._timed_out,
                                              "request body")
        super().allHeadersReceived()

    def allContentReceived(self) -> None:  # noqa: N802
        self._cancel("_body_timer")
        super().allContentReceived()

    def body_chunk(self, size: int) -> bool:
        """Count body bytes (chunked bodies have no length up front)."""
        self._body_seen += size
        if self._body_seen > self.limits.max_body:
            self.refuse(413, f"request body over {self.limits.max_body} bytes")
            return False
        return True

    # -- the send deadline -------------------------------------------------------------
    def pauseProducing(self) -> None:  # noqa: N802
        super().pauseProducing()
        if self._send_timer is None:
            self._send_timer = self.callLater(self.limits.send_timeout, self._send_expired)

    def resumeProducing(self) -> None:  # noqa: N802
        super().resumeProducing()
        self._cancel("_send_timer")

    def _send_expired(self) -> None:
        self._send_timer = None
        _log.info("client {peer} stopped reading: connection aborted",
                  peer=str(self.transport.getPeer()))
        self.transport.abortConnection()

    # -- failing -----------------------------------------------------------------------
    def _timed_out(self, what: str) -> None:
        self._header_timer = self._body_timer = None
        self.refuse(408, f"{what} not received within the deadline")

    def refuse(self, status: int, msg: str) -> None:
        if self._failed:
            return
        self._failed = True
        self._in_headers = False
        for timer in ("_header_timer", "_body_timer"):
            self._cancel(timer)
        _log.info("refused {peer}: {status} {msg}", peer=str(self.transport.getPeer()),
                  status=status, msg=msg)
        self.transport.write(error_bytes(status, msg))
        self.transport.loseConnection()

    def _cancel(self, name: str) -> None:
        timer = getattr(self, name, None)
        if timer is not None and timer.active():
            timer.cancel()
        setattr(self, name, None)

    def connectionLost(self, reason) -> None:  # noqa: N802
        for timer in ("_header_timer", "_body_timer", "_send_timer"):
            self._cancel(timer)
        super().connectionLost(reason)


class _Refuse503(http.HTTPChannel):
    def connectionMade(self) -> None:  # noqa: N802
        self.transport.write(error_bytes(503, "too many connections from your address"))
        self.transport.loseConnection()


class HardenedSiteMixin:
    """For a ``server.Site``: the hardened channel and a per-address
    connection cap."""

    def harden(self, limits: ServerLimits) -> None:
        channel = type("Channel", (HardenedChannel,), {
            "limits": limits, "maxHeaders": limits.max_headers,
            "totalHeadersSize": limits.max_header_bytes})
        self.protocol = channel
        self.timeOut = limits.keepalive_timeout
        self._limits = limits
        self._open: dict[str, int] = defaultdict(int)

    def buildProtocol(self, addr):  # noqa: N802
        host = getattr(addr, "host", None)
        if host is not None and self._open[host] >= self._limits.max_connections_per_client:
            p = _Refuse503()
            p.factory = self
            return p
        channel = super().buildProtocol(addr)
        if host is not None and channel is not None:
            self._open[host] += 1
            lost = channel.connectionLost

            def connection_lost(reason, lost=lost, host=host):
                self._open[host] -= 1
                if self._open[host] <= 0:
                    del self._open[host]
                return lost(reason)
            channel.connectionLost = connection_lost
        return channel


class HardenedRequest:
    """Request mixin: chunked bodies are counted against the cap as they arrive."""

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802
        channel = self.channel
        if isinstance(channel, HardenedChannel) and not channel.body_chunk(len(data)):
            return
        super().handleContentChunk(data)
