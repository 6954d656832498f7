"""The fake exchange's futures user-data streams: listenKeys and the
connections that carry an account's events.

REST (API key only, FACTS.md §2.1): ``POST /fapi/v1/listenKey`` (and
``/dapi``) answers the account's key (the same one while it is valid),
``PUT`` extends it, ``DELETE`` ends it; a key not known is ``-1125``. A
listenKey is valid 60 minutes after its last ``POST``/``PUT``.

Websocket: ``/ws/<listenKey>`` (both futures markets) and USD-M's
``/private/ws?listenKey=<k>&events=…`` carry the key's account's
``ORDER_TRADE_UPDATE`` events (one ``NEW`` for each order placed, one
``TRADE`` for each fill, as ``formats.order_trade_update`` builds them). An
unknown or expired key's connection stays open and silent.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson

from bnproxy.testing.fake import formats
from bnproxy.testing.fake.rest import ApiError, Call
from bnproxy.testing.fake.state import Order, SymbolState

VALID_MS = 60 * 60_000
PATHS = {"usdm": "/fapi/v1/listenKey", "coinm": "/dapi/v1/listenKey"}


class UserStreams:
    """listenKeys by (market, API key), and their open connections."""

    def __init__(self, now: Callable[[], int], seed: int = 1) -> None:
        self._now = now
        self._seed = seed
        self.keys: dict[str, tuple[str, str]] = {}  # listenKey -> (market, API key)
        self.by_account: dict[tuple[str, str], str] = {}
        self.expires: dict[str, int] = {}
        self.connections: dict[str, set[Any]] = defaultdict(set)
        self.events = 0

    def routes(self) -> dict[tuple[str, str, str], tuple[Callable[[Call], Any], str]]:
        r: dict[tuple[str, str, str], tuple[Callable[[Call], Any], str]] = {}
        for market, path in PATHS.items():
            r[(market, "POST", path)] = (self.create, "KEY")
            r[(market, "PUT", path)] = (self.keepalive, "KEY")
            r[(market, "DELETE", path)] = (self.close, "KEY")
        return r

    # -- REST -------------------------------------------------------------------------
    def create(self, call: Call):
        account = (call.market, call.api_key or "")
        key = self.by_account.get(account)
        if key is None or not self.valid(key):
            digest = hashlib.sha256(f"{self._seed}:{account}:{len(self.keys)}".encode())
            key = digest.hexdigest()  # 64 alphanumerics, as Binance's
            self.keys[key] = account
            self.by_account[account] = key
        self.expires[key] = self._now() + VALID_MS
        return 200, orjson.dumps({"listenKey": key}), []

    def _own(self, call: Call) -> str:
        key = self.by_account.get((call.market, call.api_key or ""))
        if key is None or not self.valid(key):
            raise ApiError(400, -1125, "This listenKey does not exist.")
        return key

    def keepalive(self, call: Call):
        key = self._own(call)
        self.expires[key] = self._now() + VALID_MS
        return 200, orjson.dumps({"listenKey": key}), []

    def close(self, call: Call):
        key = self._own(call)
        self.expires[key] = 0
        return 200, b"{}", []

    # -- streams ----------------------------------------------------------------------
    def valid(self, key: str) -> bool:
        return self.expires.get(key, 0) > self._now()

    def attach(self, market: str, key: str | None, protocol: Any) -> bool:
        """Carry ``key``'s events on ``protocol`` (a futures connection of
        ``market``); False: not a listenKey of that market."""
        if key is None or self.keys.get(key, ("",))[0] != market:
            return False
        self.connections[key].add(protocol)
        return True

    def detach(self, key: str, protocol: Any) -> None:
        self.connections[key].discard(protocol)

    def order_event(self, market: str, api_key: str | None, st: SymbolState,
                    order: Order) -> None:
        """An order was placed (and maybe filled): its events, to the
        account's user-data connections."""
        key = self.by_account.get((market, api_key or ""))
        if key is None or not self.valid(key) or not self.connections.get(key):
            return
        from bnproxy.testing.fake.ws import deliver

        now = self._now()
        payloads = [formats.order_trade_update(st, order, now, None)]
        payloads += [formats.order_trade_update(st, order, now, fill) for fill in order.fills]
        for payload in payloads:
            for p in list(self.connections[key]):
                if deliver(p, payload):
                    self.events += 1
