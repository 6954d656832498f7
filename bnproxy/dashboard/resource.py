"""The dashboard's twisted.web resources.

- ``/dashboard``: the page (``/dashboard/`` redirects there);
- ``/dashboard/state``: the state document (``bnproxy.dashboard.feed``);
- ``/dashboard/events``: server-sent events, one ``state`` event a second
  (the bytes the feed encoded once for every open page), with ``retry:`` so
  the browser's ``EventSource`` reconnects by itself after a restart;
- ``/dashboard/dashboard.js``, ``dashboard.css``, ``vendor/…``: the page's
  static files, read once from the package (no external asset).

``mount_dashboard(root, feed, guard)`` puts them under ``root`` behind
``guard`` (the admin allowlist).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from twisted.web import server
from twisted.web.resource import IResource, Resource

from bnproxy.dashboard.feed import DashboardFeed

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


class EventsResource(Resource):
    """``/dashboard/events``: ``text/event-stream``, one ``state`` event a
    second, the newest at once on connecting."""

    isLeaf = True

    def __init__(self, feed: DashboardFeed) -> None:
        super().__init__()
        self._feed = feed
        self.open = 0

    def render_GET(self, request):
        _common_headers(request, b"text/event-stream")
        request.setHeader(b"x-accel-buffering", b"no")  # nginx: do not buffer
        request.write(b"retry: %d\n\n" % RETRY_MS)
        if self._feed.event:
            request.write(self._feed.event)

        def send(event: bytes) -> None:
            request.write(event)

        ended: list[bool] = []

        def close() -> None:
            if not ended:
                request.finish()

        unsubscribe = self._feed.subscribe(send, close)
        self.open += 1

        def gone(_):
            ended.append(True)
            unsubscribe()
            self.open -= 1

        request.notifyFinish().addBoth(gone)
        return server.NOT_DONE_YET


class DashboardResource(Resource):
    """``/dashboard`` and its children."""

    def __init__(self, feed: DashboardFeed) -> None:
        super().__init__()
        self._page = _Static(_read("index.html"), b"text/html; charset=utf-8")
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
        return self._page.render_GET(request)


def mount_dashboard(root: Resource, feed: DashboardFeed,
                    guard: Callable[[IResource], IResource] = lambda r: r) -> DashboardResource:
    """Put ``/dashboard`` under ``root``, wrapped by ``guard`` (for example
    ``lambda r: AdminGuard(r, allow, resolver)``); returns the resource."""
    dashboard = DashboardResource(feed)
    root.putChild(b"dashboard", guard(dashboard))
    return dashboard
