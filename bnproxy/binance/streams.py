"""Binance's public websocket streams as a server speaks them (FACTS.md §6):
paths, the control protocol's answers and errors, framing, per-connection
limits, pings and close codes. The proxy's gateway applies these to bots so
that a bot that works through the proxy also works direct.

Sources beyond FACTS.md §6: "Invalid request: invalid stream" (code 2) for a
malformed stream name in SUBSCRIBE (ccxt/ccxt#19833, ctubio/Krypto-trading-bot
#1121); a connection over the message rate is closed with 1008 "Too many
requests" (binance/binance-connector-js#530); a well-formed stream of an
unknown symbol is accepted and stays silent (JKorf/Binance.Net#620); a path
that is neither ``/ws…`` nor ``/stream…`` is refused (ccxt/binance-api-node
#121: "Illegal format ws or stream").
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote

import attrs

from bnproxy.binance.marketdata import MESSAGES_PER_SECOND
from bnproxy.binance.privacy import KEY_LIKE_LENGTH

# Streams one connection may hold. Spot: 1024. Futures: 1024 in current
# docs, 200 in older ones (FACTS.md §9): the smaller is kept.
STREAMS_PER_CONNECTION = {"spot": 1024, "usdm": 200, "coinm": 200}
# Incoming messages a connection may send per second (pings, pongs and
# control messages all count); over it the connection is closed.
MESSAGE_RATE = MESSAGES_PER_SECOND
# Server pings every N seconds; no pong within M seconds disconnects.
PING_INTERVAL = {"spot": 20.0, "usdm": 180.0, "coinm": 180.0}
PONG_TIMEOUT = {"spot": 60.0, "usdm": 600.0, "coinm": 600.0}

CLOSE_POLICY = 1008  # over the message rate
TOO_MANY_REQUESTS = "Too many requests"

METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
COMBINED = "combined"

# Market mounts that carry streams, and USD-M's routed paths.
STREAM_MARKETS = ("spot", "usdm", "coinm")
USDM_ROUTES = ("public", "market")

# A stream name: lowercase symbol (or ``!``-prefixed all-market name) and kinds.
_STREAM = re.compile(r"^(?:![a-zA-Z]+|[a-z0-9_\-]{1,40})(?:@[a-zA-Z0-9_+:\-]{1,40}){0,3}$")
_ID = re.compile(r"^[A-Za-z0-9]{1,36}$")
ID_MAX = 2**63 - 1

COMBINED_HEAD = b'{"stream":"'
COMBINED_MID = b'","data":'


def valid_stream(name: str) -> bool:
    """Whether ``name`` is shaped like a Binance stream name (``symbol@kind``,
    ``!name@arr``); the symbol may still be unknown."""
    if name in ("!bookTicker", "!contractInfo"):
        return True
    return "@" in name and _STREAM.match(name) is not None


def valid_id(rid: object) -> bool:
    """A request id Binance accepts: a 64-bit signed int, up to 36
    alphanumerics, or null."""
    if rid is None:
        return True
    if isinstance(rid, bool):
        return False
    if isinstance(rid, int):
        return -ID_MAX - 1 <= rid <= ID_MAX
    return isinstance(rid, str) and _ID.match(rid) is not None


def symbol_of(stream: str) -> str | None:
    """The exchange symbol a stream is about (``btcusdt@trade`` → ``BTCUSDT``),
    None for all-market streams (``!miniTicker@arr``)."""
    if stream.startswith("!"):
        return None
    return stream.partition("@")[0].upper()


def combined_frame(stream: str, data: bytes) -> bytes:
    """A payload as a combined-stream connection receives it."""
    return COMBINED_HEAD + stream.encode() + COMBINED_MID + data + b"}"


def raw_data(stream: str, combined: bytes) -> bytes | None:
    """The payload inside a combined frame of ``stream``, as a raw (``/ws``)
    connection receives it: Binance's bytes, not re-encoded. None when the
    frame is not in Binance's exact layout."""
    head = len(COMBINED_HEAD) + len(stream) + len(COMBINED_MID)
    if (combined[-1:] != b"}" or not combined.startswith(COMBINED_HEAD)
            or combined[len(COMBINED_HEAD):len(COMBINED_HEAD) + len(stream)] != stream.encode()
            or combined[head - len(COMBINED_MID):head] != COMBINED_MID):
        return None
    return combined[head:-1]


def error(code: int, msg: str, rid: object = None) -> dict:
    return {"error": {"code": code, "msg": msg}, "id": rid}


INVALID_JSON = (3, "Invalid JSON: expected value at line 1 column 1")
MISSING_METHOD = (2, "Invalid request: missing field `method` at line 1 column 1")
BAD_ID = (2, "Invalid request: request ID must be an unsigned integer")
INVALID_STREAM = (2, "Invalid request: invalid stream")
TOO_MANY_STREAMS = (2, "Invalid request: too many streams")
INVALID_PARAMS = (2, "Invalid request: invalid params")
PROPERTY_NAME = (2, "Invalid request: property name must be a string")
UNKNOWN_PROPERTY = (0, "Unknown property")
NOT_BOOLEAN = (1, "Invalid value type: expected Boolean")


def unknown_method(method: object) -> tuple[int, str]:
    return (2, f"Invalid request: unknown variant {method}, expected one of `SUBSCRIBE`, "
               "`UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY` at line "
               "1 column 28")


ILLEGAL_PATH = "Illegal format ws or stream"


@attrs.frozen
class StreamPath:
    """A bot's stream URL, decided once: market, USD-M route (or None),
    combined framing, the streams named in the URL."""

    market: str
    route: str | None
    combined: bool
    streams: tuple[str, ...]


def parse_stream_path(path: str, query: str) -> StreamPath | None:
    """The stream URL a bot opened (``/ws``, ``/ws/a/b``, ``/stream?streams=a/b``,
    under ``/spot``, ``/usdm`` (``/public``, ``/market``) or ``/coinm``;
    bare paths are spot), or None: not a public stream URL."""
    parts = [p for p in path.split("/") if p]
    market = "spot"
    if parts and parts[0] in STREAM_MARKETS:
        market = parts.pop(0)
    route = None
    if market == "usdm" and parts and parts[0] in USDM_ROUTES:
        route = parts.pop(0)
    if not parts:
        return None
    if parts[0] == "ws":
        names = tuple(unquote(p) for p in parts[1:])
        return StreamPath(market, route, False, names)
    if parts[0] == "stream" and len(parts) == 1:
        names_list: list[str] = []
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key == "streams":
                names_list += [unquote(s) for s in value.split("/") if s]
        return StreamPath(market, route, True, tuple(names_list))
    return None


def default_stream_format(query: str) -> bool:
    """Whether a stream URL's query leaves Binance's frames in their default
    format: no ``timeUnit`` (spot's ``timeUnit=MICROSECOND``, FACTS.md §6),
    which streams shared between bots do not carry."""
    return not any(k.lower() == "timeunit" for k, _ in parse_qsl(query, keep_blank_values=True))


# New websocket connections per IP: 300 per 5 minutes (spot; the futures docs
# state none, the same pace is kept there). Counted per one-minute window: a
# 5-minute span that does not start on a minute touches 6 windows, so 50 a
# minute (not 60) keeps every span within it, however the grants fall.
CONNECTIONS_PER_5_MINUTES = 300
CONNECTIONS_PER_MINUTE = CONNECTIONS_PER_5_MINUTES // 6


# -- user-data streams (FACTS.md §2.1, §6) ---------------------------------------------
# A listenKey names one account's stream: ``/ws/<listenKey>`` (futures; also
# in a combined ``/stream?streams=`` list) or USD-M's routed
# ``/private/ws?listenKey=<k>&events=…``. Futures listenKeys are 64
# alphanumerics; spot's were retired with ``/api/v3/userDataStream``
# (2026-02-20; listenKey streams on stream.binance.com deprecated 2025-04-07).
LISTEN_KEY = re.compile(rf"^[A-Za-z0-9]{{{KEY_LIKE_LENGTH},}}$")
USER_DATA_MARKETS = ("usdm", "coinm")
PRIVATE_ROUTE = "private"
SPOT_USER_DATA_RETIRED = ("spot listenKey streams were retired by Binance (2026-02-20); "
                          "use the WebSocket API's userDataStream.subscribe")


@attrs.frozen
class UserDataPath:
    """A bot's user-data stream URL: its market and the target (path and
    query, under the market's stream base) to open upstream as given."""

    market: str
    target: str


def user_data_path(path: str, query: str) -> UserDataPath | None:
    """The user-data stream a URL opens (``/ws/<listenKey>``, a listenKey in
    ``/stream?streams=``, USD-M's ``/private/…``; under a market's mount,
    bare paths being spot), or None: not a user-data stream URL."""
    parts = [p for p in path.split("/") if p]
    market = "spot"
    if parts and parts[0] in STREAM_MARKETS:
        market = parts.pop(0)
    target = "/" + "/".join(parts) + (f"?{query}" if query else "")
    if market == "usdm" and parts and parts[0] == PRIVATE_ROUTE:
        return UserDataPath(market, target) if parts[1:2] in (["ws"], ["stream"]) else None
    if market == "usdm" and parts and parts[0] in USDM_ROUTES:
        parts.pop(0)
    parsed = parse_stream_path("/" + "/".join(parts), query)
    if parsed is None or not any(LISTEN_KEY.match(n) for n in parsed.streams):
        return None
    return UserDataPath(market, target)
