"""Depth: one ``OrderBook`` per (market, symbol) kept by its diff stream,
built from the smallest snapshot whose weight band holds the asked limit
with headroom, and grown (a larger snapshot) when a bot asks for more.

A new book costs one upstream request: the first bot requests for it,
whatever their limits up to the snapshot's, wait for the book's snapshot
(taken once the stream delivered its first event, or after
``FIRST_EVENT_WAIT`` at the latest) and are answered from it; while a
snapshot is in flight, requests it covers wait for it too. A wait ends by
``WAIT_DEADLINE``: the request then goes on, as does any the snapshot
cannot answer.

Levels are exact only inside the price range a snapshot covered, so when
the price walks out of it (or a bot asks more levels than it held), the
book is taken again from a new snapshot, which the asking requests wait on,
rather than forwarding every request for it until the price comes back.

While a book's stream is stale (a book that was live once), its requests
are answered from one own upstream request per book at a time (purpose
``fallback``) at the largest limit that costs what the asked one costs
(spot: any of 1-100 -> 100, weight 5; USD-M: 5-50 -> 50, weight 2; 100 ->
100, weight 5), sized by the largest limit asked since the previous one:
every smaller limit is its top levels, the bytes Binance gives for that
limit at the same ``lastUpdateId``. That answer is reused for
``FALLBACK_TTL`` (the cache's depth TTL). The request is the proxy's own,
inside half its own-weight share (``Refetcher``; the other half stays for
the snapshots that make books live again); refused (share reached,
backing off), or answered with anything but a usable 200, the bot
requests go on down the chain as before. Once the stream delivers again
the book resyncs and the fallback is no longer used."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from bnproxy.binance.marketdata import (
    DEPTH,
    DEPTH_DEFAULT_LIMIT,
    depth_snapshot_limit,
    depth_stream,
    rest_path,
)
from bnproxy.chain.compose import Answer
from bnproxy.chain.messages import JSON, ProxyRequest, ProxyResponse
from bnproxy.middleware.streams.orderbook import LIVE, OrderBook
from bnproxy.middleware.streams.responders import (
    Answers,
    Tools,
    parse_int,
    remember,
    stream_answer,
)
from bnproxy.middleware.streams.responders.exchangeinfo import ExchangeInfoResponder
from bnproxy.middleware.streams.responders.waiting import Waiting, answered, go_on

Key = tuple[str, str]  # (market, symbol)

FIRST_EVENT_WAIT = 2.0  # seconds a new book's snapshot waits for the stream's first event
FALLBACK = "fallback"  # the own-weight purpose of a stale book's shared request
FALLBACK_TTL = 1.0  # seconds a stale book's fallback answer is reused (the cache's depth TTL)
FALLBACK_SHARE = 0.5  # of the own-weight share: the rest stays for the resyncs


def _snapshot_of(response: ProxyResponse | None) -> Any:
    """The decoded body of a 200 depth answer, or None."""
    if response is None or response.status != 200:
        return None
    try:
        return orjson.loads(response.body)
    except orjson.JSONDecodeError:
        return None


class DepthResponder:
    def __init__(self, tools: Tools, info: ExchangeInfoResponder) -> None:
        self.tools = tools
        self.info = info
        self.books: dict[Key, OrderBook] = {}
        self.asked: dict[Key, int] = {}  # the largest limit bots asked
        self.snapshot_size: dict[Key, int] = {}  # levels of the book's last snapshot
        self.waiting = Waiting(tools.clock)  # bot requests waiting for a snapshot
        self._fetching: dict[Key, int] = {}  # the size of the snapshot in flight
        self._pending: dict[Key, tuple[Any, int]] = {}  # a snapshot taken before any event
        self._early: dict[Key, Any] = {}  # the timer of a new book's snapshot
        # (market, raw query) -> (book key, limit, stream, freshness bounds) of
        # queries a book may answer
        self._queries: dict[tuple[str, bytes], tuple[Key, int, str, float, float | None]] = {}
        self._answers = Answers()
        # stale books: the last fallback answer (when, the book it built),
        # the size of the one in flight, the largest limit asked since one went
        self._held: dict[Key, tuple[float, OrderBook]] = {}
        self._fb_fetching: dict[Key, int] = {}
        self._fb_due: dict[Key, Any] = {}  # the timer sending the next one
        self._fb_asked: dict[Key, int] = {}

    def _asked(self, market: str, p: dict[str, str]) -> tuple[Key, int] | None:
        """(book key, limit) of a request a book may answer, or None."""
        symbol = p.get("symbol")
        if not symbol or set(p) - {"symbol", "limit"}:
            return None
        m = self.tools.markets[market]
        limit = parse_int(p.get("limit", str(DEPTH_DEFAULT_LIMIT[market])))
        if limit is None or not (limit in m.depth_limits if m.depth_limits is not None
                                 else 1 <= limit <= m.depth_max):
            return None
        return (market, symbol), limit

    def hit(self, request: ProxyRequest, p: dict[str, str]) -> ProxyResponse | None:
        """The answer from a live, fresh book that holds ``limit`` exact
        levels, with what answering it does (the stream touched, the largest
        limit asked); None, having done nothing, otherwise. ``handle`` answers
        through it: one code path for the bytes."""
        memo = (request.market, request.query)
        asked = self._queries.get(memo)
        if asked is None:  # parsed once per distinct query
            checked = self._asked(request.market, p)
            if checked is None:
                return None
            stream = depth_stream(checked[0][1])
            settings = self.tools.settings
            asked = remember(self._queries, memo, (*checked, stream, settings.stale_depth,
                                                   settings.quiet_limit(stream)))
        key, limit, stream, max_age, quiet = asked
        book = self.books.get(key)
        if book is None or book.state != LIVE or \
                not self.tools.subscriptions.fresh(key[0], stream, max_age, quiet):
            return None  # (``_fresh``, its bounds computed once per query)
        body = book.response(limit)
        if body is None:
            return None
        self.tools.subscriptions.touch(key[0], stream)
        if limit > self.asked.get(key, 0):
            self.asked[key] = limit
        return self._answers.of((key, limit), body)

    def handle(self, request: ProxyRequest, p: dict[str, str], next: Callable) -> Answer:
        answer = self.hit(request, p)
        if answer is not None:
            return answer
        market = request.market
        asked = self._asked(market, p)
        if asked is None:
            return next(request)
        key, limit = asked
        symbol = key[1]
        book = self.books.get(key)
        if book is None:
            listed = self.info.listed(market, symbol)
            if listed is False:
                return next(request)  # Binance answers an unknown symbol; no subscription
            pair = symbol.split("_")[0] if market == "coinm" else None
            self.books[key] = OrderBook(market, symbol, pair)
            self.asked[key] = limit
            if listed is None:  # subscribe once the market's symbols are known
                self.info.when_known(market).addCallback(self._decide, key, request.client)
            else:
                self._decide(None, key, request.client)
            if key not in self.books:  # not subscribed: Binance answers
                return next(request)
            self._early[key] = self.tools.clock.callLater(
                FIRST_EVENT_WAIT, self._snapshot_now, key)
            return self.waiting.wait(key, limit, request, next)
        self.tools.subscriptions.touch(market, depth_stream(symbol))
        if limit > self.asked.get(key, 0):
            self.asked[key] = limit
        fresh = self._fresh(market, depth_stream(symbol))
        if not fresh and key in self.snapshot_size and not (
                key in self._fetching and limit <= self._fetching[key]):
            return self._fallback(key, limit, request, next)
        if book.state == LIVE and fresh:
            # fresh but without ``limit`` exact levels (else ``hit`` answered)
            size = self._size(key)
            grow = size > self.snapshot_size.get(key, 0)
            if limit <= size and (grow or book.holds(limit)):
                # A bot asks more than the snapshot held, or the price walked
                # out of the range it covered: one new snapshot, which this
                # request waits on (it goes on if none can be taken).
                book.mark_stale()
                waited = self.waiting.wait(key, limit, request, next)
                self._snapshot(key, book)
                return waited
            if grow:
                book.mark_stale()  # grow as far as the proxy goes; Binance answers this one
                self._snapshot(key, book)
        if book.state != LIVE and limit <= self._coming(key):
            return self.waiting.wait(key, limit, request, next)
        return next(request)

    # -- bot requests waiting for a snapshot ----------------------------------------------
    def _coming(self, key: Key) -> int:
        """The levels of the snapshot this book is about to get (0: none)."""
        if key in self._fetching:
            return self._fetching[key]
        if key in self._pending:  # taken, loaded on the stream's next event
            return self._pending[key][1]
        if key in self._early:  # a new book: its first snapshot is sized then
            return self._size(key)
        return 0

    def _view(self, key: Key, snap: Any, size: int) -> OrderBook | None:
        """A book of the snapshot alone (it answers every limit up to
        ``size`` with the snapshot's top levels), or None if unusable."""
        if snap is None:
            return None
        market, symbol = key
        view = OrderBook(market, symbol, symbol.split("_")[0] if market == "coinm" else None)
        try:
            view.on_snapshot(snap, size, self.tools.now_ms())
        except (KeyError, TypeError, IndexError, ValueError):
            return None
        return view

    def _answer_waiters(self, key: Key, snap: Any, size: int, waits: Any = None,
                        detail: str = "snapshot", view: OrderBook | None = None) -> int:
        """Answer every request waiting on ``waits`` (default: the book's
        snapshot) that the snapshot covers; the rest go on. Returns how
        many were answered."""
        waiters = self.waiting.pop(key if waits is None else waits)
        if not waiters:
            return 0
        if view is None:
            view = self._view(key, snap, size)
        count = 0
        for waiter in waiters:
            body = view.response(waiter[0]) if view is not None else None
            if body is None:
                go_on(waiter)
            else:
                answered(waiter, ProxyResponse(200, (JSON,), body, "stream", detail))
                count += 1
        return count

    # -- a stale book: one shared own request at a time ----------------------------------
    def _fallback(self, key: Key, limit: int, request: ProxyRequest, next: Callable) -> Answer:
        """The answer to a request for a book whose stream is stale: from the
        held fallback answer, the one in flight, or the next one (sent once
        the requests arriving in the same instant joined it); down the
        chain when it cannot cover this request."""
        if limit > self._fb_asked.get(key, 0):
            self._fb_asked[key] = limit
        held = self._held.get(key)
        if held is not None and self.tools.clock.seconds() - held[0] < FALLBACK_TTL:
            body = held[1].response(limit)
            if body is not None:
                return ProxyResponse(200, (JSON,), body, "stream", FALLBACK)
        if key in self._fb_fetching and limit > self._fb_fetching[key]:
            return next(request)  # a smaller one in flight: as before
        waited = self.waiting.wait((FALLBACK, *key), limit, request, next)
        if key not in self._fb_fetching and key not in self._fb_due:
            self._fb_due[key] = self.tools.clock.callLater(0, self._fallback_send, key)
        return waited

    def _fallback_send(self, key: Key) -> None:
        """Send a stale book's fallback request, at the largest limit that
        costs what the largest limit asked since the last one costs; or, if
        the proxy may not send it now (own-weight share, backoff), let its
        waiting requests go on as before."""
        self._fb_due.pop(key, None)
        market, symbol = key
        m = self.tools.markets[market]
        path = rest_path(market, DEPTH) or ""
        endpoint = self.tools.endpoints.lookup(market, "GET", path)
        job = (FALLBACK, *key)
        d = None
        if endpoint is not None and key in self.books:
            size = depth_snapshot_limit(endpoint, m.depth_limits, m.depth_max,
                                        self._fb_asked.get(key, 1), 1.0)
            d = self.tools.refetch.fetch(job, market, path,
                                         f"symbol={symbol}&limit={size}".encode(), FALLBACK,
                                         credited=False, of_share=FALLBACK_SHARE)
        if d is None:
            self._answer_waiters(key, None, 0, job)  # each goes on
            return
        self._fb_fetching[key] = size
        self._fb_asked[key] = 0
        d.addCallback(self._fallback_done, key, size)

    def _fallback_done(self, response: ProxyResponse | None, key: Key, size: int) -> None:
        self._fb_fetching.pop(key, None)
        snap = _snapshot_of(response)
        view = self._view(key, snap, size)
        if view is not None and response is not None and response.source != "cache" \
                and key in self.books:
            # (a cached answer may be a TTL old already: not held for another)
            self._held[key] = (self.tools.clock.seconds(), view)
        waits = (FALLBACK, *key)
        if self._answer_waiters(key, snap, size, waits, FALLBACK, view):
            self.tools.refetch.answered_bots(waits)  # bot requests coalesced, not own

    def _answer_from_book(self, key: Key, book: OrderBook) -> None:
        """The book just went live: answer the waiting requests it covers."""
        for waiter in self.waiting.pop(key):
            body = book.response(waiter[0])
            if body is None:
                go_on(waiter)
            else:
                answered(waiter, stream_answer(body))

    def _size(self, key: Key) -> int:
        market = key[0]
        m = self.tools.markets[market]
        endpoint = self.tools.endpoints.lookup(market, "GET", rest_path(market, DEPTH) or "")
        if endpoint is None:
            return self.tools.settings.snapshot_limit
        return depth_snapshot_limit(endpoint, m.depth_limits,
                                    min(self.tools.settings.snapshot_limit, m.depth_max),
                                    self.asked.get(key, 1), self.tools.settings.depth_headroom)

    def _decide(self, _: object, key: Key, client: str) -> None:
        """Subscribe if the market lists the symbol, else forget the book."""
        book = self.books.get(key)
        if book is None:
            return
        market, symbol = key
        if self.info.listed(market, symbol) is not True or not self.tools.subscriptions.open(
                market, depth_stream(symbol), lambda d: self._on_depth(key, book, d), client):
            del self.books[key]
            self.asked.pop(key, None)
            self._forget_waits(key)

    def _forget_waits(self, key: Key) -> None:
        timer = self._early.pop(key, None)
        if timer is not None and timer.active():
            timer.cancel()
        self._pending.pop(key, None)
        self._held.pop(key, None)
        self._fb_asked.pop(key, None)
        due = self._fb_due.pop(key, None)
        if due is not None and due.active():
            due.cancel()
        for waits in (key, (FALLBACK, *key)):
            for waiter in self.waiting.pop(waits):
                go_on(waiter)

    def _on_depth(self, key: Key, book: OrderBook, data: Any) -> None:
        book.on_event(data, self.tools.now_ms())
        if book.needs_snapshot():
            pending = self._pending.pop(key, None)
            if pending is not None and self._load(key, book, *pending):
                self._answer_from_book(key, book)
                return
            self._snapshot(key, book)

    def _snapshot_now(self, key: Key) -> None:
        """A new book's stream said nothing yet: its waiting bots are not
        kept waiting longer; the snapshot is held for the first event."""
        self._early.pop(key, None)
        book = self.books.get(key)
        if book is None or book.state == LIVE:
            return
        if self.info.listed(*key) is not True:  # still unknown: Binance answers them
            self._answer_waiters(key, None, 0)
            return
        self._snapshot(key, book)

    def _load(self, key: Key, book: OrderBook, snap: Any, size: int) -> bool:
        try:
            live = book.on_snapshot(snap, size, self.tools.now_ms())
        except (KeyError, TypeError, IndexError):
            live = False
        if live:
            self.snapshot_size[key] = size
        return live

    def _snapshot(self, key: Key, book: OrderBook) -> None:
        timer = self._early.pop(key, None)
        if timer is not None and timer.active():
            timer.cancel()
        market, symbol = key
        size = self._size(key)
        query = f"symbol={symbol}&limit={size}".encode()
        job = ("depth", *key)
        d = self.tools.refetch.fetch(job, market, rest_path(market, DEPTH) or "", query,
                                     "snapshot")
        if d is None:
            if not self.tools.refetch.busy(job):
                self._answer_waiters(key, None, 0)  # no snapshot coming: they go on
            return
        self._fetching[key] = size

        def done(response: ProxyResponse | None) -> None:
            self._fetching.pop(key, None)
            snap = _snapshot_of(response)
            if self._answer_waiters(key, snap, size):
                self.tools.refetch.answered_bots(job)  # bot requests coalesced, not own
            if snap is None or self.books.get(key) is not book:
                return
            if not book.needs_snapshot():  # no event yet: the first one decides
                self._pending[key] = (snap, size)
            elif not self._load(key, book, snap, size):
                # Older than the buffered stream (Binance's procedure: fetch
                # again) or unusable: the next event retries after the backoff.
                self.tools.refetch.failed(job)
        d.addCallback(done)

    # -- housekeeping ----------------------------------------------------------------
    def lost(self, market: str, names: set[str]) -> None:
        for (m, symbol), book in self.books.items():
            if m == market and depth_stream(symbol) in names:
                book.mark_stale()

    def check_fresh(self) -> None:
        """Resync books whose stream went silent."""
        for (market, symbol), book in self.books.items():
            if book.state == LIVE and not self._fresh(market, depth_stream(symbol)):
                book.mark_stale()

    def _fresh(self, market: str, stream: str) -> bool:
        """The book's stream delivered within ``stale_depth``, or is quiet
        (unchanged) up to ``stale_depth_quiet`` on a live connection."""
        s = self.tools.settings
        return self.tools.subscriptions.fresh(market, stream, s.stale_depth,
                                              s.quiet_limit(stream))

    def release(self, market: str, stream: str) -> None:
        symbol_l = stream.partition("@")[0]
        for key in [k for k in self.books if k[0] == market and k[1].lower() == symbol_l]:
            del self.books[key]
            self.asked.pop(key, None)
            self.snapshot_size.pop(key, None)
            self._forget_waits(key)
            self.tools.refetch.forget(("depth", *key))
            self.tools.refetch.forget((FALLBACK, *key))
