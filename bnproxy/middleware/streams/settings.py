"""The streams middleware's settings (``[middleware.streams]``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from bnproxy.binance.marketdata import CONNECTION_LIFETIME
from bnproxy.config.reader import SettingsReader


@attrs.define
class Settings:
    snapshot_limit: int = 1000  # the largest depth snapshot the proxy takes
    depth_headroom: float = 2.0  # a book holds this many times the asked levels
    stale_kline_factor: float = 3.0
    stale_kline_min: float = 6.0
    stale_depth: float = 3.0
    stale_ticker: float = 5.0
    idle_depth: float = 900.0  # books and tickers released after this idle time
    idle_kline: float = 900.0  # kline series: at least this, or 2 intervals …
    idle_kline_max: float = 7200.0  # … but at most this
    info_refresh: float = 300.0  # exchangeInfo refreshed while asked within this
    own_share: float = 0.25  # own REST weight per pool per minute, share of the budget
    new_streams_per_client: int = 240  # new subscriptions per client per minute
    legacy_routes: bool = False
    rotate_after: float = CONNECTION_LIFETIME - 3600.0


def read_settings(name: str, raw: Mapping[str, Any]) -> Settings:
    reader = SettingsReader(f"middleware.{name}", raw)
    s = Settings(
        snapshot_limit=reader.int("snapshot_limit", 1000, minimum=5, maximum=5000),
        depth_headroom=reader.float("depth_headroom", 2.0, minimum=1.0),
        stale_depth=reader.float("stale_depth", 3.0, minimum=0.1),
        stale_ticker=reader.float("stale_ticker", 5.0, minimum=0.1),
        stale_kline_min=reader.float("stale_kline", 6.0, minimum=0.1),
        idle_depth=reader.float("idle", 900.0, minimum=1),
        idle_kline=reader.float("idle_kline", 900.0, minimum=1),
        idle_kline_max=reader.float("idle_kline_max", 7200.0, minimum=1),
        info_refresh=reader.float("exchange_info_refresh", 300.0, minimum=1),
        own_share=reader.float("own_share", 0.25, minimum=0.01, maximum=1.0),
        new_streams_per_client=reader.int("new_streams_per_client", 240, minimum=1),
        legacy_routes=reader.bool("legacy_routes", False),
        rotate_after=reader.float("rotate_after", CONNECTION_LIFETIME - 3600.0, minimum=60))
    reader.done()
    return s
