"""The access line, byte for byte, and what the logger remembers to write it
cheaply: a repeated request's parts are reused only while everything the
line says is the same; a keyed request's never are (no key is kept)."""

import json

import pytest
from twisted.internet import task

from bnproxy.binance.endpoints import load_endpoints
from bnproxy.chain.messages import ProxyRequest, ProxyResponse
from bnproxy.middleware.logger import BUCKET, FIELDS, MAX_BOTS, OTHER, AccessLogger, BotLedger

KEY = b"vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
DEPTH = load_endpoints().lookup("spot", "GET", "/api/v3/depth")
NOW = 1_767_225_607.25  # 2026-01-01T00:00:07.250Z


class Lines:
    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def write(self, line: bytes) -> None:
        self.lines.append(line)


def logger(fmt="text"):
    clock = task.Clock()
    clock.advance(NOW)
    made = AccessLogger("logger", clock, fmt, b"salt", output=Lines())
    return made, clock


def depth(*headers, client="10.0.0.1", query=b"symbol=BTCUSDT&limit=5", arrival=NOW - 0.5):
    return ProxyRequest("GET", "spot", "/api/v3/depth", query, tuple(headers), b"", client,
                        arrival, DEPTH)


HIT = ProxyResponse(200, ((b"content-type", b"application/json"), (b"x-cache", b"HIT")),
                    b'{"bids":[]}', "cache", "HIT")
MISS = ProxyResponse(200, ((b"x-cache", b"MISS"),), b'{"bids":[],"asks":[]}', "upstream", "",
                     5)
BANNED = ProxyResponse(418, (), b'{"code":-1003}', "local", "banned")


def served(log, request, response):
    assert log.handle(request, lambda r: response) is response
    return log.output.lines[-1]


def test_a_text_line_in_full():
    log, _ = logger()
    request = depth((b"user-agent", b"ccxt/4.3.1 (+https://x)"), (b"x-bnproxy-client", b"bot-7"))
    assert served(log, request, HIT) == (
        b'2026-01-01T00:00:07Z 10.0.0.1 "GET /spot/api/v3/depth?symbol=BTCUSDT&limit=5" '
        b"200 11 500.000ms source=cache cache=HIT weight=0 key=- bot=bot-7 ua=ccxt\n")


def test_a_json_line_in_full():
    log, _ = logger("json")
    line = served(log, depth((b"user-agent", b"python-requests/2.31")), MISS)
    assert line == (
        b'{"time":"2026-01-01T00:00:07.250Z","client":"10.0.0.1","ms":500.000,"bot":"10.0.0.1",'
        b'"ua":"python-requests","key":"-","method":"GET","market":"spot",'
        b'"path":"/api/v3/depth","query":"symbol=BTCUSDT&limit=5","status":200,"bytes":21,'
        b'"source":"upstream","cache":"MISS","weight":5,"detail":""}\n')
    assert list(json.loads(line)) == ["time", "client", "ms", "bot", "ua", "key", "method",
                                      "market", "path", "query", "status", "bytes", "source",
                                      "cache", "weight", "detail"]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_repeated_request_says_what_each_answer_and_moment_say(fmt):
    log, clock = logger(fmt)
    headers = ((b"user-agent", b"ccxt/4.3"),)
    lines = [served(log, depth(*headers), MISS)]
    clock.advance(1.5)
    lines.append(served(log, depth(*headers, arrival=clock.seconds() - 0.25), HIT))
    lines.append(served(log, depth(*headers, arrival=clock.seconds()), HIT))
    lines.append(served(log, depth(*headers, client="10.0.0.2"), BANNED))
    lines.append(served(log, depth(*headers, query=b"symbol=ETHUSDT"), HIT))
    if fmt == "text":
        assert lines[0].startswith(b"2026-01-01T00:00:07Z 10.0.0.1 ")
        assert b" 200 21 500.000ms source=upstream cache=MISS weight=5 key=- bot=10.0.0.1 " \
            in lines[0]
        assert lines[1].startswith(b"2026-01-01T00:00:08Z 10.0.0.1 ")
        assert b" 200 11 250.000ms source=cache cache=HIT weight=0 " in lines[1]
        assert b" 200 11 0.000ms source=cache " in lines[2]
        assert b" 10.0.0.2 " in lines[3] and b" 418 14 " in lines[3]
        assert b" source=local cache=- weight=0 key=- bot=10.0.0.2 ua=ccxt\n" in lines[3]
        assert b'"GET /spot/api/v3/depth?symbol=ETHUSDT" 200 11 ' in lines[4]
    else:
        rows = [json.loads(line) for line in lines]
        assert [(r["time"], r["ms"]) for r in rows[:3]] == [
            ("2026-01-01T00:00:07.250Z", 500.0), ("2026-01-01T00:00:08.750Z", 250.0),
            ("2026-01-01T00:00:08.750Z", 0.0)]
        assert [(r["source"], r["cache"], r["weight"], r["bytes"]) for r in rows[:2]] == [
            ("upstream", "MISS", 5, 21), ("cache", "HIT", 0, 11)]
        assert (rows[3]["client"], rows[3]["bot"], rows[3]["status"], rows[3]["detail"]) == (
            "10.0.0.2", "10.0.0.2", 418, "banned")
        assert rows[4]["query"] == "symbol=ETHUSDT"
    totals = log.ledger.totals()
    row = dict(zip(FIELDS, totals["10.0.0.1"], strict=True))
    assert (row["requests"], row["upstream"], row["cache"], row["spent"]) == (4, 1, 3, 5)
    assert row["asked"] == 4 * DEPTH.weight({"symbol": "BTCUSDT", "limit": "5"}) - \
        DEPTH.weight({"symbol": "BTCUSDT", "limit": "5"}) + DEPTH.weight({"symbol": "ETHUSDT"})
    banned = dict(zip(FIELDS, totals["10.0.0.2"], strict=True))
    assert (banned["requests"], banned["ban"], banned["asked"]) == (1, 1, 0)


def test_each_key_is_named_by_its_own_hash_and_none_is_kept():
    log, _ = logger()
    other = KEY[::-1]
    lines = [served(log, depth((b"x-mbx-apikey", k)), HIT) for k in (KEY, other, KEY)]
    keys = [line.split(b" key=")[1].split(b" ")[0] for line in lines]
    assert keys[0] == keys[2] != keys[1] and b"-" not in keys
    assert all(b" bot=" + k + b" " in line for k, line in zip(keys, lines, strict=True))
    remembered = repr(vars(log)).encode()
    assert KEY not in remembered and other not in remembered


def test_without_a_writer_every_answer_is_still_counted():
    log, _ = logger()
    log.output = None
    log.handle(depth(), lambda r: HIT)
    log.handle(depth(), lambda r: HIT)
    log.output = Lines()
    line = served(log, depth(), HIT)
    assert log.ledger.totals()["10.0.0.1"][0] == 3
    assert line.endswith(b" 200 11 500.000ms source=cache cache=HIT weight=0 key=- "
                         b"bot=10.0.0.1 ua=-\n")


def test_the_ledgers_totals_outlast_its_windows_and_bots_beyond_the_cap_are_other():
    clock = task.Clock()
    clock.advance(NOW)
    ledger = BotLedger(clock)
    for minute in range(20):  # one request a minute, two answered by the cache
        ledger.count("bot-1", depth(), HIT if minute % 10 else MISS)
        clock.advance(60)
    ledger.count("bot-1", depth(), BANNED)
    weight = DEPTH.weight({"symbol": "BTCUSDT", "limit": "5"})
    row = dict(zip(FIELDS, ledger.totals()["bot-1"], strict=True))
    assert (row["requests"], row["cache"], row["upstream"], row["ban"]) == (21, 18, 2, 1)
    assert (row["asked"], row["spent"]) == (20 * weight, 10)
    bot = ledger.bots()[0]
    assert (bot["requests"], bot["last_minute"]["requests"], bot["last_15m"]["requests"]) == (
        21, 1, 15)
    assert bot["last_seen"] == round(clock.seconds(), 3)
    for n in range(MAX_BOTS + 5):
        ledger.count(f"b{n}", depth(), HIT)
    clock.advance(BUCKET)
    ledger.count("b3", depth(), HIT)
    ledger.count(f"b{MAX_BOTS + 9}", depth(), HIT)
    totals = ledger.totals()
    assert len(totals) == MAX_BOTS + 1 and totals[OTHER][0] == 7 and totals["b3"][0] == 2
    assert sum(t[0] for t in totals.values()) == 21 + MAX_BOTS + 5 + 2
