"""One responder per family of market data (klines, depth, tickers,
exchangeInfo). Each answers from its state, or passes the request on and
starts or repairs that state; none does I/O except through the refetcher."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from bnproxy.binance.endpoints import EndpointTable
from bnproxy.binance.markets import Market
from bnproxy.chain.messages import JSON, ProxyResponse
from bnproxy.middleware.streams.refetch import Refetcher
from bnproxy.middleware.streams.settings import Settings
from bnproxy.middleware.streams.subscriptions import Subscriptions


@attrs.frozen
class Tools:
    """What every responder works with."""

    clock: Any
    markets: Mapping[str, Market]
    endpoints: EndpointTable
    subscriptions: Subscriptions
    refetch: Refetcher
    settings: Settings

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)


QUERIES_REMEMBERED = 4096  # distinct queries a responder keeps parsed


def remember(table: dict, key: Any, value: Any, limit: int = QUERIES_REMEMBERED) -> Any:
    """``table[key] = value``, the table emptied first when it holds
    ``limit`` entries (bounded, and what a bot asks again is parsed again);
    returns ``value``."""
    if len(table) >= limit:
        table.clear()
    table[key] = value
    return value


def stream_answer(body: bytes) -> ProxyResponse:
    return ProxyResponse(200, (JSON,), body, "stream", "stream")


class Answers:
    """The last stream answer given per key, kept while its body is the
    structure's current one (bodies are built once per update): hits between
    two updates get the same (immutable) answer, not a new one each."""

    def __init__(self, limit: int = 1024) -> None:
        self._last: dict[Any, ProxyResponse] = {}
        self._limit = limit

    def of(self, key: Any, body: bytes) -> ProxyResponse:
        last = self._last.get(key)
        if last is not None and last.body is body:
            return last
        return remember(self._last, key, stream_answer(body), self._limit)


def parse_int(value: str) -> int | None:
    return int(value) if value.isdigit() and len(value) < 19 else None
