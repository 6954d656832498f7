"""Binance markets: hosts, path prefixes and limits, one record per market."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

import attrs

MARKET_NAMES = ("spot", "usdm", "coinm", "options", "pm")

FUTURES_DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)

# Each market's connectivity check (weight 1): readiness probes use it.
PING_PATHS = {"spot": "/api/v3/ping", "usdm": "/fapi/v1/ping", "coinm": "/dapi/v1/ping",
              "options": "/eapi/v1/ping", "pm": "/papi/v1/ping"}


@attrs.frozen
class Market:
    """One Binance market (a REST host with its own weight pool).

    ``prefixes`` are the path prefixes that route to it implicitly (``/api``
    goes to spot, ``/fapi`` to USD-M, ...); ``rest_base`` and
    ``stream_base`` are the upstream URLs without a trailing slash.
    ``rest_base`` is ``None`` where a preset has no host for the market
    (Binance runs no options or portfolio-margin testnet).
    """

    name: str
    prefixes: tuple[str, ...]
    rest_base: str | None
    stream_base: str | None
    weight_limit: int | None  # REQUEST_WEIGHT per minute per IP, None if undocumented
    kline_max: int
    kline_intervals: tuple[str, ...]
    depth_limits: tuple[int, ...] | None  # None: any 1..depth_max
    depth_max: int

    def owns(self, path: str) -> bool:
        """True if ``path`` routes to this market without an explicit mount."""
        return any(path == p or path.startswith(p + "/") for p in self.prefixes)


_SPOT_INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h",
                   "8h", "12h", "1d", "3d", "1w", "1M")
_FUT_INTERVALS = _SPOT_INTERVALS[1:]

PRODUCTION: dict[str, Market] = {
    "spot": Market("spot", ("/api", "/sapi"), "https://api.binance.com",
                   "wss://stream.binance.com:9443", 6000, 1000, _SPOT_INTERVALS, None, 5000),
    "usdm": Market("usdm", ("/fapi", "/futures/data"), "https://fapi.binance.com",
                   "wss://fstream.binance.com", 2400, 1500, _FUT_INTERVALS,
                   FUTURES_DEPTH_LIMITS, 1000),
    "coinm": Market("coinm", ("/dapi",), "https://dapi.binance.com",
                    "wss://dstream.binance.com", 2400, 1500, _FUT_INTERVALS,
                    FUTURES_DEPTH_LIMITS, 1000),
    "options": Market("options", ("/eapi",), "https://eapi.binance.com",
                      "wss://fstream.binance.com", None, 1500, _FUT_INTERVALS, None, 1000),
    "pm": Market("pm", ("/papi",), "https://papi.binance.com", None, None, 1500,
                 _FUT_INTERVALS, None, 1000),
}

_TESTNET_HOSTS = {
    "spot": ("https://testnet.binance.vision", "wss://stream.testnet.binance.vision"),
    "usdm": ("https://testnet.binancefuture.com", "wss://fstream.binancefuture.com"),
    "coinm": ("https://testnet.binancefuture.com", "wss://dstream.binancefuture.com"),
    "options": (None, None),
    "pm": (None, None),
}

TESTNET: dict[str, Market] = {
    name: attrs.evolve(m, rest_base=_TESTNET_HOSTS[name][0], stream_base=_TESTNET_HOSTS[name][1])
    for name, m in PRODUCTION.items()
}


def check_base_url(url: str, schemes: Iterable[str]) -> str:
    """Validate an upstream base URL and return it without a trailing slash.

    Raises ``ValueError`` with a one-line reason.
    """
    parts = urlsplit(url)
    if parts.scheme not in schemes:
        raise ValueError(f"{url!r}: scheme must be one of {', '.join(schemes)}")
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: a base URL takes no query or fragment")
    try:
        _ = parts.port  # raises ValueError for a bad port
    except ValueError as e:
        raise ValueError(f"{url!r}: {e}") from None
    return url.rstrip("/")


def build_markets(
    testnet: bool = False,
    rest: Mapping[str, str] | None = None,
    streams: Mapping[str, str] | None = None,
) -> dict[str, Market]:
    """The market table after presets and per-market overrides.

    A market whose REST base is overridden without a stream base gets no
    streams: a custom REST host says nothing about where its streams are.
    """
    table = dict(TESTNET if testnet else PRODUCTION)
    for name, url in (rest or {}).items():
        table[name] = attrs.evolve(table[name], rest_base=check_base_url(url, ("http", "https")),
                                   stream_base=None)
    for name, url in (streams or {}).items():
        table[name] = attrs.evolve(table[name], stream_base=check_base_url(url, ("ws", "wss")))
    return table


def implicit_market(path: str) -> str | None:
    """The market a Binance path belongs to when no mount names one.

    ``/futures/data`` exists on both futures hosts; without a mount it goes to
    USD-M (ccxt's ``fapiData``); use the ``/coinm`` mount for COIN-M's.
    """
    for m in PRODUCTION.values():
        if m.owns(path):
            return m.name
    return None
