"""Every Binance REST family reaches its market's host intact."""

import csv
import os

import pytest
from helpers import UPSTREAM_HOSTS, Harness, raw_exchange

from bnproxy.binance.endpoints import _HOST_MARKET
from bnproxy.server.forwarding import resolve_market, split_target

CSV = os.path.join(os.path.dirname(__file__), "..", "bnproxy", "binance", "endpoints.csv")
HOST_MARKET = _HOST_MARKET  # the CSV's host column -> market (the table's own mapping)


def operations():
    with open(CSV) as f:
        return list(csv.DictReader(f))


def test_the_table_has_all_659_operations():
    assert len(operations()) == 659


def test_every_documented_operation_reaches_its_host_intact():
    h = Harness()
    query = b"symbol=BTCUSDT&symbols=%5B%22BTCUSDT%22%5D&x=%2B1&timestamp=1&signature=ab"
    body = b"quantity=1&price=2"
    misrouted = []
    for n, row in enumerate(operations()):
        market = HOST_MARKET[row["host"]]
        path = row["path"]
        # /futures/data exists on both futures hosts: COIN-M's needs the mount.
        target = f"/coinm{path}" if (market == "coinm" and path.startswith("/futures/")) else path
        send_body = body if row["method"] in ("POST", "PUT") else None
        answer = h.request(row["method"], target.encode() + b"?" + query, body=send_body)
        seen = h.upstream.seen[-1]
        expected_host = UPSTREAM_HOSTS[market].split("//")[1].encode()
        if (answer.status != 200 or len(h.upstream.seen) != n + 1 or seen.host != expected_host
                or seen.method != row["method"]
                or seen.uri != path.encode() + b"?" + query
                or seen.body != (send_body or b"")):
            misrouted.append((row["method"], path, seen.host, seen.uri))
    assert misrouted == []
    assert len(h.upstream.seen) == 659


@pytest.mark.parametrize("mount,market", [
    ("/spot", "spot"), ("/usdm", "usdm"), ("/coinm", "coinm"), ("/options", "options"),
    ("/pm", "pm"),
])
def test_explicit_mounts_strip_the_market_and_keep_the_rest(mount, market):
    h = Harness()
    answer = h.request("GET", f"{mount}/futures/data/basis?pair=BTCUSD&x=%5B")
    assert answer.status == 200
    seen = h.upstream.seen[-1]
    assert seen.host == UPSTREAM_HOSTS[market].split("//")[1].encode()
    assert seen.uri == b"/futures/data/basis?pair=BTCUSD&x=%5B"


def test_implicit_futures_data_goes_to_usdm():
    assert resolve_market("/futures/data/basis") == ("usdm", "/futures/data/basis")
    assert resolve_market("/coinm/futures/data/basis") == ("coinm", "/futures/data/basis")
    assert resolve_market("/sapi/v1/system/status") == ("spot", "/sapi/v1/system/status")
    assert resolve_market("/spot") == (None, "/spot")
    assert resolve_market("/apix/v3") == (None, "/apix/v3")


@pytest.mark.parametrize("path", ["/", "/wapi/v3/account", "/apifoo/v3/ping", "/spot",
                                  "/index.html"])
def test_a_path_no_market_owns_gets_a_binance_shaped_404(path):
    h = Harness()
    answer = h.request("GET", path)
    assert answer.status == 404
    body = answer.json()
    assert body["code"] < 0 and "no Binance market" in body["msg"]
    assert h.upstream.seen == []


def test_absolute_form_target_does_not_steer_the_proxy():
    h = Harness()
    reply = raw_exchange(h, b"GET http://evil.example:81/api/v3/ping?a=1 HTTP/1.1\r\n"
                            b"Host: evil.example:81\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200")
    seen = h.upstream.seen[-1]
    assert seen.host == b"spot.upstream.test"
    assert seen.uri == b"/api/v3/ping?a=1"


def test_split_target_handles_absolute_and_origin_forms():
    assert split_target(b"/api/v3/ping?a=1&b=%20") == (b"/api/v3/ping", b"a=1&b=%20")
    assert split_target(b"HTTP://x.y/fapi/v1/time") == (b"/fapi/v1/time", b"")
    assert split_target(b"http://x.y?a=1") == (b"/", b"a=1")
    assert split_target(b"/api/v3/ping?a=1?b") == (b"/api/v3/ping", b"a=1?b")
