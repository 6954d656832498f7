"""Websocket-maintained market data: plain data structures fed by stream
messages and REST snapshots (``klines``, ``orderbook``, ``tickers``), the
connection pool that feeds them (``manager``), and the ``streams``
middleware that answers from them (``middleware``)."""
