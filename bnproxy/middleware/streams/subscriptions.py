"""``Subscriptions``: which streams are held, when bots last used each, and
how many new ones each client may open per minute."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

from bnproxy.middleware.streams.manager import StreamManager

WINDOW = 60.0


class Subscriptions:
    def __init__(self, clock, managers: Mapping[str, StreamManager],
                 per_client_per_minute: int) -> None:
        self._clock = clock
        self.managers = managers
        self.per_client_per_minute = per_client_per_minute
        self.last_used: dict[tuple[str, str], float] = {}  # (market, stream) -> time
        self._opened: dict[str, int] = defaultdict(int)  # client -> new this minute
        self._minute = -1
        self.refused = 0

    def open(self, market: str, stream: str, handler: Callable[[Any], None],
             client: str) -> bool:
        """Subscribe ``stream`` for ``client``'s request; False (nothing done)
        when the client opened its share of new subscriptions this minute."""
        minute = int(self._clock.seconds() // WINDOW)
        if minute != self._minute:
            self._opened.clear()
            self._minute = minute
        if self._opened[client] >= self.per_client_per_minute:
            self.refused += 1
            return False
        self._opened[client] += 1
        self.managers[market].ensure(stream, handler)
        self.touch(market, stream)
        return True

    def touch(self, market: str, stream: str) -> None:
        self.last_used[(market, stream)] = self._clock.seconds()

    def idle(self, idle_for: Callable[[str], float]) -> list[tuple[str, str]]:
        """Release and return the streams unused for longer than
        ``idle_for(stream)`` seconds."""
        now = self._clock.seconds()
        gone = [(market, stream) for (market, stream), last in self.last_used.items()
                if now - last > idle_for(stream)]
        for market, stream in gone:
            del self.last_used[(market, stream)]
            self.managers[market].release(stream)
        return gone

    def fresh(self, market: str, stream: str, max_age: float,
              quiet_age: float | None = None) -> bool:
        """``StreamManager.fresh``: delivered within ``max_age``, or quiet up
        to ``quiet_age`` on a live connection."""
        return self.managers[market].fresh(stream, max_age, quiet_age)
