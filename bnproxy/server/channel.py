"""The bots' side of the HTTP server, hardened where stock twisted.web is not.

- an absolute deadline for the request line and headers (slowloris) and one
  for the body (408 and close);
- a body-size cap answered with 413 before the body is read: for a
  ``Content-Length``, for ``Expect: 100-continue`` (no 100 is sent) and for
  chunked bodies as they arrive;
- ``Transfer-Encoding`` other than ``chunked``, any ``Transfer-Encoding`` on
  HTTP/1.0, and obs-folded header lines are refused with 400;
- a chunk extension that is not ``;name[=token|"quoted"]`` (an unterminated
  quoted string, say) is refused with 400: a front proxy may frame it
  differently (request smuggling);
- caps on header count and bytes (400);
- a cap on open connections per client address (503);
- an idle keep-alive timeout, and a send deadline for bots that stop reading.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http_headers import Headers

from bnproxy.binance.errors import UNKNOWN, UNREAD_PARAMETERS, error_body
from bnproxy.config.model import ServerLimits
from bnproxy.twistedcompat import ChunkedTransferDecoder, MalformedChunkedDataError

_log = Logger(namespace="bnproxy.server")

REASONS = {400: b"Bad Request", 408: b"Request Timeout", 413: b"Payload Too Large",
           503: b"Service Unavailable"}


def error_bytes(status: int, msg: str) -> bytes:
    body = error_body(UNKNOWN if status != 413 else UNREAD_PARAMETERS, f"bnproxy: {msg}")
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/json;charset=UTF-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (status, REASONS[status], len(body), body))


# RFC 9112 §7.1.1: chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_EXT = re.compile(rb"(?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN
                        + rb"|" + _QUOTED + rb"))?)*[ \t]*")


class StrictChunkedDecoder(ChunkedTransferDecoder):
    """twisted.web's chunked decoder, refusing chunk extensions that do not
    parse (it only checks their characters)."""

    def _dataReceived_CHUNK_LENGTH(self) -> bool:
        eol = self._buffer.find(b"\r\n")
        if eol != -1:
            semi = self._buffer.find(b";", 0, eol)
            if semi != -1 and not _CHUNK_EXT.fullmatch(bytes(self._buffer[semi:eol])):
                raise MalformedChunkedDataError("malformed chunk extension")
        return super()._dataReceived_CHUNK_LENGTH()


# The base methods, called directly on the hot path (no super() object per call).
_base_data = http.HTTPChannel.dataReceived
_base_header = http.HTTPChannel.headerReceived
_base_all_headers = http.HTTPChannel.allHeadersReceived
_base_write_headers = http.HTTPChannel.writeHeaders


class HardenedChannel(http.HTTPChannel):
    limits: ServerLimits = ServerLimits()
    transport: Any  # set by connectionMade; Twisted types it Optional
    callLater: Any
    # State as class-level defaults, set on the instance only when it changes:
    # the common request adds no instance attribute (a channel with too many
    # keeps them in a slower dict, and every lookup twisted.web makes pays).
    _header_timer = None
    _body_timer = None
    _send_timer = None
    _tail = b""  # the last bytes of unfinished headers (a fold may straddle reads)
    _body_seen = 0
    _failed = False
    _counted_as: str | None = None  # the address the connection cap counted it under

    # -- parsing -------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        if self._failed:
            return
        # An obs-fold is a line break followed by a space or tab inside the
        # headers; the precise look (headers only, straddling reads) is taken
        # only when such bytes are there at all. line_mode is LineReceiver's:
        # 1 while a request line or headers are being read.
        # (find, not ``in``: ``bytes in bytes`` formats and clears a TypeError
        # first, ~1,800 instructions each time.)
        if (self._tail or data.find(b"\n ") != -1 or data.find(b"\n\t") != -1) \
                and self.line_mode \
                and not self._handlingRequest and self._folded(data):
            return self.refuse(400, "obsolete line folding in a header")
        _base_data(self, data)
        # Most requests arrive whole: a deadline timer is only needed when the
        # headers are still incomplete after this read (that is what slowloris does).
        if (self._header_timer is None and not self._handlingRequest
                and (self._receivedHeaderSize or self._buffer) and not self._failed):
            self._header_timer = self.callLater(self.limits.header_timeout, self._timed_out,
                                                "request headers")
        if self.line_mode and (self._receivedHeaderSize or self._buffer):
            self._tail = data[-2:]
        elif self._tail:
            self._tail = b""

    def _folded(self, data: bytes) -> bool:
        end = data.find(b"\r\n\r\n")
        stop = len(data) if end < 0 else end + 2
        tail = self._tail
        return bool((tail.endswith(b"\r\n") and data[:1] in (b" ", b"\t"))
                    or (tail.endswith(b"\r") and data[:2] in (b"\n ", b"\n\t"))
                    or data.find(b"\r\n ", 0, stop) >= 0 or data.find(b"\r\n\t", 0, stop) >= 0)

    def headerReceived(self, line: bytes) -> bool:
        if line[:1] not in (b"T", b"t"):  # only Transfer-Encoding needs a look
            return _base_header(self, line)
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"transfer-encoding":
            if self._version != b"HTTP/1.1":
                self.refuse(400, "Transfer-Encoding is not allowed on HTTP/1.0")
                return False
            if value.strip().lower() != b"chunked":
                self.refuse(400, "only chunked Transfer-Encoding is accepted")
                return False
            ok = _base_header(self, line)
            if ok and type(self._transferDecoder) is ChunkedTransferDecoder:
                # (twistedcompat: no factory to override; a subclass without state)
                self._transferDecoder.__class__ = StrictChunkedDecoder
            return ok
        return _base_header(self, line)

    def allHeadersReceived(self) -> None:
        if self._header_timer is not None:
            self._cancel("_header_timer")
        if self.length != 0:  # a body follows (None: chunked)
            if self.length is not None and self.length > self.limits.max_body:
                return self.refuse(413, f"request body over {self.limits.max_body} bytes")
            self._body_seen = 0
            # One body timer per connection, replaced by the next body's and
            # not cancelled when the body is in (that would cost every request
            # a call): firing after the body, it sees none being read and stops.
            if self._body_timer is not None:
                self._cancel("_body_timer")
            self._body_timer = self.callLater(self.limits.body_timeout, self._body_late)
        _base_all_headers(self)

    def _body_late(self) -> None:
        self._body_timer = None
        if not self.line_mode and not self._handlingRequest:  # a body is being read
            self._timed_out("request body")

    def body_chunk(self, size: int) -> bool:
        """Count body bytes (chunked bodies have no length up front)."""
        self._body_seen += size
        if self._body_seen > self.limits.max_body:
            self.refuse(413, f"request body over {self.limits.max_body} bytes")
            return False
        return True

    # -- writing -----------------------------------------------------------------------
    def writeHeaders(self, version: bytes, code: bytes, reason: bytes,
                     headers: Any) -> None:
        """As ``HTTPChannel.writeHeaders``, the same bytes handed to the
        transport joined: one ``write`` where twisted.web's ``writeSequence``
        checks every name, separator and value (four items a header) one by one."""
        if not isinstance(headers, Headers):
            return _base_write_headers(self, version, code, reason, headers)
        lines = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                lines.extend((name, b": ", value, b"\r\n"))
        lines.append(b"\r\n")
        self.transport.write(b"".join(lines))
        return None

    # -- the send deadline -------------------------------------------------------------
    def pauseProducing(self) -> None:
        super().pauseProducing()
        if self._send_timer is None:
            self._send_timer = self.callLater(self.limits.send_timeout, self._send_expired)

    def resumeProducing(self) -> None:
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
        for timer in ("_header_timer", "_body_timer"):
            self._cancel(timer)
        _log.info("refused {peer}: {status} {msg}", peer=str(self.transport.getPeer()),
                  status=status, msg=msg)
        self.transport.write(error_bytes(status, msg))
        self.transport.loseConnection()

    def _cancel(self, name: str) -> None:
        timer = getattr(self, name, None)
        if timer is not None:
            if timer.active():
                timer.cancel()
            setattr(self, name, None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        for timer in ("_header_timer", "_body_timer", "_send_timer"):
            self._cancel(timer)
        if self._counted_as is not None:
            self.factory.connection_closed(self._counted_as)
        super().connectionLost(reason)


class _Refuse503(http.HTTPChannel):
    transport: Any
    def connectionMade(self) -> None:
        self.transport.write(error_bytes(503, "too many connections from your address"))
        self.transport.loseConnection()


if TYPE_CHECKING:
    from twisted.web.server import Request as _RequestBase
    from twisted.web.server import Site as _SiteBase
else:
    _SiteBase = _RequestBase = object


class HardenedSiteMixin(_SiteBase):
    """For a ``server.Site``: the hardened channel and a per-address
    connection cap."""

    def harden(self, limits: ServerLimits) -> None:
        channel = type("Channel", (HardenedChannel,), {
            "limits": limits, "maxHeaders": limits.max_headers,
            "totalHeadersSize": limits.max_header_bytes})
        self.protocol = channel  # type: ignore[method-assign]  # a class, as Factory wants
        self.timeOut = limits.keepalive_timeout
        self._limits = limits
        self._open: dict[str, int] = defaultdict(int)

    def buildProtocol(self, addr):
        host = getattr(addr, "host", None)
        if host is not None and self._open[host] >= self._limits.max_connections_per_client:
            p = _Refuse503()
            p.factory = self
            return p
        channel = super().buildProtocol(addr)
        if host is not None and channel is not None:
            self._open[host] += 1
            channel._counted_as = host
        return channel

    def connection_closed(self, host: str) -> None:
        self._open[host] -= 1
        if self._open[host] <= 0:
            del self._open[host]


class HardenedRequest(_RequestBase):
    """Request mixin: chunked bodies are counted against the cap as they arrive."""

    def handleContentChunk(self, data: bytes) -> None:
        channel = self.channel
        if isinstance(channel, HardenedChannel) and not channel.body_chunk(len(data)):
            return
        super().handleContentChunk(data)
