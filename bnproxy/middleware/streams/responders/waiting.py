"""Bot requests waiting on the one upstream fetch that will answer them (a
new book's snapshot, a kline series' seed), each with a deadline: past
``WAIT_DEADLINE`` a request goes on down the chain as if it had not waited."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from twisted.internet.defer import Deferred

from bnproxy.chain.compose import as_deferred
from bnproxy.chain.messages import ProxyRequest

WAIT_DEADLINE = 8.0  # seconds a bot request waits before it goes on

#: (what the bot asked, request, next, its answer, the deadline's timer)
Waiter = tuple[Any, ProxyRequest, Callable, Deferred, Any]


class Waiting:
    """The requests waiting per key (a book, a series)."""

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._by_key: dict[Hashable, list[Waiter]] = {}

    def wait(self, key: Hashable, asked: Any, request: ProxyRequest,
             next: Callable) -> Deferred:
        """The bot's answer, when the fetch for ``key`` ends or the deadline passes."""
        d: Deferred = Deferred()
        timer = self._clock.callLater(WAIT_DEADLINE, self._expire, key, d)
        self._by_key.setdefault(key, []).append((asked, request, next, d, timer))
        return d

    def pop(self, key: Hashable) -> list[Waiter]:
        """Every request waiting on ``key``, no longer waiting: the caller
        answers each (``answered``) or lets it go on (``go_on``)."""
        return self._by_key.pop(key, [])

    def _expire(self, key: Hashable, d: Deferred) -> None:
        waiters = self._by_key.get(key, [])
        for i, w in enumerate(waiters):
            if w[3] is d:
                del waiters[i]
                go_on(w)
                break
        if not waiters:
            self._by_key.pop(key, None)


def answered(waiter: Waiter, response: Any) -> None:
    """Answer a waiting request (its deadline cancelled)."""
    _, _, _, d, timer = waiter
    if timer is not None and timer.active():
        timer.cancel()
    if not d.called:
        d.callback(response)


def go_on(waiter: Waiter) -> None:
    """The waiting request goes on down the chain, as if it had not waited."""
    _, request, next, d, timer = waiter
    if timer is not None and timer.active():
        timer.cancel()
    if not d.called:
        as_deferred(next(request)).chainDeferred(d)
