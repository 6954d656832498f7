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


def stream_answer(body: bytes) -> ProxyResponse:
    return ProxyResponse(200, (JSON,), body, "stream", "stream")


def parse_int(value: str) -> int | None:
    return int(value) if value.isdigit() and len(value) < 19 else None
