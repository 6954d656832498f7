"""The fake Binance exchange, one job per module.

- ``intervals``: kline boundaries, drawn with the calendar (not the proxy's).
- ``instruments``: the listed symbols, Binance's number formats, order-size limits.
- ``state``: symbols, trades, klines, books, 24 h statistics; accounts.
- ``formats``: Binance's JSON bodies (REST, stream events, errors).
- ``auth``: API keys, signatures, timestamps.
- ``limits``: the per-IP weight limit and its bans; ``weights``: the weight of each
  request, the fake's own table from Binance's docs (not the proxy's).
- ``rest`` / ``orders``: REST handlers; ``ws``: websocket streams.
- ``http``: the twisted.web resources; ``control``: faults and counters.
- ``exchange``: :class:`FakeExchange`, the composition tests steer.
- ``run``: ``start_exchange`` / ``RunningExchange``; ``tls``: https/wss;
  ``tap``: ``twistd bnproxy-exchange``.

From the proxy it imports only ``bnproxy.binance`` (checked by
``tests/test_fake_imports.py``).
"""
