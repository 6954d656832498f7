"""Tickers from streams, in the exact REST bytes: only fields a stream
carries exactly (FACTS.md §5.3). Each answer is encoded once per message."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

# REST field <- stream field, in REST order.
SPOT_24HR = (("symbol", "s"), ("priceChange", "p"), ("priceChangePercent", "P"),
             ("weightedAvgPrice", "w"), ("prevClosePrice", "x"), ("lastPrice", "c"),
             ("lastQty", "Q"), ("bidPrice", "b"), ("bidQty", "B"), ("askPrice", "a"),
             ("askQty", "A"), ("openPrice", "o"), ("highPrice", "h"), ("lowPrice", "l"),
             ("volume", "v"), ("quoteVolume", "q"), ("openTime", "O"), ("closeTime", "C"),
             ("firstId", "F"), ("lastId", "L"), ("count", "n"))
USDM_24HR = tuple(f for f in SPOT_24HR if f[1] not in ("x", "b", "B", "a", "A"))


class StreamValue:
    """The latest payload of one stream and its REST encoding."""

    def __init__(self) -> None:
        self.payload: Mapping[str, Any] | None = None
        self.body: bytes | None = None
        self.updated_ms = 0

    def set(self, payload: Mapping[str, Any], body: bytes, now_ms: int) -> None:
        self.payload = payload
        self.body = bytes(memoryview(body))  # exact size (see klines.held)
        self.updated_ms = now_ms


def ticker_24hr(market: str, d: Mapping[str, Any]) -> bytes:
    fields = SPOT_24HR if market == "spot" else USDM_24HR
    return orjson.dumps({rest: d[ws] for rest, ws in fields})


def book_ticker(market: str, d: Mapping[str, Any]) -> bytes:
    body = {"symbol": d["s"], "bidPrice": d["b"], "bidQty": d["B"], "askPrice": d["a"],
            "askQty": d["A"]}
    if market != "spot":
        body["time"] = d["T"]
    return orjson.dumps(body)


def last_price(d: Mapping[str, Any]) -> bytes:
    """Spot ``ticker/price`` from the newest ``aggTrade``."""
    return orjson.dumps({"symbol": d["s"], "price": d["p"]})
