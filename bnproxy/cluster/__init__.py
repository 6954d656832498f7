"""State shared by bnproxy instances: weight budgets, bans, the client ledger
and heartbeats (``bnproxy.chain.interfaces.ISharedState``), in Redis
(``redis_state``, composing ``connection``, ``leases``, ``bans``, ``ledger``
and ``heartbeats``). Without ``--shared-state`` there is nothing to share:
the rate limiter keeps everything in its own ``LocalState``."""

from __future__ import annotations

from typing import Any


def open_shared_state(reactor, url: str | None, **settings: Any):
    """None when ``url`` is empty (everything in-process), else a
    ``RedisSharedState`` (not started: add it to the application as
    a service, or call ``start()``). ``settings``: ``RedisSharedState``'s
    keyword arguments (``deadline``, ``background_deadline``, …). Raises
    ``bnproxy.cluster.url.RedisURLError`` (one line, no password) for a bad
    URL."""
    if not url:
        return None
    from bnproxy.cluster.redis_state import RedisSharedState
    from bnproxy.cluster.url import parse_redis_url
    return RedisSharedState(reactor, parse_redis_url(url), **settings)
