"""A lean HTTP/1.1 client for the upstream, without per-request setup.

twisted.web's Agent builds, for every request, a parsed URI, an endpoint
(the host IDNA-encoded, a TLS connection creator), a ``Headers`` object, a
request and a response object, and parses the response line by line. Here
everything that depends only on the host is computed once, when a
:class:`HostPool` is made for a market's base URL and an egress address: the
endpoint (with its TLS creator), the Host header, the path prefix. A request
is one ``write`` of a head joined from precomputed parts; the response is
parsed by httptools (llhttp, strict) and its body joined once.

The keep-alive race: an upstream closes a keep-alive connection it has seen
idle for its idle timeout. If the proxy writes a request on that connection as the close is
in flight, the request is lost: nothing comes back (RFC 9110 §9.2.2 allows an
idempotent request to be retried automatically then). Three rules keep this
rare and harmless:

- A connection idle for ``POOL_IDLE_LIMIT`` seconds is closed, never reused:
  Binance does not publish the idle timeout of its front ends; common front
  ends close idle client connections after 60 s (AWS load balancers' default)
  or 75 s (nginx's). 20 s keeps a margin of at least 40 s to the smallest of
  these, which also covers a reactor that runs a timer late; a fleet that
  polls at all keeps its connections warm well within 20 s. The limit is
  checked when a connection is taken, not only by its timer.
- The most recently used idle connection is taken first; the older ones age
  out instead of being kept just alive.
- A reused connection that fails before any byte of the response arrived
  fails with :class:`StaleConnectionError`, and every other idle connection to
  that host (all idle for longer) is closed with it, so a retry opens a fresh
  connection. The upstream client decides what is retried (only an
  idempotent public request, once, within its deadline).

Failures use twisted.web's exceptions (``ResponseNeverReceived``,
``ResponseFailed``) so the upstream client reads them as it reads the
Agent's. No redirects (a 3xx is an answer), no cookies, ``Accept-Encoding:
gzip`` asked and decoded here.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any
from typing import Protocol as Protocol_
from urllib.parse import urlsplit

import attrs
import httptools
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.internet.tcp import Client as TCPClient
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed, ResponseNeverReceived

from bnproxy.twistedcompat import nothing_waits, send_now

POOL_IDLE_LIMIT = 20.0


class BodyTooLargeError(Exception):
    pass


class StaleConnectionError(Exception):
    """A connection taken from the pool failed before any byte of the
    response arrived: most likely the upstream closed it idle as the request
    was written. ``reasons`` holds the failure as twisted.web names it."""

    def __init__(self, failure: Failure) -> None:
        super().__init__("reused connection closed before the response")
        self.reasons = [failure]


@attrs.frozen
class UpstreamResponse:
    """Status, raw header pairs (as received, names as sent), and the body:
    a Deferred firing with the whole (decoded) body; cancelling it aborts
    the connection."""

    code: int
    headers: list[tuple[bytes, bytes]]
    body: Deferred


class Listener(Protocol_):
    """What hears one exchange (:meth:`HostPool.start`): ``head`` once the
    response head arrived, then ``done`` with the whole (decoded) body; or
    ``failed`` instead, at any point. No call follows ``done`` or ``failed``."""

    def head(self, code: int, headers: list[tuple[bytes, bytes]]) -> None: ...

    def done(self, body: bytes) -> None: ...

    def failed(self, failure: Failure) -> None: ...


def _write(transport: Any, data: bytes) -> None:
    """``transport.write(data)``, sent at once where Twisted would wait
    (``twistedcompat.send_now``). Its TLS transport gathers small writes
    until the next turn (a ``callLater(0)``): a request is one write, so it
    is handed to TLS at once when nothing is gathered before it, and the TLS
    records it makes, buffered by the TCP transport beneath, are sent at once
    the same way (the rest put back in that buffer, in order)."""
    kind = type(transport)
    if kind is TCPClient and not transport.TLS:
        send_now(transport, data)
    elif kind is BufferingTLSTransport and not getattr(transport._aggregator, "_buffer", True):
        # (after connectionLost the gathering is gone: no ``_buffer``)
        tcp = transport.transport
        was_idle = type(tcp) is TCPClient and nothing_waits(tcp)
        TLSMemoryBIOProtocol.write(transport, data)  # the write without gathering
        if was_idle and tcp._tempDataLen and nothing_waits(tcp, buffered=True):
            # the TLS records just buffered below: sent now as well
            pending = b"".join(tcp._tempDataBuffer)
            try:
                sent = tcp.socket.send(pending)
            except OSError:
                sent = 0
            if sent:
                rest = pending[sent:]
                tcp._tempDataBuffer = [rest] if rest else []
                tcp._tempDataLen = len(rest)
                if not rest:
                    tcp.stopWriting()
    else:
        transport.write(data)


class _Connection(Protocol):
    """One upstream connection; one exchange at a time. No Deferred per
    exchange: the response goes to the exchange's :class:`Listener`."""

    transport: Any

    def __init__(self, pool: HostPool) -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self.idle_until = 0.0
        self._listener: Listener | None = None  # while an exchange is under way
        self._got_head = False
        self._reused = False
        self._received = False
        self._head_only = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._parts: list[bytes] = []
        self._size = 0
        self._limit = 0
        self._gzip = False
        self._until_close = False
        self._informational = False
        self._keep_alive = False
        self.open = False

    # the exchange

    def send(self, data: bytes, head_only: bool, limit: int, reused: bool,
             listener: Listener) -> _Connection:
        """Write a request; the connection is the exchange's handle (``abort``)."""
        self._listener = listener
        self._got_head = False
        self._reused = reused
        self._received = False
        self._head_only = head_only
        self._headers = []
        self._parts = []
        self._size = 0
        self._limit = limit
        _write(self.transport, data)
        return self

    def abort(self) -> None:
        """Give up the exchange under way: the connection is dropped and its
        listener told ``CancelledError``."""
        listener = self._listener
        if listener is None:
            return
        self._listener = None
        self.transport.abortConnection()
        listener.failed(Failure(CancelledError()))

    def _fail(self, failure: Failure) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.failed(failure)

    def dataReceived(self, data: bytes) -> None:
        if self._listener is None:
            self.transport.abortConnection()  # bytes nobody asked for
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self.transport.abortConnection()
            self._fail(Failure(ResponseFailed([Failure(e)])))

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        code = self._parser.get_status_code()
        self._informational = code < 200
        if self._informational:
            self._headers = []
            return
        headers = self._headers
        self._gzip = has_length = False
        gzip_at = -1
        for i, (name, value) in enumerate(headers):  # one pass, names of any case
            lower = name.lower()
            if lower == b"content-length":
                has_length = True
            elif lower == b"transfer-encoding":
                if value.strip().lower() == b"chunked":
                    has_length = True
            elif lower == b"content-encoding" and gzip_at < 0 \
                    and value.strip().lower() == b"gzip":
                gzip_at = i
        if gzip_at >= 0:
            self._gzip = True
            del headers[gzip_at]  # decoded here, as twisted.web's decoder does
        self._until_close = not has_length and code not in (204, 304) and not self._head_only
        self._keep_alive = self._parser.should_keep_alive()
        listener = self._listener
        if listener is None:
            return
        self._got_head = True
        listener.head(code, headers)
        if self._head_only and self._listener is listener:  # no body follows a HEAD's head
            self._parser = httptools.HttpResponseParser(self)
            self._done(b"")

    def on_body(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            self.transport.abortConnection()
            self._fail(Failure(BodyTooLargeError(self._size)))
            return
        self._parts.append(data)

    def on_message_complete(self) -> None:
        if self._informational or self._listener is None:
            return
        parts = self._parts
        self._done(parts[0] if len(parts) == 1 else b"".join(parts))

    def _done(self, body: bytes) -> None:
        listener, self._listener = self._listener, None
        if self._gzip and body:
            try:
                body = self._gunzip(body)
            except (zlib.error, BodyTooLargeError) as e:
                self.transport.abortConnection()
                if listener is not None:
                    listener.failed(Failure(e))
                return
        self._parts = []
        if self._keep_alive and not self._until_close and self.open:
            self._pool.put(self)
        else:
            self.transport.loseConnection()
        if listener is not None:
            listener.done(body)

    def _gunzip(self, data: bytes) -> bytes:
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        body = decoder.decompress(data, self._limit + 1)
        if len(body) > self._limit or decoder.unconsumed_tail:
            raise BodyTooLargeError(len(body))
        if not decoder.eof:
            raise zlib.error("truncated gzip body")
        return body

    def connectionMade(self) -> None:
        self.open = True

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.open = False
        self._pool.lost(self)
        if self._listener is None:
            return
        if not self._got_head:
            if self._received:
                failure = Failure(ResponseFailed([reason]))
            else:
                failure = Failure(ResponseNeverReceived([reason]))
                if self._reused:
                    self._pool.close_idle()
                    failure = Failure(StaleConnectionError(failure))
            self._fail(failure)
        elif self._until_close:
            parts = self._parts
            self._done(b"".join(parts))
        else:
            self._fail(Failure(ResponseFailed([reason])))


class _Connecting:
    """The handle of an exchange waiting for a new connection."""

    def __init__(self, pool: HostPool, data: bytes, head_only: bool, limit: int,
                 listener: Listener) -> None:
        self._args = (data, head_only, limit)
        self._listener: Listener | None = listener
        self._connection: _Connection | None = None
        self._connecting = pool._endpoint.connect(pool._factory)
        self._connecting.addCallbacks(self._connected, self._failed)

    def _connected(self, connection: _Connection) -> None:
        listener = self._listener
        if listener is None:  # given up meanwhile
            connection.transport.loseConnection()
            return
        data, head_only, limit = self._args
        self._connection = connection.send(data, head_only, limit, False, listener)

    def _failed(self, failure: Failure) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.failed(failure)

    def abort(self) -> None:
        if self._connection is not None:
            self._connection.abort()
        else:
            self._connecting.cancel()  # the endpoint's failure reaches the listener


class _Deferreds:
    """The listener behind :meth:`HostPool.request`: a Deferred for the
    head (an :class:`UpstreamResponse`), one for the body."""

    def __init__(self) -> None:
        self.handle: Any = None
        self.response: Deferred = Deferred(self._cancel)
        self._body: Deferred | None = None

    def _cancel(self, d: Deferred) -> None:
        self.handle.abort()

    def head(self, code: int, headers: list[tuple[bytes, bytes]]) -> None:
        self._body = Deferred(self._cancel)
        self.response.callback(UpstreamResponse(code, headers, self._body))

    def done(self, body: bytes) -> None:
        if self._body is not None:
            self._body.callback(body)

    def failed(self, failure: Failure) -> None:
        d = self._body if self._body is not None else self.response
        if not d.called:
            d.errback(failure)


class _Factory(ClientFactory):
    noisy = False  # no "Starting factory" line per upstream connection

    def __init__(self, pool: HostPool) -> None:
        self._pool = pool

    def buildProtocol(self, addr: Any) -> _Connection:
        return _Connection(self._pool)


class HostPool:
    """The connections to one upstream base URL from one egress address,
    and what every request to it shares, computed once."""

    def __init__(self, reactor: Any, base: str, *, tls_policy: Any = None,
                 connect_timeout: float = 5.0, bind_address: str | None = None,
                 max_idle: int = 32, idle_limit: float = POOL_IDLE_LIMIT,
                 endpoint: Any = None) -> None:
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base}")
        self._reactor = reactor
        self._idle: list[_Connection] = []  # oldest first
        self._sweeper: Any = None
        self._max_idle = max_idle
        self._idle_limit = idle_limit
        host = parts.hostname
        ascii_host = host.encode("idna") if not host.isascii() else host.encode("ascii")
        default = 443 if parts.scheme == "https" else 80
        port = parts.port or default
        if ":" in host:  # an IPv6 literal
            ascii_host = b"[" + ascii_host + b"]"
        netloc = ascii_host if port == default else b"%s:%d" % (ascii_host, port)
        self.prefix = parts.path.rstrip("/").encode("ascii")
        self.host_line = b"Host: " + netloc + b"\r\n"
        # the rest of the request line and the headers every request carries
        self.version_host = b" HTTP/1.1\r\n" + self.host_line + b"Accept-Encoding: gzip\r\n"
        if endpoint is None:
            bare = ascii_host.strip(b"[]")
            endpoint = HostnameEndpoint(reactor, bare, port, timeout=connect_timeout,
                                        bindAddress=(bind_address, 0) if bind_address else None)
            if parts.scheme == "https":
                endpoint = wrapClientTLS(tls_policy.creatorForNetloc(bare, port), endpoint)
        self._endpoint = endpoint
        self._factory = _Factory(self)

    def start(self, method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]],
              body: bytes | None, limit: int, listener: Listener) -> Any:
        """Send ``method`` ``prefix + target`` with ``headers`` (already
        filtered) and ``body``; ``listener`` hears the response. Returns the
        exchange's handle: its ``abort()`` gives the exchange up (the
        listener then hears ``failed``)."""
        lines = [method, b" ", self.prefix, target, self.version_host]
        for name, value in headers:
            lines += (name, b": ", value, b"\r\n")
        if body is not None:
            lines += (b"Content-Length: ", b"%d" % len(body), b"\r\n\r\n", body)
        else:
            lines.append(b"\r\n")
        data = b"".join(lines)
        head_only = method == b"HEAD"
        idle = self._idle
        if idle:
            now = self._reactor.seconds()
            while idle:
                connection = idle.pop()  # the most recently used
                if connection.open and now < connection.idle_until:
                    return connection.send(data, head_only, limit, True, listener)
                connection.transport.loseConnection()
        return _Connecting(self, data, head_only, limit, listener)

    def request(self, method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]],
                body: bytes | None, limit: int) -> Deferred:
        """:meth:`start` with Deferreds: one firing with an
        :class:`UpstreamResponse` when the response head has arrived."""
        listener = _Deferreds()
        listener.handle = self.start(method, target, headers, body, limit, listener)
        return listener.response

    def put(self, connection: _Connection) -> None:
        """A connection whose exchange is over and may be reused."""
        if len(self._idle) >= self._max_idle:
            self._idle.pop(0).transport.loseConnection()  # the oldest
        connection.idle_until = self._reactor.seconds() + self._idle_limit
        self._idle.append(connection)  # so ``_idle`` is in order of idle_until
        if self._sweeper is None:
            self._sweeper = self._reactor.callLater(self._idle_limit, self._sweep)

    def _sweep(self) -> None:
        """Close the connections idle for ``idle_limit``; one timer for the
        pool, not one per connection and request."""
        self._sweeper = None
        now = self._reactor.seconds()
        while self._idle and self._idle[0].idle_until <= now:
            self._idle.pop(0).transport.loseConnection()
        if self._idle:
            self._sweeper = self._reactor.callLater(self._idle[0].idle_until - now,
                                                    self._sweep)

    def lost(self, connection: _Connection) -> None:
        if connection in self._idle:
            self._idle.remove(connection)

    def close_idle(self) -> None:
        """Close every idle connection."""
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.transport.loseConnection()

    def close(self) -> Deferred:
        """Abort every idle connection (at shutdown)."""
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.transport.abortConnection()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        return succeed(None)
