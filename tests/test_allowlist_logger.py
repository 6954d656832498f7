"""The allowlist and the redacting access log."""

import json

import pytest
from helpers import API_KEY, SECRET, Harness, chain, raw_exchange, sign
from twisted.internet.address import UNIXAddress
from twisted.logger import formatEvent, globalLogPublisher

from bnproxy.server.clientaddr import ClientResolver, normalise, parse_networks


def via(address: bytes):
    return {b"X-Forwarded-For": address}


@pytest.fixture
def guarded():
    return Harness(middleware=chain("allowlist", allowlist={"allow": "10.0.0.0/8 2001:db8::/32"}),
                   trusted_proxies=("127.0.0.1/32",))


def test_listed_networks_pass_and_others_get_403(guarded):
    assert guarded.request("GET", "/api/v3/ping", headers=via(b"10.1.2.3")).status == 200
    assert guarded.request("GET", "/api/v3/ping", headers=via(b"2001:db8::7")).status == 200
    denied = guarded.request("GET", "/api/v3/ping", headers=via(b"203.0.113.9"))
    assert denied.status == 403 and denied.json()["code"] == -1002
    assert len(guarded.upstream.seen) == 2


def test_addresses_are_normalised_before_matching(guarded):
    assert guarded.request("GET", "/api/v3/ping", headers=via(b"::ffff:10.0.0.1")).status == 200
    assert guarded.request("GET", "/api/v3/ping", headers=via(b"[2001:db8::1%eth0]:443")
                           ).status == 200
    assert normalise("::ffff:127.0.0.1") == "127.0.0.1"
    assert normalise("fe80::1%eth0") == "fe80::1"


def test_the_default_admits_loopback_and_private_networks_only():
    h = Harness(middleware=chain("allowlist"), trusted_proxies=("127.0.0.1/32",))
    for ok in (b"192.168.1.5", b"172.20.0.1", b"fd00::1", b"127.0.0.1"):
        assert h.request("GET", "/api/v3/ping", headers=via(ok)).status == 200
    assert h.request("GET", "/api/v3/ping", headers=via(b"8.8.8.8")).status == 403


PING = b"GET /api/v3/ping HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n"


def test_a_bot_on_the_unix_socket_is_admitted_like_loopback():
    """``--port unix:/path``: the peer has no IP address; the default
    allowlist (which admits loopback) admits it, as the admin guard does."""
    h = Harness(middleware=chain("allowlist"))
    written = raw_exchange(h, PING, UNIXAddress(b"/run/bnproxy.sock"))
    assert written.startswith(b"HTTP/1.1 200"), written[:200]
    assert raw_exchange(h, PING, UNIXAddress(None)).startswith(b"HTTP/1.1 200")
    assert len(h.upstream.seen) == 2


def test_a_unix_socket_peer_is_refused_when_loopback_is():
    h = Harness(middleware=chain("allowlist", allowlist={"allow": "10.0.0.0/8"}))
    written = raw_exchange(h, PING, UNIXAddress(b"/run/bnproxy.sock"))
    assert written.startswith(b"HTTP/1.1 403") and b"-1002" in written
    assert not h.upstream.seen


def test_a_proxy_on_the_unix_socket_is_trusted_like_loopback():
    resolve = ClientResolver(parse_networks(["127.0.0.1/32"]))
    assert resolve("unix", [(b"x-forwarded-for", b"198.51.100.7")]) == "198.51.100.7"
    assert ClientResolver(parse_networks(["10.0.0.1/32"]))(
        "unix", [(b"x-forwarded-for", b"198.51.100.7")]) == "unix"


def test_a_forged_forwarded_header_from_an_untrusted_peer_changes_nothing():
    resolve = ClientResolver(parse_networks(["10.0.0.1/32"]))
    assert resolve("203.0.113.5", [(b"x-forwarded-for", b"10.9.9.9")]) == "203.0.113.5"
    # trusted peer: walk right to left to the first untrusted hop
    hops = [(b"x-forwarded-for", b"1.1.1.1, 198.51.100.7"), (b"x-forwarded-for", b"10.0.0.1")]
    assert resolve("10.0.0.1", hops) == "198.51.100.7"
    assert resolve("10.0.0.1", [(b"x-forwarded-for", b"garbage")]) == "garbage"
    forwarded = ClientResolver(parse_networks(["10.0.0.1/32"]), "forwarded")
    assert forwarded("10.0.0.1", [(b"forwarded", b'for=192.0.2.60;proto=http, '
                                                b'for="[2001:db8::1]:4711"')]) == "2001:db8::1"


def test_bad_networks_are_a_config_error():
    from bnproxy.config.reader import ConfigError
    with pytest.raises(ConfigError, match="allow.*not an IP network"):
        Harness(middleware=chain("allowlist", allowlist={"allow": "10.0.0.0/8 nonsense"}))


LISTEN_KEY = "pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s61cv6a81va65sdf19v8a65a1"


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_access_logs_hold_no_keys_and_no_signatures(tmp_path, fmt):
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        path = tmp_path / "access.log"
        h = Harness(middleware=chain("logger", "cache", logger={"format": fmt}),
                    access_log=str(path))
        for i in range(3):
            query = f"symbol=BTCUSDT&side=BUY&quantity=1&timestamp={1700000000000 + i}".encode()
            signed = sign(query, b"price=1")
            h.request("POST", b"/api/v3/order?" + signed, headers={b"X-MBX-APIKEY": API_KEY},
                      body=b"price=1")
            h.request("PUT", f"/fapi/v1/listenKey?listenKey=lk-secret-{i}",
                      headers={b"X-MBX-APIKEY": API_KEY})
            h.request("GET", f"/api/v3/depth?symbol=BTCUSDT&apiKey={API_KEY.decode()}")
        # a user-data stream's path asked without an upgrade: not an endpoint, logged
        h.request("GET", "/spot/ws/" + LISTEN_KEY)
        h.request("GET", "/api/v3/depth?symbol=BTCUSDT&limit=5")
        h.service.access_log.flush()
    finally:
        globalLogPublisher.removeObserver(events)
    text = path.read_text() + "\n".join(formatEvent(e) or "" for e in events)
    assert API_KEY.decode() not in text
    assert SECRET.decode() not in text
    assert "lk-secret" not in text
    assert LISTEN_KEY not in text and "[redacted]" in text
    signature_values = [line for line in text.splitlines() if "signature=" in line]
    assert all("signature=[redacted]" in line for line in signature_values)
    assert len(path.read_text().splitlines()) == 11
    last = path.read_text().splitlines()[-1]
    if fmt == "json":
        record = json.loads(last)
        assert record["status"] == 200 and record["source"] == "upstream"
        assert record["cache"] == "MISS" and record["weight"] == 5
        keyed = json.loads(path.read_text().splitlines()[0])
        assert keyed["key"] != "-" and len(keyed["key"]) == 10
    else:
        assert '"GET /spot/api/v3/depth?symbol=BTCUSDT&limit=5" 200' in last
        assert "weight=5" in last


def test_the_key_hash_tells_bots_apart_without_showing_the_key(tmp_path):
    path = tmp_path / "a.log"
    h = Harness(middleware=chain("logger", logger={"format": "json", "key_salt": "s"}),
                access_log=str(path))
    h.request("GET", "/api/v3/account", headers={b"X-MBX-APIKEY": b"key-one"})
    h.request("GET", "/api/v3/account", headers={b"X-MBX-APIKEY": b"key-two"})
    h.request("GET", "/api/v3/account", headers={b"X-MBX-APIKEY": b"key-one"})
    h.service.access_log.flush()
    keys = [json.loads(line)["key"] for line in path.read_text().splitlines()]
    assert keys[0] == keys[2] != keys[1]


def test_a_bot_cannot_forge_the_internal_marker():
    h = Harness(middleware=chain("allowlist", allowlist={"allow": "10.0.0.0/8"}))
    answer = h.request("GET", "/api/v3/ping", headers={b"X-Bnproxy-Internal": b"streams"})
    assert answer.status == 403  # the marker was stripped at the door
    assert h.upstream.seen == []
