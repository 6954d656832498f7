"""Stream ingestion rate and memory per held candle (in-process, one core).

    taskset -c 0 python stream_ingest.py [--messages 200000]

Ingestion: combined-stream frames (kline and diff-depth, half each, over 200
symbols) go through a stream connection's ``received`` (JSON parse, dispatch)
into ``KlineSeries.apply`` (which re-encodes the row) and ``OrderBook``
(which applies the levels); every 20th message a REST answer is built from the
state it touched (``depth?limit=100`` or ``klines?limit=1000``), as a request
would. Memory: 1000 series of 1000 candles, measured with tracemalloc.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import time
import tracemalloc

import orjson
from twisted.internet.testing import MemoryReactorClock

from bnproxy.binance.markets import PRODUCTION
from bnproxy.middleware.streams.klines import KlineSeries
from bnproxy.middleware.streams.manager import StreamManager
from bnproxy.middleware.streams.orderbook import OrderBook

M = 60_000
T0 = 1_767_225_600_000


def kline_row(t: int, rng: random.Random) -> list:
    p = 60000 + rng.random() * 1000
    return [t, f"{p:.8f}", f"{p + 12.5:.8f}", f"{p - 9.75:.8f}", f"{p + 1.25:.8f}",
            f"{rng.random() * 50:.8f}", t + M - 1, f"{rng.random() * 3e6:.8f}",
            rng.randint(100, 9000), f"{rng.random() * 25:.8f}", f"{rng.random() * 1.5e6:.8f}",
            "0"]


def frames(n_symbols: int, count: int, rng: random.Random) -> list[bytes]:
    out = []
    ids = {s: 1000 for s in range(n_symbols)}
    for i in range(count):
        s = rng.randrange(n_symbols)
        sym = f"S{s}USDT"
        if i % 2:
            p = 60000 + rng.random() * 1000
            data = {"e": "kline", "E": T0 + 999 * M + i, "s": sym, "k": {
                "t": T0 + 999 * M, "T": T0 + 1000 * M - 1, "s": sym, "i": "1m", "f": 1, "L": 9,
                "o": f"{p:.8f}", "c": f"{p + 1:.8f}", "h": f"{p + 3:.8f}", "l": f"{p - 2:.8f}",
                "v": f"{rng.random() * 50:.8f}", "n": 1234, "x": False,
                "q": f"{rng.random() * 3e6:.8f}", "V": "1.00000000", "Q": "60000.00000000",
                "B": "0"}}
            name = f"{sym.lower()}@kline_1m"
        else:
            u = ids[s]
            n = rng.randint(2, 12)
            levels = [[f"{59900 + rng.randrange(200) * 0.01 + (0 if k % 2 else 100):.8f}",
                       f"{rng.random() * 3:.8f}" if rng.random() > 0.2 else "0.00000000"]
                      for k in range(n)]
            data = {"e": "depthUpdate", "E": T0 + i, "s": sym, "U": u + 1, "u": u + n,
                    "b": [lv for lv in levels if float(lv[0]) < 60000],
                    "a": [lv for lv in levels if float(lv[0]) >= 60000]}
            ids[s] = u + n
            name = f"{sym.lower()}@depth@100ms"
        out.append(orjson.dumps({"stream": name, "data": data}))
    return out


def ingest(n_symbols: int, count: int) -> dict:
    rng = random.Random(1)
    manager = StreamManager(MemoryReactorClock(), PRODUCTION["spot"])
    series, books = {}, {}
    for s in range(n_symbols):
        sym = f"S{s}USDT"
        ks = series[s] = KlineSeries("1m", 1000)
        ks.seed([kline_row(T0 + i * M, rng) for i in range(1000)], T0 + 999 * M + 1)
        ks.last_final = False
        book = books[s] = OrderBook("spot", sym)
        book.on_event({"U": 1001, "u": 1001, "b": [], "a": []}, 0)
        book.on_snapshot({"lastUpdateId": 1000,
                          "bids": [[f"{59999.99 - k * 0.01:.8f}", "1.00000000"]
                                   for k in range(1000)],
                          "asks": [[f"{60000.01 + k * 0.01:.8f}", "1.00000000"]
                                   for k in range(1000)]}, 1000, 0)
        book.last_id = 1000
        manager.ensure(f"{sym.lower()}@kline_1m", lambda d, ks=ks: ks.apply(d["k"], d["E"]))
        manager.ensure(f"{sym.lower()}@depth@100ms", lambda d, b=book: b.on_event(d, 0))
    conn = manager.connections[0]
    data = frames(n_symbols, count, rng)
    gc.collect()
    t = time.perf_counter()
    for f in data:
        conn.received(f)
    ingest_only = count / (time.perf_counter() - t)
    # again, now also building an answer every 20th message
    data = frames(n_symbols, count, random.Random(2))
    for b in books.values():
        b.state = "live"
    for b in books.values():
        b.last_id = 1000
    t = time.perf_counter()
    for i, f in enumerate(data):
        conn.received(f)
        if i % 20 == 0:
            s = i % n_symbols
            books[s].response(100)
            series[s].response((0, len(series[s])))
    mixed = count / (time.perf_counter() - t)
    live = sum(b.state == "live" for b in books.values())
    return {"messages": count, "ingest_msgs_per_s": round(ingest_only),
            "ingest_and_serve_msgs_per_s": round(mixed), "books_live": live}


def memory(n_series: int, n_candles: int) -> dict:
    rng = random.Random(3)
    rows = [kline_row(T0 + i * M, rng) for i in range(n_candles)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = []
    for _ in range(n_series):
        ks = KlineSeries("1m", n_candles)
        ks.seed(rows, T0 + (n_candles - 1) * M + 1)
        held.append(ks)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    candles = n_series * n_candles
    return {"series": n_series, "candles": candles,
            "bytes_per_candle": round((after - before) / candles, 1),
            "row_bytes": len(orjson.dumps(rows[0]))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200_000)
    args = parser.parse_args()
    print(json.dumps({"ingestion": ingest(200, args.messages),
                      "memory": memory(1000, 1000)}, indent=2))


if __name__ == "__main__":
    main()
