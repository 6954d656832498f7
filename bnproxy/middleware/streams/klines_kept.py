"""Kline series kept across a restart (issue 18): closed candles never change,
so a proxy that stops writes each series' closed candles to its
``klines_file`` (``STATE_DIR/bnproxy-klines.json``), and the next start takes
them up again, subscribes their streams at once and needs no seed: the
stream's first message continues the series, or, when candles closed while
no proxy was running, one backfill page of exactly the missed candles
repairs it (``limit`` = their count: weight 1 on the futures markets instead
of 5 or 10 for a full seed; spot charges 2 whatever the limit).

A kept series is used only if the file is no older than ``max_age``, names
the same upstream for its market, holds contiguous closed candles, and no
more candles are missing since than one page can bring. The file is written
whole and renamed (``bnproxy.statefile``) and read up to ``MAX_FILE`` bytes;
one that cannot be read or parsed is ignored with a log line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from twisted.logger import Logger

from bnproxy.binance.intervals import next_open
from bnproxy.binance.markets import Market
from bnproxy.statefile import read_bounded, write_atomically

_log = Logger(namespace="bnproxy.streams")

MAX_FILE = 64 * 1024 * 1024  # bytes written (series past it are left out) and read
VERSION = 1
_NUMBERS = frozenset({0, 6, 8})  # a row's fields that are numbers (the rest are strings)

Key = tuple[str, str, str]  # (market, symbol, interval)


def encode(series: Iterable[tuple[Key, list[bytes]]], markets: Mapping[str, Market],
           now_ms: int, limit: int | None = None) -> bytes:
    """The file's bytes: each series' closed rows (already their exact REST
    encoding) under its market's upstream; series that would take the file
    past ``limit`` (``MAX_FILE``) bytes are left out."""
    limit = MAX_FILE if limit is None else limit
    head = b'{"version":%d,"saved":%d,"series":[' % (VERSION, now_ms)
    parts: list[bytes] = []
    size = len(head) + 2
    for (market, symbol, interval), rows in series:
        m = markets.get(market)
        if not rows or m is None or m.rest_base is None:
            continue
        part = (orjson.dumps({"market": market, "upstream": m.rest_base, "symbol": symbol,
                              "interval": interval})[:-1]
                + b',"rows":[' + b",".join(rows) + b"]}")
        if size + len(part) + 1 > limit:
            continue
        parts.append(part)
        size += len(part) + 1
    return head + b",".join(parts) + b"]}"


def decode(raw: bytes, markets: Mapping[str, Market], now_ms: int,
           max_age: float) -> dict[Key, list[list[Any]]]:
    """The usable series of a file's bytes (see the module's rules). Raises
    ``ValueError`` for a file that is not one of ours."""
    kept = orjson.loads(raw)
    if not isinstance(kept, dict) or kept.get("version") != VERSION:
        raise ValueError("not a kept klines file of this version")
    saved = kept.get("saved")
    if not isinstance(saved, int) or not 0 <= now_ms - saved <= max_age * 1000:
        return {}  # too old (or from the future): every candle since would be missing
    found: dict[Key, list[list[Any]]] = {}
    for entry in kept.get("series") or ():
        try:
            key = (entry["market"], entry["symbol"], entry["interval"])
            upstream, rows = entry["upstream"], entry["rows"]
        except (KeyError, TypeError):
            continue
        m = markets.get(key[0])
        if (m is None or upstream != m.rest_base or not isinstance(key[1], str)
                or key[2] not in m.kline_intervals):
            continue  # another exchange's candles, or a market not served now
        if usable(rows, key[2], now_ms, m.kline_max):
            found[key] = rows
    return found


def usable(rows: Any, interval: str, now_ms: int, page: int) -> bool:
    """Contiguous closed candles (12 fields each, numbers and strings where
    Binance has them, so re-encoded they are Binance's bytes) from which one
    page of at most ``page`` rows reaches the current candle."""
    if not isinstance(rows, list) or not rows:
        return False
    try:
        if not all(isinstance(r, list) and len(r) == 12 and all(
                isinstance(v, int) if i in _NUMBERS else isinstance(v, str)
                for i, v in enumerate(r)) for r in rows):
            return False  # not rows as Binance encodes them
        opens = [r[0] for r in rows]
        if any(next_open(interval, a) != b for a, b in zip(opens, opens[1:])):
            return False
        if rows[-1][6] >= now_ms:
            return False  # not closed
        t, missing = opens[-1], 0
        while t <= now_ms:  # the candles from the last kept to the current one
            t = next_open(interval, t)
            missing += 1
            if missing > page:
                return False
    except (TypeError, ValueError, OverflowError, IndexError):
        return False
    return True


def load(path: str, markets: Mapping[str, Market], now_ms: int,
         max_age: float) -> dict[Key, list[list[Any]]]:
    """The usable series kept in ``path`` (none if there is no file; a file
    that cannot be used is logged and ignored)."""
    try:
        raw = read_bounded(path, MAX_FILE)
        if raw is None:
            return {}
        return decode(raw, markets, now_ms, max_age)
    except (OSError, ValueError) as e:  # orjson's JSONDecodeError is a ValueError
        _log.warn("kline series in {path} not used: {e}", path=path, e=e)
        return {}


def save(path: str, data: bytes) -> None:
    try:
        write_atomically(path, data)
    except OSError as e:
        _log.warn("kline series not kept in {path}: {e}", path=path, e=e)
