"""The fast path: request heads parsed by httptools, hits answered before
the chain, everything else left to twisted.web.

:class:`FastChannel` is the hardened channel (``bnproxy.server.channel``)
with one more way in. When the connection is between requests and a read
holds complete request heads that are plainly safe — ``GET`` or ``HEAD``,
HTTP/1.1, origin-form, visible ASCII, no body or framing header
(``Content-Length``, ``Transfer-Encoding``, ``Expect``, ``Upgrade``,
``Connection`` other than ``keep-alive``), no folded or bare-LF line, within
the channel's header count and size caps, accepted by httptools (llhttp,
no leniency) and not addressed to an admin resource — each is answered
without a twisted.web ``Request``: no line-by-line parsing, no ``Headers``
objects, no resource traversal, the ``Date`` header formatted once a second.
A head seen before (byte for byte, and naming nothing private) is not parsed
again.

A ``GET`` is first offered to the middlewares' fast path
(``ForwardingResource.answer_fast``; ``IFastPathSafe`` in
``bnproxy.chain.interfaces``): when every middleware on the way declares it,
a cache or stream hit is looked up directly, recorded as the chain records
it (the access line, the ledger, the metrics, the cache's and streams'
counters), and written from a pre-serialised head in one ``send`` (a large
body beside it, ``sendmsg``) when nothing is queued on the connection. A
middleware that does not declare it sees the request: it goes on, as does
every miss and every other request, through the forwarding resource with a
light request object (:class:`FastRequest`): the chain called exactly as
for a twisted.web request (routing, client address, allowlist, cache,
streams, access line, ledger, metrics, in-flight count for the drain).

A read that holds anything else (a partial head, a body, one unsafe head
among safe ones), and every read on a connection in the middle of a
twisted.web request, goes to the hardened channel whole and untouched, so each
refusal, limit and deadline is the hardened channel's own. The bytes
written are twisted.web's on every path (differential tests hold them
equal, ``Date`` aside). An answer that is not ready at once (forwarded
upstream) pauses reading as twisted.web does; the connection goes on when
it is written.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_to_bytes

import httptools
from twisted.internet.defer import Deferred
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import NO_BODY_CODES, RESPONSES, datetimeToString

from bnproxy.binance.privacy import PRIVATE_HEADERS, PRIVATE_PARAMS
from bnproxy.chain.messages import INTERNAL, HeaderPairs, ProxyResponse
from bnproxy.server.channel import HardenedChannel
from bnproxy.server.forwarding import serialised_head
from bnproxy.twistedcompat import plain_tcp, send_now

_log = Logger(namespace="bnproxy.server.fastpath")

_base_data = HardenedChannel.dataReceived
# Request headers that change framing or the connection: left to twisted.web.
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"expect", b"upgrade",
                      b"te", b"trailer", b"http2-settings"})
_VISIBLE = bytes(range(0x21, 0x7F))
# A head naming anything private is parsed each time, never kept.
_PRIVATE = re.compile(b"|".join(re.escape(n) for n in (
    *PRIVATE_HEADERS, *(p.encode() for p in PRIVATE_PARAMS), b"%")), re.IGNORECASE)
_HEADS_REMEMBERED = 1024
_HEAD_KEPT_BELOW = 2048  # bytes: a larger head is parsed each time (the memo stays ~2 MB)
_COPY_BELOW = 8192  # a body this small is joined to its head; a larger one sent beside it
# serialised_head of answers by (status, headers, source); the last answer
# written, the second of its Date, and its bytes (the head, with the body
# when small; the large body)
_ANSWER_HEADS: dict[tuple, tuple[bytes, bytes, bytes]] = {}
_LAST: list[Any] = [None, None, b"", b""]


class _Head:
    """httptools callbacks for one request head; once parsed and found
    safe, what the fast path reads of it (kept for heads seen again)."""

    __slots__ = ("by_name", "complete", "headers", "method", "pairs", "raw", "url")

    def __init__(self) -> None:
        self.raw = b""
        self.method = b""
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False
        # the headers by lower-case name in order of first appearance, as
        # twisted.web's ``Headers`` groups them; and as the forwarding
        # resource passes them on (flat, the INTERNAL marker dropped)
        self.by_name: dict[bytes, list[bytes]] = {}
        self.pairs: HeaderPairs = ()

    def done(self) -> None:
        by_name = self.by_name
        for name, value in self.headers:
            lower = name.lower()
            values = by_name.get(lower)
            if values is None:
                by_name[lower] = [value.strip(b" \t")]
            else:
                values.append(value.strip(b" \t"))
        self.pairs = tuple((k, v) for k, vs in by_name.items() if k != INTERNAL for v in vs)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_message_complete(self) -> None:
        self.complete = True


class _RequestHeaders:
    """What the forwarding resource reads of ``Request.requestHeaders``:
    the headers by name in order of first appearance, as twisted.web's
    ``Headers`` groups them."""

    __slots__ = ("_by_name",)

    def __init__(self, by_name: dict[bytes, list[bytes]]) -> None:
        self._by_name = by_name

    def getAllRawHeaders(self) -> Any:
        return self._by_name.items()


class _ResponseHeaders:
    __slots__ = ("_rawHeaders",)

    def __init__(self, raw: dict[bytes, list[bytes]]) -> None:
        self._rawHeaders = raw


class _NoContent:
    """A request without a body: ``content`` that reads empty."""

    @staticmethod
    def seek(offset: int, whence: int = 0) -> int:
        return 0

    @staticmethod
    def read(size: int = -1) -> bytes:
        return b""


_NO_CONTENT = _NoContent()


class FastRequest:
    """The part of twisted.web's ``Request`` the forwarding resource and
    ``write_response`` use, writing the bytes twisted.web would."""

    clientproto = b"HTTP/1.1"
    defaultContentType: bytes | None = b"text/html"
    content: Any = _NO_CONTENT
    code = 200
    code_message = b"OK"

    def __init__(self, channel: FastChannel, method: bytes, uri: bytes,
                 headers: dict[bytes, list[bytes]], date: bytes) -> None:
        self.channel = channel
        self.method = method
        self.uri = uri
        self.requestHeaders = _RequestHeaders(headers)
        self.responseHeaders = _ResponseHeaders({b"Server": [server.version],
                                                 b"Date": [date]})
        self.finished = False
        self._disconnected = False
        self._started = False
        self._finish: list[Deferred] = []
        self._answer: Deferred | None = None  # cancel_if_lost

    def getClientAddress(self) -> Any:
        return self.channel.peer

    def notifyFinish(self) -> Deferred:
        d: Deferred = Deferred()
        self._finish.append(d)
        return d

    def cancel_if_lost(self, answer: Deferred) -> None:
        """Cancel ``answer`` if the connection is lost before the request
        is finished: what ``notifyFinish().addErrback(cancel)`` does,
        without a Deferred of its own."""
        self._answer = answer

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        self.code = code
        self.code_message = message or RESPONSES.get(code, b"Unknown Status")

    def write(self, data: bytes) -> None:
        if self._disconnected or self.finished:
            return
        if self._started:
            if data and self.method != b"HEAD" and self.code not in NO_BODY_CODES:
                self.channel._send(data)
            return
        self._started = True
        raw = self.responseHeaders._rawHeaders
        code = self.code
        if (self.defaultContentType is not None and code not in (304, 204)
                and b"Content-Type" not in raw and raw.get(b"Content-Length") != [b"0"]):
            raw[b"Content-Type"] = [self.defaultContentType]
        if raw.get(b"Content-Length") is None and self.method != b"HEAD" \
                and code not in NO_BODY_CODES:
            # twisted.web would send chunks; the forwarding resource always
            # sets a length, so this is not expected: close after the body.
            raw[b"Connection"] = [b"close"]
            self.channel.persistent = False
        lines = [b"HTTP/1.1 %d %s\r\n" % (code, self.code_message)]
        for name, values in raw.items():
            for value in values:
                lines.append(b"%s: %s\r\n" % (name, value))
        lines.append(b"\r\n")
        send = self.channel._send  # at once when nothing waits (a plain TCP connection)
        if not data or self.method == b"HEAD" or code in NO_BODY_CODES:
            send(b"".join(lines))
        elif len(data) < 8192:  # one write; a large body is not copied into the head
            lines.append(data)
            send(b"".join(lines))
        else:
            send(b"".join(lines), data)

    def finish(self) -> None:
        if self._disconnected or self.finished:
            return
        if not self._started:
            self.write(b"")
        self.finished = True
        self._answer = None
        finished, self._finish = self._finish, []
        for d in finished:
            d.callback(None)
        self.channel.fast_done(self)

    def lost(self, reason: Failure) -> None:
        self._disconnected = True
        finished, self._finish = self._finish, []
        for d in finished:
            d.errback(reason)
        answer, self._answer = self._answer, None
        if answer is not None:
            try:
                answer.cancel()
            except Exception:  # a canceller's fault: the connection still ends cleanly
                _log.failure("cancelling the answer to a bot that went away")


class FastChannel(HardenedChannel):
    """The hardened channel with the fast path in front (see the module)."""

    site: Any  # set by the Site that builds it
    fast = True  # False: every request through twisted.web (the differential tests)
    fast_served = 0  # requests answered by the fast path on this connection
    fast_hits = 0  # of which answered before the chain (hits: IFastPathSafe)
    peer: Any = None
    _forward: Any = None
    _pending: FastRequest | None = None
    _answering = False  # an answer on its way (forwarded): the connection is not idle
    _paused = False  # reading paused: the client sent more while an answer was on its way
    _held: bytes = b""
    _date_second = -1
    _date = b""
    _heads: dict[bytes, _Head] | None = None  # safe heads seen, by their bytes
    _direct = False  # a plain TCP transport: sent at once when nothing waits (_send)
    _client: str | None = None  # the client, when the peer alone names it
    _active: float | None = None  # the last read the fast path took (see timeoutConnection)

    def connectionMade(self) -> None:
        super().connectionMade()
        self.peer = self.transport.getPeer()
        self._direct = plain_tcp(self.transport)
        # the proxy's forwarding resource behind its root; without one (another
        # resource tree) every request goes through twisted.web
        self._forward = getattr(getattr(self, "site", None) and self.site.resource,
                                "_forward", None)
        if self._forward is None:
            self.fast = False
            return
        self._client = self._forward.client_of_peer(self.peer)
        heads = getattr(self.site, "fast_heads", None)  # per site: its own limits judged them
        if heads is None:
            heads = self.site.fast_heads = {}
        self._heads = heads

    def dataReceived(self, data: bytes) -> None:
        if self._pending is not None:  # an answer on its way: keep the rest for after
            self._held += data
            # bounded: what a pipelining client may send ahead is one largest
            # request (head and body); more is refused as twisted.web would
            if len(self._held) > self.limits.max_body + self.totalHeadersSize:
                _log.info("fast path: {peer} sent over a request ahead; closed",
                          peer=self.peer)
                self._held = b""
                self.transport.abortConnection()
            elif not self._paused:  # as twisted.web does: no more reading meanwhile
                self._paused = True
                self._networkProducer.pauseProducing()
            return
        # between requests (the hardened channel's state, as its own
        # dataReceived would find it), or the read is the channel's
        if not self.fast or self._handlingRequest or not self.line_mode or self._failed \
                or self._buffer or self._receivedHeaderSize or self._tail or self.requests \
                or not self.persistent:
            return _base_data(self, data)
        head = self._heads.get(data)  # type: ignore[union-attr]  # set when fast
        if head is not None:  # the common read: one whole head seen before
            self._active = now = self.site.reactor.seconds()  # (resetTimeout, lazily)
            if head.method == b"GET":  # a hit, answered here (_serve, inline)
                try:
                    answer = self._forward.answer_fast(head.url, head.pairs, self.peer,
                                                       self._client, now)
                except Exception:
                    return self._fast_failed(head)
                if answer is not None:
                    self.fast_served += 1
                    self.fast_hits += 1
                    self._write_answer(answer, now)
                    return None
            prepared = self._forward.unanswered if head.method == b"GET" else None
            if self._serve(head, False, prepared) and not self.persistent:
                self.transport.loseConnection()
            return None
        heads = []
        start = 0
        known = self._heads or {}
        while start < len(data):  # the whole read must be safe heads, or none is taken
            end = data.find(b"\r\n\r\n", start)
            if end < 0:
                return _base_data(self, data)
            raw = data[start:end + 4]
            head = known.get(raw) or self._safe_head(raw)
            if head is None:
                return _base_data(self, data)
            heads.append(head)
            start = end + 4
        self._active = self.site.reactor.seconds()  # (resetTimeout, lazily)
        for i, head in enumerate(heads):
            if not self._serve(head):  # not answered at once: the rest after it
                rest = heads[i + 1:]
                if rest:
                    self._held = b"".join(h.raw for h in rest)
                return
            if not self.persistent:
                self.transport.loseConnection()
            if self._failed or self.transport.disconnecting:
                return
        return None

    def _safe_head(self, raw: bytes) -> _Head | None:
        """The parsed head, or None if anything in it is for twisted.web to judge."""
        if len(raw) > min(self.totalHeadersSize, self.MAX_LENGTH) \
                or raw.count(b"\n") != raw.count(b"\r\n") \
                or raw.count(b"\r") != raw.count(b"\r\n"):
            return None
        if raw.find(b"\n ") >= 0 or raw.find(b"\n\t") >= 0:
            return None
        if raw.translate(None, _VISIBLE + b" \t\r\n"):
            return None  # control or non-ASCII bytes
        if not (raw.startswith(b"GET /") or raw.startswith(b"HEAD /")) \
                or raw.count(b" ", 0, raw.find(b"\r\n")) != 2:
            return None  # twisted.web splits the request line on single spaces
        head = _Head()
        parser = httptools.HttpRequestParser(head)
        try:
            parser.feed_data(raw)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            return None
        if not head.complete or parser.get_http_version() != "1.1" or parser.should_upgrade():
            return None
        if not parser.should_keep_alive() or len(head.headers) > self.maxHeaders:
            return None
        for name, value in head.headers:
            lower = name.lower()
            if lower in _FRAMING:
                return None
            if lower == b"connection" and value.strip(b" \t").lower() != b"keep-alive":
                return None
        url = head.url
        if not url.startswith(b"/") or url.find(b"#") >= 0 or url.find(b" ") >= 0:
            return None
        segment = url.split(b"?", 1)[0][1:].split(b"/", 1)[0]
        root = self.site.resource
        if unquote_to_bytes(segment) in getattr(root, "children", {}):
            return None  # an admin resource
        head.method = parser.get_method()
        head.raw = raw
        head.done()
        heads = self._heads
        if heads is not None and len(raw) < _HEAD_KEPT_BELOW \
                and _PRIVATE.search(raw) is None:  # never a secret kept
            if len(heads) >= _HEADS_REMEMBERED:
                heads.clear()
            heads[raw] = head
        return head

    def _fast_failed(self, head: _Head) -> None:
        """``answer_fast`` raised (it must not): logged, the connection ended."""
        # the path only: a signed query or a listenKey never reaches the log
        _log.failure("fast path: answering {path}", path=head.url.split(b"?", 1)[0])
        self.transport.abortConnection()

    def _date_now(self, now: int | None = None) -> bytes:
        """The Date value for second ``now`` (default: the clock's)."""
        if now is None:
            now = int(self.site.reactor.seconds())
        if now != self._date_second:
            type(self)._date_second = now
            type(self)._date = datetimeToString(now)
        return self._date

    def _serve(self, head: _Head, offer: bool = True, prepared: Any = None) -> bool:
        """Answer one safe request; True if it was answered at once.
        ``offer``: a GET is offered to the middlewares' fast path first
        (False: it was, and they gave no answer; ``prepared``: the
        ``ProxyRequest`` made for it then, if any, given to the chain)."""
        forward = self._forward
        if offer and head.method == b"GET":
            try:
                answer = forward.answer_fast(head.url, head.pairs, self.peer, self._client)
            except Exception:
                self._fast_failed(head)
                return False
            if answer is not None:  # a hit, answered before the chain
                self.fast_served += 1
                self.fast_hits += 1
                self._write_answer(answer)
                return True
            prepared = forward.unanswered
        # by_name copied: the forwarding resource's request may be changed
        request = FastRequest(self, head.method, head.url,
                              {k: list(vs) for k, vs in head.by_name.items()},
                              self._date_now())
        self._pending = request
        self.fast_served += 1
        try:
            if prepared is None:
                forward.render(request)
            else:  # routed, its client named and its ProxyRequest made: not again
                forward.render_request(request, prepared)
        except Exception:
            # the path only: a signed query or a listenKey never reaches the log
            _log.failure("fast path: answering {path}", path=head.url.split(b"?", 1)[0])
            self._pending = None
            self.transport.abortConnection()
            return False
        if request.finished:
            self._pending = None
            return True
        # As twisted.web does while a request is answered: no idle timeout
        # (``timeoutConnection`` waits), no reading. Reading is paused only
        # if the client sends more meanwhile (``dataReceived``): most
        # connections never do, and pausing and resuming cost two
        # ``epoll_ctl`` and the reactor's bookkeeping per forwarded request.
        self._answering = True
        return False

    def _write_answer(self, answer: ProxyResponse, now: float | None = None) -> None:
        """Write a GET's answer as twisted.web would (``write_response``):
        the head pre-serialised per distinct answer head, in one write; the
        last answer's bytes kept for its second (a hit between updates)."""
        second = int(self.site.reactor.seconds() if now is None else now)
        last = _LAST
        if answer is last[0] and second == last[1]:
            data, more = last[2], last[3]
        else:
            key = (answer.status, answer.headers, answer.source)
            parts = _ANSWER_HEADS.get(key)
            if parts is None:
                if len(_ANSWER_HEADS) >= _HEADS_REMEMBERED:
                    _ANSWER_HEADS.clear()
                parts = _ANSWER_HEADS[key] = serialised_head(answer)
            before, middle, after = parts
            body = answer.body
            date = self._date if second == self._date_second else self._date_now(second)
            length = b"%d" % len(body)
            if len(body) < _COPY_BELOW:
                data, more = b"".join((before, date, middle, length, after, body)), b""
            else:  # a large body is not copied behind its head
                data, more = b"".join((before, date, middle, length, after)), body
            last[:] = answer, second, data, more
        if self._direct:  # (_send, inline)
            send_now(self.transport, data, more)
        else:
            self.transport.write(data)
            if more:
                self.transport.write(more)

    def _send(self, data: bytes, more: bytes = b"") -> None:
        """``transport.write`` of ``data`` and ``more``, sent at once on a
        plain TCP connection with nothing queued (``twistedcompat.send_now``:
        no buffering until the next reactor turn, no two ``epoll_ctl``)."""
        if self._direct:
            send_now(self.transport, data, more)
        else:
            self.transport.write(data)
            if more:
                self.transport.write(more)

    def timeoutConnection(self) -> None:
        """The keep-alive timeout, counted from the last read the fast path
        took (``_active``: its reads mark the time instead of moving the
        timer each); re-armed for what is left of it, or the channel's."""
        period = self.timeOut
        if self._answering and period is not None:  # an answer on its way: not idle
            self._active = None
            self.setTimeout(period)
            return
        active, self._active = self._active, None
        if active is not None and period is not None:
            left = active + period - self.site.reactor.seconds()
            if left > 0:
                self.setTimeout(left)  # (TimeoutMixin's timer has fired: a new one)
                self.timeOut = period
                return
        super().timeoutConnection()

    def fast_done(self, request: FastRequest) -> None:
        """A fast answer has been written."""
        if self._pending is not request:
            return
        self._pending = None
        if not self._answering:
            return  # answered at once, inside dataReceived
        self._answering = False
        self._active = self.site.reactor.seconds()  # idle from now (timeoutConnection)
        if self._paused:
            self._paused = False
            if not self._waitingForTransport:
                self._networkProducer.resumeProducing()
        if not self.persistent:
            self.transport.loseConnection()
            return
        held, self._held = self._held, b""
        if held:
            self.dataReceived(held)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.lost(reason)
        super().connectionLost(reason)
