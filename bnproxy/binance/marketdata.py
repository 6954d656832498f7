"""Binance's market-data facts that websocket-served state needs: the REST
paths of each family per market, stream names, connection limits, message
rates, kline stream cadence, default limits and depth snapshot sizing
(FACTS.md §1, §3, §4, §6)."""

from __future__ import annotations

from collections.abc import Iterable

from bnproxy.binance.endpoints import Endpoint

# Families of public market data and their REST paths per market.
KLINES = "klines"
DEPTH = "depth"
TICKER_24HR = "ticker/24hr"
BOOK_TICKER = "ticker/bookTicker"
PRICE = "ticker/price"
EXCHANGE_INFO = "exchangeInfo"

_PREFIX = {"spot": "/api/v3", "usdm": "/fapi/v1", "coinm": "/dapi/v1"}
FAMILIES = (KLINES, DEPTH, TICKER_24HR, BOOK_TICKER, PRICE, EXCHANGE_INFO)


def rest_path(market: str, family: str) -> str | None:
    """The REST path of ``family`` on ``market`` (None: no such market)."""
    prefix = _PREFIX.get(market)
    return None if prefix is None else f"{prefix}/{family}"


# Kline request parameters Binance accepts, and the defaults it applies.
KLINE_PARAMS = frozenset({"symbol", "interval", "limit", "startTime", "endTime", "timeZone"})
KLINE_DEFAULT_LIMIT = 500
UTC_TIME_ZONES = ("0", "+00:00", "00:00")
DEPTH_DEFAULT_LIMIT = {"spot": 100, "usdm": 500, "coinm": 500}

# Websocket streams (FACTS.md §6).
STREAMS_PER_CONNECTION = 1024
CONNECTION_LIFETIME = 24 * 3600.0  # Binance cuts every connection after 24 h
# Incoming control messages (SUBSCRIBE, ...) a connection may send per second.
MESSAGES_PER_SECOND = {"spot": 5, "usdm": 10, "coinm": 10}


# USD-M's 2026 split of the stream host: these kinds on ``/public``, the rest
# on ``/market`` (FACTS.md §6).
USDM_PUBLIC_KINDS = ("depth", "bookTicker", "rpiDepth")


def usdm_route(name: str) -> str:
    """``public`` or ``market``: the USD-M stream path that carries ``name``."""
    kind = name.split("@", 1)[1] if "@" in name else name
    return "public" if kind.startswith(USDM_PUBLIC_KINDS) or name == "!bookTicker" else "market"


def kline_stream(symbol: str, interval: str) -> str:
    return f"{symbol.lower()}@kline_{interval}"


def depth_stream(symbol: str) -> str:
    return f"{symbol.lower()}@depth@100ms"


# The ticker-like families served from a stream, by the stream's kind.
TICKER_STREAM_KIND = {TICKER_24HR: "ticker", BOOK_TICKER: "bookTicker", PRICE: "aggTrade"}


def kline_cadence(market: str, interval: str) -> float:
    """Seconds between kline stream updates: 250 ms on futures, 2 s on spot
    (1 s for the 1s interval)."""
    if market != "spot":
        return 0.25
    return 1.0 if interval == "1s" else 2.0


def depth_snapshot_limit(endpoint: Endpoint, allowed: tuple[int, ...] | None, largest: int,
                         asked: int, headroom: float = 2.0) -> int:
    """The snapshot size for a book that must answer ``limit=asked``: the top
    of the cheapest weight band that holds ``asked × headroom`` levels (spot
    5 or 20 → 100 levels, weight 5; USD-M → 50 levels, weight 2), at most
    ``largest``. Weight bands come from the endpoint table; ``allowed`` are
    the only limits the market accepts (None: any from 1 to ``largest``).
    With ``headroom`` 1 it is the largest limit that costs what
    ``limit=asked`` costs (spot 1-100 -> 100; USD-M 5-50 -> 50, 100 -> 100):
    Binance's answer for a smaller limit is the top levels of that one's,
    at the same ``lastUpdateId`` (FACTS.md §4.1: bids highest first, asks
    lowest first)."""
    target = max(1, min(largest, int(asked * headroom + 0.999)))
    if allowed is not None:
        fits = [n for n in allowed if n <= largest]
        if not fits:
            return min(allowed)
        target = min((n for n in fits if n >= target), default=max(fits))
        weight = endpoint.weight({"limit": str(target)})
        return max(n for n in fits if n >= target and endpoint.weight({"limit": str(n)}) == weight)
    weight = endpoint.weight({"limit": str(target)})
    lo, hi = target, largest  # the largest n in [target, largest] with the same weight
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if endpoint.weight({"limit": str(mid)}) == weight:
            lo = mid
        else:
            hi = mid - 1
    return lo


# Request headers that change the format of Binance's answer (the time unit
# of timestamps, SBE instead of JSON): part of a cached answer's key.
VARYING_HEADERS = (b"x-mbx-time-unit", b"x-mbx-sbe", b"accept")
_SBE = b"application/sbe"


def default_format(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether Binance answers a request with these (lower-case) headers in
    its default format, JSON with timestamps in milliseconds, the format
    streams are rebuilt in: no ``X-MBX-TIME-UNIT`` (any value: the proxy
    does not guess which ones Binance takes for milliseconds), no
    ``X-MBX-SBE``, no ``Accept`` naming SBE (FACTS.md §2.1)."""
    for name, value in headers:
        if name == b"x-mbx-time-unit" or name == b"x-mbx-sbe":
            return False
        if name == b"accept" and _SBE in value.lower():
            return False
    return True



# How often Binance's stream servers ping every connection (FACTS.md §6: spot
# every 20 s, futures every 3 min): a connection without a frame for clearly
# longer than this is dead even when it carries only event-driven streams.
SERVER_PING_INTERVAL = {"spot": 20.0, "usdm": 180.0, "coinm": 180.0}

# Streams that push an event only when their data changed, not on a clock:
# the diff depth stream (each event carries the updates since the last one,
# its ``U`` the previous ``u + 1``, FACTS.md §4.2, §4.3 step 7) and the book
# ticker ("real-time": one event per change of the best bid or ask, §5.1,
# §5.2). Silence on such a stream over a connection that is otherwise alive
# means "unchanged", not "stale". Partial book streams (``@depth5``...) push on
# a clock and are not among them.
ON_CHANGE_KINDS = ("depth", "depth@100ms", "depth@250ms", "depth@500ms", "bookTicker")


def pushes_on_change(name: str) -> bool:
    """Whether stream ``name`` says something only when its data changed."""
    return name.partition("@")[2] in ON_CHANGE_KINDS
