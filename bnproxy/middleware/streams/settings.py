"""The streams middleware's settings (``[middleware.streams]``): declared
once as typed options; ``Settings`` is what the parts read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from bnproxy.binance.marketdata import CONNECTION_LIFETIME, pushes_on_change
from bnproxy.chain.options import Option

OPTIONS = (
    Option("snapshot_limit", "int", 1000, "The largest depth snapshot the proxy takes "
           "(a book is built from the smallest one that covers what bots ask).",
           minimum=5, maximum=5000),
    Option("depth_headroom", "float", 2.0, "A book holds this many times the asked levels.",
           minimum=1.0),
    Option("stale_depth", "float", 3.0, "A book or book ticker silent this long (seconds) is "
           "not served, unless its connection is alive (see stale_depth_quiet).",
           minimum=0.1),
    Option("stale_depth_quiet", "float", 30.0, "A book or book ticker whose stream is quiet "
           "while its connection is alive (a frame within stale_depth, subscriptions "
           "acknowledged) is served up to this long (seconds): these streams push only on a "
           "change, so quiet means unchanged; longer silence is stale (a dropped stream).",
           minimum=0.1),
    Option("stale_ticker", "float", 5.0, "A 24 h ticker silent this long is not served.",
           minimum=0.1),
    Option("stale_kline", "float", 6.0, "At least this long (or 3 x the stream's cadence) "
           "before a kline stream counts as silent.", minimum=0.1),
    Option("idle", "float", 900.0, "Books and tickers nobody asked for are released after "
           "this, seconds.", minimum=1),
    Option("idle_kline", "float", 900.0, "A kline series is kept at least this long unused "
           "(or 2 intervals if longer) …", minimum=1),
    Option("idle_kline_max", "float", 7200.0, "… but at most this long.", minimum=1),
    Option("exchange_info_refresh", "float", 300.0, "exchangeInfo is refreshed this often, "
           "only while bots asked for it within as long.", minimum=1),
    Option("own_share", "float", 0.25, "The proxy's own REST weight per pool per minute, as a "
           "share of the budget.", minimum=0.01, maximum=1.0),
    Option("new_streams_per_client", "int", 240, "New subscriptions one client may cause per "
           "minute.", minimum=1),
    Option("legacy_routes", "bool", False, "USD-M: the unrouted /stream endpoint instead of "
           "/public and /market."),
    Option("rotate_after", "float", CONNECTION_LIFETIME - 3600.0, "Replace a connection "
           "after this long, before Binance's 24 h cut, seconds.", minimum=60),
    Option("symbols_file", "str", None, "The symbols each market lists, kept across "
           "restarts; default STATE_DIR/bnproxy-symbols.json; \"none\": not kept (each start "
           "fetches exchangeInfo for them).", shown=False),
    Option("symbols_max_age", "float", 3600.0, "A kept symbol list older than this "
           "(seconds) is not used at start: exchangeInfo is fetched instead.", minimum=0),
    Option("klines_file", "str", None, "Kline series' closed candles, kept across restarts; "
           "default STATE_DIR/bnproxy-klines.json; \"none\": not kept (each start seeds "
           "every series again).", shown=False),
    Option("klines_max_age", "float", 3600.0, "Kept kline series older than this (seconds) "
           "are not used at start.", minimum=0),
)


@attrs.frozen
class Settings:
    snapshot_limit: int
    depth_headroom: float
    stale_depth: float
    stale_depth_quiet: float
    stale_ticker: float
    stale_kline_min: float
    idle_depth: float
    idle_kline: float
    idle_kline_max: float
    info_refresh: float
    own_share: float
    new_streams_per_client: int
    legacy_routes: bool
    rotate_after: float
    stale_kline_factor: float = 3.0  # a kline stream's cadence times this (not a setting)
    symbols_file: str | None = None
    symbols_max_age: float = 3600.0
    klines_file: str | None = None
    klines_max_age: float = 3600.0

    def quiet_limit(self, stream: str) -> float | None:
        """How long ``stream`` may stay quiet while its connection is alive
        and still count as fresh (None: no longer than its own bound)."""
        return max(self.stale_depth_quiet, self.stale_depth) if pushes_on_change(stream) \
            else None


def read_settings(name: str, settings: Mapping[str, Any]) -> Settings:
    """``Settings`` from the checked option values (every option present)."""
    s = dict(settings)
    return Settings(
        snapshot_limit=s["snapshot_limit"], depth_headroom=s["depth_headroom"],
        stale_depth=s["stale_depth"], stale_depth_quiet=s["stale_depth_quiet"],
        stale_ticker=s["stale_ticker"],
        stale_kline_min=s["stale_kline"], idle_depth=s["idle"], idle_kline=s["idle_kline"],
        idle_kline_max=s["idle_kline_max"], info_refresh=s["exchange_info_refresh"],
        own_share=s["own_share"], new_streams_per_client=s["new_streams_per_client"],
        legacy_routes=s["legacy_routes"], rotate_after=s["rotate_after"],
        symbols_file=None if s["symbols_file"] in (None, "", "none") else s["symbols_file"],
        symbols_max_age=s["symbols_max_age"],
        klines_file=None if s["klines_file"] in (None, "", "none") else s["klines_file"],
        klines_max_age=s["klines_max_age"])
