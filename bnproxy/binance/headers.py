"""Binance's own HTTP header names, once (FACTS.md §1.6-1.7; the
connectors' and ccxt's sources): what a bot sends that Binance reads, and
what Binance answers that a bot reads. Which of them cross the proxy is
decided in ``bnproxy.upstream.headers``."""

from __future__ import annotations

from bnproxy.binance.marketdata import VARYING_HEADERS
from bnproxy.binance.privacy import API_KEY_HEADER

#: Every header Binance defines in a request starts with this
#: (``X-MBX-APIKEY``, ``X-MBX-TIME-UNIT``, ``X-MBX-SBE``, …).
REQUEST_PREFIXES = (b"x-mbx-",)
#: Binance's own request headers the proxy knows by name: the API key and
#: the ones that change the answer's format.
REQUEST_HEADERS = frozenset({API_KEY_HEADER, *VARYING_HEADERS})
#: Every header Binance defines in an answer starts with one of these
#: (``X-MBX-USED-WEIGHT-1M``, ``X-MBX-ORDER-COUNT-*``, ``X-SAPI-USED-*``).
RESPONSE_PREFIXES = (b"x-mbx-", b"x-sapi-")
