"""``Hub``: the bots' side of the market's upstream streams (``IStreamHub``).

Each (market, stream) is subscribed upstream once, through the market's
``StreamManager``, however many listeners want it; a REST responder holding
the same stream shares that subscription (its handler stays the manager's
handler; the hub only relays the raw frames). A stream nobody listens to any
more is released after the REST streams' idle rule (``idle_for``), unless a
REST responder still holds it (then its own idle rule releases it). Streams of
symbols the market's exchangeInfo does not list are never subscribed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from bnproxy.binance.streams import symbol_of, valid_stream
from bnproxy.chain.interfaces import IStreamHub
from bnproxy.middleware.streams.manager import StreamManager, relay_only
from bnproxy.middleware.streams.subscriptions import Subscriptions

_log = Logger(namespace="bnproxy.streams.hub")

Listener = Callable[[bytes], None]


class Handle:
    """One listener's subscription; ``close()`` ends it (idempotent)."""

    __slots__ = ("_hub", "key", "listener", "lost")

    def __init__(self, hub: Hub, key: tuple[str, str], listener: Listener,
                 lost: Callable[[], None] | None) -> None:
        self._hub = hub
        self.key = key
        self.listener = listener
        self.lost = lost

    def close(self) -> None:
        hub, self._hub = self._hub, None  # type: ignore[assignment]
        if hub is not None:
            hub._leave(self)


@implementer(IStreamHub)
class Hub:
    """See the module docstring. ``listed(market, symbol)`` says whether the
    market lists a symbol (None: not known yet); ``when_known(market)`` fires
    once it is known."""

    def __init__(self, clock, managers: Mapping[str, StreamManager],
                 subscriptions: Subscriptions,
                 listed: Callable[[str, str], bool | None],
                 when_known: Callable[[str], Any],
                 idle_for: Callable[[str], float]) -> None:
        self._clock = clock
        self.managers = managers
        self.subscriptions = subscriptions
        self._listed = listed
        self._when_known = when_known
        self._idle_for = idle_for
        self.listeners: dict[tuple[str, str], list[Listener]] = {}
        self.handles: dict[tuple[str, str], set[Handle]] = {}
        self.left: dict[tuple[str, str], float] = {}  # no listener since
        self.placed: set[tuple[str, str]] = set()  # subscribed upstream by the hub
        self.frames = 0
        self.bytes = 0
        self._after_read: list[Callable[[], None]] = []
        for market, manager in managers.items():
            manager.relay = self._relay_for(market)
            manager.read_done = self._read_done
            manager.on_lost.append(self._lost_for(market))

    def _relay_for(self, market: str) -> Callable[[str, bytes], None]:
        listeners = self.listeners

        def relay(stream: str, payload: bytes) -> None:
            targets = listeners.get((market, stream))
            if targets:
                self.frames += 1
                self.bytes += len(payload)
                for listener in targets:
                    try:
                        listener(payload)
                    except Exception:
                        _log.failure("stream listener for {stream} failed", stream=stream)
        return relay

    def _read_done(self) -> None:
        for callback in self._after_read:
            try:
                callback()
            except Exception:
                _log.failure("stream listener's after-read failed")

    def _lost_for(self, market: str) -> Callable[[set[str]], None]:
        def lost(names: set[str]) -> None:
            for name in names:
                for handle in list(self.handles.get((market, name), ())):
                    if handle.lost is not None:
                        try:
                            handle.lost()
                        except Exception:
                            _log.failure("stream listener for {stream} failed", stream=name)
        return lost

    def stop(self) -> None:
        """The streams stop (the proxy shuts down): every listener is told
        its stream was lost, so bots get a close frame, not a silent socket."""
        for market in self.managers:
            self._lost_for(market)({stream for m, stream in self.handles if m == market})

    # -- IStreamHub -------------------------------------------------------------------
    def stream_markets(self) -> tuple[str, ...]:
        return tuple(self.managers)

    def subscribe(self, market: str, stream: str, listener: Listener,
                  lost: Callable[[], None] | None = None) -> Handle:
        if market not in self.managers:
            raise KeyError(market)
        key = (market, stream)
        handle = Handle(self, key, listener, lost)
        self.handles.setdefault(key, set()).add(handle)
        self.listeners.setdefault(key, []).append(listener)
        self.left.pop(key, None)
        self._place(key)
        return handle

    def after_read(self, callback: Callable[[], None]) -> None:
        self._after_read.append(callback)

    def _leave(self, handle: Handle) -> None:
        key = handle.key
        handles = self.handles.get(key)
        if handles is None or handle not in handles:
            return
        handles.discard(handle)
        listeners = self.listeners[key]
        listeners.remove(handle.listener)
        if not handles:
            del self.handles[key]
            del self.listeners[key]
            self.left[key] = self._clock.seconds()
            if key in self.subscriptions.last_used:  # REST's idle rule from now on
                self.subscriptions.touch(*key)

    # -- upstream ---------------------------------------------------------------------
    def _place(self, key: tuple[str, str]) -> None:
        market, stream = key
        manager = self.managers[market]
        if stream in manager.placed:
            return
        if not valid_stream(stream):
            # a URL's names are taken as given (Binance sends nothing for a bad
            # one): never in a SUBSCRIBE shared with other bots' streams, where
            # Binance's error for it would refuse theirs too
            return
        symbol = symbol_of(stream)
        if symbol is not None:
            listed = self._listed(market, symbol)
            if listed is None:  # exchangeInfo not known yet: place once it is
                self._when_known(market).addCallback(lambda _: self._placed_later(key))
                return
            if not listed:
                return  # Binance sends nothing for it either
        manager.ensure(stream, relay_only)  # bots only: never decoded
        self.placed.add(key)

    def _placed_later(self, key: tuple[str, str]) -> None:
        if key in self.handles and self._listed(key[0], symbol_of(key[1]) or "") is not None:
            self._place(key)

    def sweep(self) -> None:
        """Keep streams with listeners in use for the REST side (and placed:
        those waiting for exchangeInfo ask for it again); release those the
        hub placed once nobody listened for their idle time."""
        now = self._clock.seconds()
        for key in list(self.handles):
            if key in self.subscriptions.last_used:
                self.subscriptions.touch(*key)
            elif key[1] not in self.managers[key[0]].placed:
                self._place(key)  # exchangeInfo was not known: asked again
        for key, since in list(self.left.items()):
            if now - since <= self._idle_for(key[1]):
                continue
            del self.left[key]
            market, stream = key
            if key in self.placed:
                self.placed.discard(key)
                if key not in self.subscriptions.last_used:  # REST does not hold it
                    manager = self.managers[market]
                    if manager.handlers.get(stream) is relay_only:
                        manager.release(stream)

    # -- reporting --------------------------------------------------------------------
    def health(self) -> dict:
        return {"streams": len(self.handles),
                "listeners": sum(len(h) for h in self.handles.values()),
                "frames": self.frames, "bytes": self.bytes}

    def upstream_view(self, stale: Callable[[str], set[str]] | None = None) -> dict:
        """``IStreamHub.upstream_view``; ``stale(market)``: the market's stale
        streams (the streams middleware's rule), none without it."""
        markets = {}
        for market, manager in self.managers.items():
            mine = {stream for m, stream in self.handles if m == market}
            gone = sorted(mine & stale(market)) if stale is not None and mine else []
            named = [n for n in gone if valid_stream(n)][:5]  # public stream names only
            open_ = Counter(c.egress or "" for c in manager.connections
                            if c.protocol is not None)
            egresses = sorted(set(open_) | set(manager.control_sent)
                              | {e or "" for e in manager.egresses}) or [""]
            markets[market] = {
                "streams": len(manager.placed), "bot_streams": len(mine),
                "stale": len(gone), "stale_streams": named,
                "egress": [{"egress": e or None, "connections": open_.get(e, 0),
                            "control_messages": manager.control_sent.get(e, 0)}
                           for e in egresses]}
        return {"frames": self.frames, "bytes": self.bytes, "markets": markets}
