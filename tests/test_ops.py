"""Metrics, probes and the graceful drain."""

import json
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest
from helpers import FakeResponse, Harness, RecordingUpstream, chain
from processes import TWISTD, free_port, post_json, wait_listening
from twisted.internet.defer import succeed


def test_metrics_are_admin_only_and_count_answers():
    h = Harness(middleware=chain("cache", "ratelimit"), trusted_proxies=("127.0.0.1/32",))
    h.request("GET", "/api/v3/depth?symbol=BTCUSDT&limit=5")
    h.request("GET", "/api/v3/depth?symbol=BTCUSDT&limit=5")
    h.request("GET", "/nope")
    text = h.request("GET", "/metrics").body.decode()
    assert ('bnproxy_requests_total{endpoint="/api/v3/depth",market="spot",source="cache",'
            'status="200"} 1.0') in text
    assert ('bnproxy_requests_total{endpoint="/api/v3/depth",market="spot",'
            'source="upstream",status="200"} 1.0') in text
    assert 'bnproxy_weight_used{pool="spot"} 7.0' in text  # reconciled: upstream said 7
    assert 'bnproxy_weight_limit{pool="spot"} 6000.0' in text
    assert 'bnproxy_ban_remaining_seconds{pool="spot"} 0.0' in text
    assert "bnproxy_cache_hits_total 1.0" in text
    assert 'bnproxy_client_weight_total{client="127.0.0.1"} 5.0' in text
    assert 'bnproxy_upstream_latency_seconds_count{market="spot"} 1.0' in text
    assert 'bnproxy_upstream_reachable{market="spot"} 1.0' in text
    denied = h.request("GET", "/metrics", headers={b"X-Forwarded-For": b"203.0.113.1"})
    assert denied.status == 403


def test_live_always_and_ready_when_upstreams_answer_even_banned():
    statuses = iter([200, 418])

    def respond(request, seen):
        request.setResponseCode(next(statuses, 200))
        request.setHeader(b"retry-after", b"60")
        return b"{}"
    h = Harness(RecordingUpstream(respond), middleware=chain("ratelimit"))
    assert h.request("GET", "/live").status == 200
    not_yet = h.request("GET", "/ready")
    assert not_yet.status == 503 and "not reached yet" in not_yet.json()["problems"][0]
    h.request("GET", "/api/v3/ping")
    assert h.request("GET", "/ready").status == 200
    h.request("GET", "/api/v3/time")  # Binance bans us
    banned = h.request("GET", "/ready")  # a banned proxy still answers every bot
    assert banned.status == 200 and banned.json()["status"] == "banned"
    assert "ban in force for spot" in banned.json()["problems"][0]
    assert h.request("GET", "/health").json()["status"] == "banned"
    h.clock.advance(61)
    assert h.request("GET", "/ready").json() == {"status": "ready"}


def test_an_unreachable_upstream_makes_the_proxy_not_ready():
    from test_forwarding import ScriptedAgent
    from twisted.internet.defer import fail
    from twisted.internet.error import ConnectionRefusedError
    def ok():
        return succeed(FakeResponse(200, {b"content-type": b"application/json"}, b"{}"))

    h = Harness(agent=ScriptedAgent(ok, *[lambda: fail(ConnectionRefusedError())] * 4))
    h.request("GET", "/api/v3/ping")  # reached once
    h.request("GET", "/api/v3/ping")
    assert h.request("GET", "/ready").status == 200  # one failure is not an outage
    h.request("GET", "/api/v3/ping")
    answer = h.request("GET", "/ready")  # two in a row are
    assert answer.status == 503 and "upstream spot unreachable" in answer.json()["problems"][0]


def test_a_failure_between_successes_never_makes_the_proxy_unready():
    from test_forwarding import ScriptedAgent
    from twisted.internet.defer import fail
    from twisted.internet.error import ConnectionRefusedError

    def ok():
        return succeed(FakeResponse(200, {b"content-type": b"application/json"}, b"{}"))

    h = Harness(agent=ScriptedAgent(ok, lambda: fail(ConnectionRefusedError()), ok,
                                    lambda: fail(ConnectionRefusedError())))
    for _ in range(4):
        h.request("GET", "/api/v3/ping")
        assert h.request("GET", "/ready").status == 200


def _poll(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.02)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
    except OSError:
        return False
    return True


@pytest.mark.integration
def test_sigterm_drains_an_in_flight_request_then_exits_0(tmp_path):
    xport, pport = free_port(), free_port()
    exchange = subprocess.Popen([TWISTD, "-n", "--pidfile=", "bnproxy-exchange", "--port",
                                 f"tcp:{xport}:interface=127.0.0.1"], cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = open(tmp_path / "proxy.log", "w+")
    proxy = None
    try:  # both start at once: the proxy asks the exchange nothing before the first request
        proxy = subprocess.Popen([TWISTD, "-n", "--pidfile=", "bnproxy", "--port",
                                  f"tcp:{pport}:interface=127.0.0.1", "--upstream",
                                  f"spot=http://127.0.0.1:{xport}/spot", "--drain-timeout", "10",
                                  "--middleware-chain", "logger"], cwd=tmp_path, stdout=log,
                                 stderr=subprocess.STDOUT)
        wait_listening(xport, exchange)
        wait_listening(pport, proxy)
        post_json(f"http://127.0.0.1:{xport}/_fake/faults", {"latency": 1.0})
        result = {}

        def slow_request():
            with urllib.request.urlopen(f"http://127.0.0.1:{pport}/api/v3/time", timeout=20) as r:
                result["status"] = r.status
                result["body"] = json.loads(r.read())

        def in_flight() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{pport}/metrics", timeout=5) as r:
                return b"bnproxy_inflight_requests 1.0" in r.read()

        worker = threading.Thread(target=slow_request)
        worker.start()
        _poll(in_flight, 10, "the request never reached the proxy")  # waiting on the exchange
        proxy.send_signal(signal.SIGTERM)
        _poll(lambda: not _listening(pport), 10, "still listening after SIGTERM")
        assert "status" not in result  # it stopped listening with the request still in flight
        worker.join(20)
        assert result.get("status") == 200 and result["body"]["serverTime"] > 0
        assert proxy.wait(20) == 0
        assert not _listening(pport)
        log.seek(0)
        text = log.read()
        assert "draining 1 request(s)" in text and "/api/v3/time" in text
    finally:
        for p in (proxy, exchange):
            if p is not None and p.poll() is None:
                p.kill()
        log.close()
