"""State shared by bnproxy instances: weight budgets, bans, the client ledger
and heartbeats (``bnproxy.chain.interfaces.ISharedState``), in Redis
(``redis_state``) or in-process (``local``)."""

from __future__ import annotations

from typing import Any


def open_shared_state(reactor, url: str | None, **settings: Any):
    """``LocalSharedState`` when ``url`` is empty (the embedded default),
    else a ``RedisSharedState`` (not started: add it to the application as
    a service, or call ``start()``). ``settings``: ``RedisSharedState``'s
    keyword arguments (``deadline``, ``background_deadline``, …). Raises
    ``bnproxy.cluster.url.RedisURLError`` (one line, no password) for a bad
    URL."""
    if not url:
        from bnproxy.cluster.local import LocalSharedState
        return LocalSharedState(reactor)
    from bnproxy.cluster.redis_state import RedisSharedState
    from bnproxy.cluster.url import parse_redis_url
    return RedisSharedState(reactor, parse_redis_url(url), **settings)
