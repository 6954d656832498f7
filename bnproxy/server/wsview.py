"""The bots' websocket gateway as the dashboard shows it: the rows of
``IStreamGateway.gateway_view`` (``bnproxy.server.websocket.Gateway``)."""

from __future__ import annotations

import heapq
from typing import Any

from bnproxy.binance import streams as bs

# subscriptions of one bot past which its distinct streams are not counted
# (nor more of its names looked at)
UNION_WORK = 4096


def bots_rows(by_bot: dict[str, list[Any]], limit: int, names: int) -> list[dict]:
    """The rows of ``IStreamGateway.gateway_view``: the ``limit`` bots with
    the most subscriptions, each with at most ``names`` of its stream names
    (public stream names only: a name that is not one is never shown)."""
    counted = heapq.nsmallest(limit, (
        (-sum(len(getattr(b, "streams", ())) for b in bots), label, bots)
        for label, bots in by_bot.items()), key=lambda r: (r[0], r[1]))
    rows = []
    for minus, label, bots in counted:
        subscriptions = -minus
        markets = sorted({b.market for b in bots})
        if len(bots) == 1:
            distinct: int | None = subscriptions
        elif subscriptions <= UNION_WORK:
            distinct = len({(b.market, n) for b in bots for n in getattr(b, "streams", ())})
        else:
            distinct = None
        shown: list[str] = []
        scanned = 0  # names looked at: bounded, however many are not stream names
        for b in bots:
            prefix = f"{b.market}:" if len(markets) > 1 else ""
            for n in getattr(b, "streams", ()):
                scanned += 1
                if len(shown) >= names or scanned > UNION_WORK:
                    break
                if bs.valid_stream(n) and prefix + n[:64] not in shown:
                    shown.append(prefix + n[:64])
        rows.append({"client": label[:64], "connections": len(bots), "markets": markets,
                     "subscriptions": subscriptions, "distinct": distinct, "streams": shown,
                     "since": round(min(b.since for b in bots), 3)})
    return rows
