"""The dashboard's twisted.web resources.

- ``/dashboard``: the page, its first paint rendered from the state
  (``/dashboard/`` redirects there);
- ``/dashboard/state``: the state document (``bnproxy.dashboard.feed``);
- ``/dashboard/events``: server-sent events, one ``state`` event a second
  (the bytes the feed encoded once for every open page), with ``retry:`` so
  the browser's ``EventSource`` reconnects by itself after a restart;
  bounded in number (in all and per address) and in unsent bytes; after the
  first, each event is what changed (a merge patch), gzip-compressed once for
  every page that accepts it;
- ``/dashboard/dashboard.js``, ``dashboard.css``, ``vendor/…``: the page's
  static files, read once from the package (no external asset).

``mount_dashboard(root, feed, guard)`` puts them under ``root`` behind
``guard`` (the admin allowlist).
"""

from __future__ import annotations

import os
import socket
import zlib
from collections.abc import Callable

from twisted.internet.interfaces import IPushProducer
from twisted.web import server
from twisted.web.resource import IResource, Resource
from zope.interface import implementer

from bnproxy.binance.errors import TOO_MANY_REQUESTS, error_body
from bnproxy.dashboard.feed import DashboardFeed
from bnproxy.dashboard.firstpaint import first_paint

HERE = os.path.dirname(os.path.abspath(__file__))
STATIC = {
    b"dashboard.js": ("dashboard.js", b"text/javascript; charset=utf-8"),
    b"dashboard.css": ("dashboard.css", b"text/css; charset=utf-8"),
}
VENDOR = {
    b"uPlot.iife.min.js": ("vendor/uPlot.iife.min.js", b"text/javascript; charset=utf-8"),
    b"uPlot.min.css": ("vendor/uPlot.min.css", b"text/css; charset=utf-8"),
    b"LICENSE": ("vendor/LICENSE", b"text/plain; charset=utf-8"),
    b"VERSION": ("vendor/VERSION", b"text/plain; charset=utf-8"),
}
RETRY_MS = 1000
MAX_STREAMS = 32  # open event streams in all (a tab holds one)
MAX_STREAMS_PER_ADDRESS = 4
SEND_BUFFER = 16 * 1024  # bytes the kernel may hold unsent per event stream
UNSENT = 32 * 1024  # bytes waiting in the transport (past the first event) closing a stream
CSP = (b"default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       b"connect-src 'self'; frame-ancestors 'none'")


def _read(name: str) -> bytes:
    with open(os.path.join(HERE, name), "rb") as f:
        return f.read()


def _common_headers(request, content_type: bytes) -> None:
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"cache-control", b"no-store")


class _Static(Resource):
    isLeaf = True

    def __init__(self, body: bytes, content_type: bytes) -> None:
        super().__init__()
        self._body = body
        self._type = content_type

    def render_GET(self, request):
        _common_headers(request, self._type)
        if self._type.startswith(b"text/html"):
            request.setHeader(b"content-security-policy", CSP)
        return self._body


class _Redirect(Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setResponseCode(302)
        request.setHeader(b"location", b"../dashboard")
        return b""


class StateResource(Resource):
    """``/dashboard/state``: the state document as JSON."""

    isLeaf = True

    def __init__(self, feed: DashboardFeed) -> None:
        super().__init__()
        self._feed = feed

    def render_GET(self, request):
        _common_headers(request, b"application/json")
        return self._feed.state_bytes()


@implementer(IPushProducer)
class _Reader:
    """One event stream's producer: the transport pauses it when more than
    its buffer (``UNSENT``) waits unsent, that is, when the page stopped
    reading; the stream is then closed (the events it missed are stale
    anyway, and a page that reads again reconnects by itself)."""

    def __init__(self, request) -> None:
        self._request = request
        self.closed = False

    def pauseProducing(self) -> None:
        self.close()

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        transport = getattr(getattr(self._request, "channel", None), "transport", None)
        if transport is not None:
            transport.abortConnection()  # what waits unsent is dropped now


class EventsResource(Resource):
    """``/dashboard/events``: ``text/event-stream``, one ``state`` event a
    second, the newest at once on connecting.

    Bounded: at most ``max_streams`` open in all and ``per_address`` from
    one address (others get 429 with Retry-After); each stream's kernel send
    buffer is small (``SEND_BUFFER``) and the stream is closed as soon as
    more than ``UNSENT`` bytes wait in the transport besides the first
    event (the whole document, written at once: a page is not closed for
    the size of what it has not had a chance to read)."""

    isLeaf = True

    def __init__(self, feed: DashboardFeed, max_streams: int = MAX_STREAMS,
                 per_address: int = MAX_STREAMS_PER_ADDRESS) -> None:
        super().__init__()
        self._feed = feed
        self._max = max_streams
        self._per_address = per_address
        self._by_address: dict[str, int] = {}
        self.open = 0
        self.closed_unread = 0  # streams closed because the page stopped reading
        # (previous event, event) -> deflated bytes, for the events of this tick
        self._deflated_now: dict[tuple[bytes, bytes], bytes] = {}

    def _deflated(self, previous: bytes, event: bytes) -> bytes:
        """``deflated(event, previous)``, once for every page that read
        the same previous event (all but those that joined this second)."""
        key = (previous, event)
        out = self._deflated_now.get(key)
        if out is None:
            if len(self._deflated_now) >= 4 or all(e is not event
                                                   for _, e in self._deflated_now):
                self._deflated_now.clear()
            out = self._deflated_now[key] = deflated(event, previous)
        return out

    def render_GET(self, request):
        address = str(getattr(request.getClientAddress(), "host", None) or "unix")
        if self.open >= self._max or self._by_address.get(address, 0) >= self._per_address:
            request.setResponseCode(429)
            _common_headers(request, b"application/json;charset=UTF-8")
            request.setHeader(b"retry-after", b"10")
            return error_body(TOO_MANY_REQUESTS, (
                f"bnproxy: too many dashboard event streams open ({self._max} in all, "
                f"{self._per_address} per address); close a tab"))
        _common_headers(request, b"text/event-stream")
        request.setHeader(b"x-accel-buffering", b"no")  # nginx: do not buffer
        _small_send_buffer(request, UNSENT + len(self._feed.event))
        reader = _Reader(request)
        request.registerProducer(reader, True)
        gzip = _accepts_gzip(request)
        last = [self._feed.event]  # what this page has just read, uncompressed
        if gzip:
            request.setHeader(b"content-encoding", b"gzip")
            request.setHeader(b"vary", b"accept-encoding")
            request.write(GZIP_HEADER + deflated(b"retry: %d\n\n%s" % (
                RETRY_MS, self._feed.event)))
        else:
            request.write(b"retry: %d\n\n" % RETRY_MS)
            if self._feed.event:
                request.write(self._feed.event)

        def send(event: bytes) -> None:
            if not reader.closed:
                request.write(self._deflated(last[0], event) if gzip else event)
                last[0] = event

        ended: list[bool] = []

        def close() -> None:
            if not ended:
                request.unregisterProducer()
                request.finish()

        unsubscribe = self._feed.subscribe(send, close)
        self.open += 1
        self._by_address[address] = self._by_address.get(address, 0) + 1

        def gone(_):
            ended.append(True)
            unsubscribe()
            self.open -= 1
            self.closed_unread += reader.closed
            left = self._by_address.pop(address, 1) - 1
            if left:
                self._by_address[address] = left

        request.notifyFinish().addBoth(gone)
        return server.NOT_DONE_YET


GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, no time


def deflated(data: bytes, previous: bytes = b"") -> bytes:
    """``data`` as deflate blocks of their own (a fresh compressor, ended
    with a sync flush, never the final block): any number of them, from any
    compressor, after ``GZIP_HEADER`` make one gzip stream a browser reads as
    it comes. ``previous``: the bytes the reader decoded just before (its
    window holds them), given as the compressor's dictionary, so an event
    much like the last one costs little. So an event is compressed once for
    every open page that read the same previous event."""
    compressor = (zlib.compressobj(6, zlib.DEFLATED, -15, zdict=previous[-32768:])
                  if previous else zlib.compressobj(6, zlib.DEFLATED, -15))
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


def _accepts_gzip(request) -> bool:
    accepted = b",".join(request.requestHeaders.getRawHeaders(b"accept-encoding") or ())
    for item in accepted.lower().split(b","):
        name, _, params = item.strip().partition(b";")
        if name.strip() == b"gzip":
            q = params.strip()
            return not (q.startswith(b"q=") and q[2:].strip() in (b"0", b"0.0", b"0.00",
                                                                  b"0.000"))
    return False


def _small_send_buffer(request, unsent: int = UNSENT) -> None:
    """The kernel keeps at most about ``SEND_BUFFER`` unsent bytes of this
    stream (without it, a page that stops reading holds megabytes there),
    and the transport pauses (closes, ``_Reader``) past ``unsent``."""
    transport = getattr(getattr(request, "channel", None), "transport", None)
    if transport is not None and hasattr(transport, "bufferSize"):
        transport.bufferSize = unsent
    handle = getattr(transport, "getHandle", None)
    sock = handle() if handle is not None else None
    if isinstance(sock, socket.socket):
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        except OSError:
            pass


class DashboardResource(Resource):
    """``/dashboard`` and its children."""

    def __init__(self, feed: DashboardFeed) -> None:
        super().__init__()
        self._feed = feed
        self._template = _read("index.html").decode("utf-8")
        self.putChild(b"", _Redirect())
        self.putChild(b"state", StateResource(feed))
        self.events = EventsResource(feed)
        self.putChild(b"events", self.events)
        for name, (path, ctype) in STATIC.items():
            self.putChild(name, _Static(_read(path), ctype))
        vendor = Resource()
        for name, (path, ctype) in VENDOR.items():
            vendor.putChild(name, _Static(_read(path), ctype))
        self.putChild(b"vendor", vendor)

    def render_GET(self, request):
        """The page, its first paint rendered from the newest state
        (``bnproxy.dashboard.firstpaint``): readable without JavaScript."""
        _common_headers(request, b"text/html; charset=utf-8")
        request.setHeader(b"content-security-policy", CSP)
        if not self._feed.document:
            self._feed.tick()
        return first_paint(self._template, self._feed.document)


def mount_dashboard(root: Resource, feed: DashboardFeed,
                    guard: Callable[[IResource], IResource] = lambda r: r) -> DashboardResource:
    """Put ``/dashboard`` under ``root``, wrapped by ``guard`` (for example
    ``lambda r: AdminGuard(r, allow, resolver)``); returns the resource."""
    dashboard = DashboardResource(feed)
    root.putChild(b"dashboard", guard(dashboard))
    return dashboard
