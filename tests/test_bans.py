"""Bans with no holes (issue 12): /sapi governed by its own rules, a 418 bans
the whole host, a malformed ban signal still bans, and ban state is durable
and never silently forgotten. Virtual time, in-memory upstream."""

import json
import math
import os

import pytest
from helpers import Harness, RecordingUpstream, chain
from zope.interface.verify import verifyObject

from bnproxy.chain.interfaces import (
    IHealthReporter,
    IMetricsSource,
    IMiddleware,
    IReadinessCheck,
    IWeightGovernor,
)
from bnproxy.config.reader import ConfigError

SAPI_A = "/sapi/v1/system/status"
SAPI_B = "/sapi/v1/asset/assetDetail"


class Scripted(RecordingUpstream):
    """Answers each request with the next (status, headers, body) of a script,
    then 200 {}."""

    def __init__(self, *script):
        self.script = list(script)
        super().__init__(self._answer)

    def _answer(self, request, seen):
        status, headers, body = self.script.pop(0) if self.script else (200, {}, b"{}")
        request.setResponseCode(status)
        for k, v in headers.items():
            request.setHeader(k, v)
        return body


def governed(upstream=None, start=1000.0, state_dir=None, **settings):
    settings.setdefault("margin", "0")
    config = {"state_dir": str(state_dir)} if state_dir is not None else {}
    h = Harness(upstream or Scripted(), middleware=chain("ratelimit", ratelimit=settings),
                **config)
    h.clock.advance(start)
    return h


def rl(h):
    return h.service.middlewares[0]


def test_the_middleware_declares_its_capabilities():
    m = rl(governed())
    for iface in (IMiddleware, IWeightGovernor, IHealthReporter, IMetricsSource,
                  IReadinessCheck):
        assert verifyObject(iface, m)


# -- a 418 is an IP ban of the whole host; a 429 silences its pool ------------------
def test_a_418_on_api_silences_sapi_on_the_same_host():
    h = governed(Scripted((418, {b"Retry-After": b"120"}, b"{}")))
    assert h.request("GET", "/api/v3/time").status == 418
    answer = h.request("GET", SAPI_A)
    assert answer.status == 418 and answer.header(b"x-bnproxy-source") == b"local"
    assert int(answer.header(b"retry-after")) == 120
    assert len(h.upstream.seen) == 1  # the /sapi request never reached the exchange
    assert h.request("GET", "/fapi/v1/time").status == 200  # another host is not banned
    h.clock.advance(121)
    assert h.request("GET", SAPI_A).status == 200


def test_a_418_on_sapi_silences_api_too():
    h = governed(Scripted((418, {b"Retry-After": b"60"}, b"{}")))
    h.request("GET", SAPI_A)
    assert h.request("GET", "/api/v3/depth?symbol=X&limit=5").status == 418
    assert len(h.upstream.seen) == 1


def test_a_dot_segment_path_cannot_slip_past_a_ban():
    h = governed(Scripted((418, {b"Retry-After": b"120"}, b"{}")))
    h.request("GET", "/api/v3/time")
    for target in ("/sapi/../api/v3/time", "/sapi/%2e%2e/api/v3/time", "/spot/sapi/../api"):
        assert h.request("GET", target).status in (400, 418)
    assert len(h.upstream.seen) == 1


def test_a_sapi_429_silences_only_that_endpoint():
    h = governed(Scripted((429, {b"Retry-After": b"30"}, b"{}")))
    assert h.request("GET", SAPI_A).status == 429
    again = h.request("GET", SAPI_A)
    assert again.status == 429 and again.header(b"x-bnproxy-source") == b"local"
    assert h.request("GET", SAPI_B).status == 200
    assert h.request("GET", "/api/v3/time").status == 200
    assert len(h.upstream.seen) == 3
    assert rl(h).banned_for("sapi:" + SAPI_A) == 30 and rl(h).banned_for("spot") == 0


def test_each_sapi_endpoint_has_its_own_pool_and_limits():
    h = governed()
    m = rl(h)
    h.request("GET", SAPI_A)
    h.request("GET", SAPI_B)
    h.request("GET", "/sapi/v1/not/documented")
    usage = m.usage()
    assert usage["sapi:" + SAPI_A]["limit"] == 12_000
    assert usage["sapi:" + SAPI_B]["limit"] == 12_000
    assert "sapi:other" in usage  # unlisted paths share one pool: labels stay bounded
    assert usage["spot"]["limit"] == 6000 and usage["spot"]["used"] == 0


def test_sapi_weight_is_reconciled_from_its_own_headers():
    h = governed(Scripted((200, {b"X-SAPI-USED-IP-WEIGHT-1M": b"11990",
                                 b"X-MBX-USED-WEIGHT-1M": b"5000"}, b"{}"),
                          (200, {b"X-SAPI-USED-UID-WEIGHT-1M": b"170000"}, b"{}")), start=0.0)
    m = rl(h)
    h.request("GET", SAPI_A)
    assert m.usage()["sapi:" + SAPI_A]["used"] == 11990
    assert m.usage()["spot"]["used"] == 0  # /api's pool is not /sapi's
    h.request("GET", SAPI_B)
    assert m.usage()["sapi:" + SAPI_B]["limit"] == 180_000  # reported UID-limited
    assert m.usage()["sapi:" + SAPI_B]["used"] == 170000
    for _ in range(10):
        assert h.request("GET", SAPI_A).status == 200  # 11990 + 10 = 12000
    refused = h.request("GET", SAPI_A)
    assert refused.status == 429 and refused.header(b"x-bnproxy-source") == b"local"
    assert h.request("GET", SAPI_B).status == 200


# -- a malformed ban signal still bans -------------------------------------------------
@pytest.mark.parametrize("retry_after", [None, b"-5", b"nan", b"inf", b"-inf", b"soon",
                                         b"99999999999", b"Wed, 21 Oct 2015 07:28:00 GMT"])
def test_a_429_with_an_unusable_retry_after_bans_to_the_window_end_plus_a_second(retry_after):
    headers = {b"Retry-After": retry_after} if retry_after is not None else {}
    h = governed(Scripted((429, headers, b'{"code":-1003,"msg":"Too much request weight"}')),
                 start=1030.0)  # the window ends at 1080
    assert h.request("GET", "/api/v3/time").status == 429
    answers = [h.request("GET", "/api/v3/time")]
    h.clock.advance(50.5)
    answers.append(h.request("GET", "/api/v3/time"))
    assert [a.status for a in answers] == [429, 429]
    assert answers[0].header(b"retry-after") == b"51"
    assert len(h.upstream.seen) == 1  # nothing was forwarded during the ban
    h.clock.advance(0.6)
    assert h.request("GET", "/api/v3/time").status == 200


@pytest.mark.parametrize("retry_after", [b"-5", b"nan", b"inf", b"1e12", b""])
def test_a_418_with_an_unusable_retry_after_uses_the_body(retry_after):
    body = b'{"code":-1003,"msg":"Way too much request weight used; IP banned until 1600000."}'
    h = governed(Scripted((418, {b"Retry-After": retry_after}, body)))
    h.request("GET", "/api/v3/time")
    assert rl(h).banned_for("spot") == 600.0
    assert h.request("GET", SAPI_A).status == 418
    assert len(h.upstream.seen) == 1


def test_a_418_with_nothing_usable_bans_two_minutes_doubling_while_418s_repeat():
    bad = (418, {b"Retry-After": b"nan"}, b'{"code":-1003,"msg":"IP banned until later."}')
    h = governed(Scripted(bad, bad, bad))
    lengths = []
    for _ in range(3):
        assert h.request("GET", "/api/v3/time").status == 418
        left = rl(h).banned_for("spot")
        lengths.append(left)
        h.clock.advance(left)
    assert lengths == [120, 240, 480]
    assert len(h.upstream.seen) == 3


def test_no_ban_is_longer_than_three_days():
    h = governed(Scripted((418, {b"Retry-After": b"nan"},
                           b'{"msg":"IP banned until 99999999999999."}')))
    h.request("GET", "/api/v3/time")
    assert 0 < rl(h).banned_for("spot") <= 3 * 86400


# -- durable ban state -----------------------------------------------------------------
def banned_then_restarted(tmp_path, upstream=None, **settings):
    first = governed(Scripted((418, {b"Retry-After": b"600"}, b"{}")), state_dir=tmp_path,
                     **settings)
    first.request("GET", "/api/v3/time")
    again = governed(upstream or Scripted(), start=1100.0, state_dir=tmp_path, **settings)
    return first, again


def test_a_restart_with_an_intact_state_file_keeps_the_host_ban(tmp_path):
    _, again = banned_then_restarted(tmp_path)
    for target in ("/api/v3/time", SAPI_A):
        answer = again.request("GET", target)
        assert answer.status == 418 and answer.header(b"retry-after") == b"500"
    assert again.upstream.seen == []
    assert "ban in force" in again.request("GET", "/ready").json()["problems"][-1]
    again.clock.advance(500)
    assert again.request("GET", SAPI_A).status == 200


def test_the_state_file_is_replaced_atomically(tmp_path):
    banned_then_restarted(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["bnproxy-bans.json"]  # no temporary left over
    saved = json.loads((tmp_path / "bnproxy-bans.json").read_text())
    assert saved["format"] == "bnproxy-bans" and saved["bans"][0]["status"] == 418


@pytest.mark.parametrize("content,what", [
    (b"", "empty"),
    (b"   \n", "empty"),
    (b'{"format": "bnproxy-bans", "version": 2, "bans": [{"egr', "truncated"),
    (b"\x00\xff garbage \x13", "garbled"),
    (b"[1,2,3]", "mis-shaped"),
    (b'"spot"', "mis-shaped"),
    (b'{"spot": 5}', "mis-shaped"),
    (b'{"spot": {"until": "soon"}}', "mis-shaped"),
    (b'{"spot": {"until": 1600, "status": 500}}', "mis-shaped"),
    (b'{"format": "bnproxy-bans", "version": 2, "bans": {"a": 1}}', "mis-shaped"),
    (b'{"format": "bnproxy-bans", "version": 2, "bans": [{"scope": "spot"}]}', "mis-shaped"),
    (b'{"format": "bnproxy-bans", "version": 9, "bans": []}', "unknown format"),
])
def test_a_corrupted_state_file_refuses_start_in_one_line(tmp_path, content, what):
    path = tmp_path / "bnproxy-bans.json"
    path.write_bytes(content)
    upstream = Scripted()
    with pytest.raises(ConfigError) as e:
        governed(upstream, state_dir=tmp_path)
    message = str(e.value)
    assert "\n" not in message
    assert str(path) in message and what in message and "discard_ban_state" in message
    assert upstream.seen == []
    assert path.read_bytes() == content  # left for the operator to look at


def test_a_corrupted_file_after_a_ban_refuses_start_and_sends_nothing(tmp_path):
    banned_then_restarted(tmp_path)
    path = tmp_path / "bnproxy-bans.json"
    path.write_bytes(path.read_bytes()[:25])  # truncated by a crash mid-write elsewhere
    upstream = Scripted()
    with pytest.raises(ConfigError, match="truncated"):
        governed(upstream, start=1100.0, state_dir=tmp_path)
    assert upstream.seen == []


def test_discard_ban_state_is_the_way_out(tmp_path):
    path = tmp_path / "bnproxy-bans.json"
    path.write_bytes(b"[1,2,3]")
    h = governed(state_dir=tmp_path, discard_ban_state="true")
    assert h.request("GET", "/api/v3/time").status == 200
    assert json.loads(path.read_text())["bans"] == []


def test_an_unreadable_state_file_refuses_start(tmp_path):
    (tmp_path / "bnproxy-bans.json").mkdir()  # not a file: reading it fails
    with pytest.raises(ConfigError, match="unreadable"):
        governed(state_dir=tmp_path)


def test_an_unwritable_state_directory_is_refused_at_build_time(tmp_path):
    blocker = tmp_path / "plain-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="not writable"):
        governed(state_file=str(blocker / "bans.json"))


def test_a_version_1_state_file_is_upgraded_not_refused(tmp_path):
    (tmp_path / "bnproxy-bans.json").write_text(json.dumps({"spot": {"until": 1600,
                                                                     "status": 418}}))
    h = governed(start=1100.0, state_dir=tmp_path)
    assert h.request("GET", SAPI_A).status == 418  # a 418 was an IP ban: the whole host
    assert h.upstream.seen == []


# -- the weight governor interface -------------------------------------------------------
def test_reserve_takes_weight_only_when_it_fits_and_no_ban_is_in_force():
    h = governed(Scripted((200, {}, b"{}"), (429, {b"Retry-After": b"10"}, b"{}")),
                 start=0.0, **{"limit.spot": "100"})
    m = rl(h)
    assert m.pool_of(_request(h, SAPI_A)) == "sapi:" + SAPI_A
    assert m.pool_of(_request(h, "/api/v3/time")) == "spot"
    assert m.reserve("spot", 60) and not m.reserve("spot", 41) and m.reserve("spot", 40)
    assert m.usage()["spot"]["used"] == 100 and m.usage()["spot"]["egress"] == "default"
    h.clock.advance(60)
    h.request("GET", "/api/v3/time")
    h.request("GET", "/api/v3/time")  # 429
    assert m.banned_for("spot") == 10 and not m.reserve("spot", 1)
    assert m.reserve("usdm", 1)


def test_set_client_share_caps_one_client():
    h = governed(start=0.0, client_header="X-Bot", **{"limit.spot": "100"})
    m = rl(h)
    m.set_client_share("greedy", 0.1)
    statuses = [h.request("GET", "/api/v3/depth?symbol=X&limit=5",
                          headers={b"X-Bot": b"greedy"}).status for _ in range(3)]
    assert statuses == [200, 200, 429]  # 10 of 100
    assert h.request("GET", "/api/v3/depth?symbol=X&limit=5",
                     headers={b"X-Bot": b"other"}).status == 200
    m.set_client_share("greedy", None)
    assert h.request("GET", "/api/v3/depth?symbol=X&limit=5",
                     headers={b"X-Bot": b"greedy"}).status == 200
    with pytest.raises(ValueError):
        m.set_client_share("x", 1.5)


def test_health_and_metrics_show_the_host_ban():
    h = governed(Scripted((418, {b"Retry-After": b"120"}, b"{}")))
    h.request("GET", "/api/v3/time")
    h.request("GET", SAPI_A)
    health = rl(h).health()
    assert health["bans"][0]["scope"].startswith("host:") and health["bans"][0]["status"] == 418
    assert math.isclose(health["pools"]["sapi:" + SAPI_A]["banned_for"], 120)
    metrics = {f.name: f for f in rl(h).collect_metrics()}
    assert any(s.labels == {"pool": "sapi:" + SAPI_A} and s.value == 120
               for s in metrics["bnproxy_ban_remaining_seconds"].samples)


def _request(h, path):
    from bnproxy.chain.messages import ProxyRequest
    return ProxyRequest("GET", "spot", path, b"", (), b"", "bot", 0.0,
                        h.service.endpoints.lookup("spot", "GET", path))


# -- against the fake exchange (in virtual time): nothing reaches it during a ban -------
EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z


def exchange_stack(state_dir, clock=None, exchange=None):
    from treq.testing import RequestTraversalAgent
    from twisted.internet import task

    from bnproxy.testing import FakeExchange
    if clock is None:
        clock = task.Clock()
        clock.advance(EPOCH)
    x = exchange or FakeExchange(clock, start_ms=EPOCH * 1000).start()
    h = Harness(agent=RequestTraversalAgent(x.resource()), clock=clock, state_dir=str(state_dir),
                middleware=chain("cache", "ratelimit"))
    return x, h


def reached(x) -> int:
    return sum(x.counters.requests.values())


def test_exchange_a_sapi_request_during_a_418_on_api_never_reaches_it(tmp_path):
    x, h = exchange_stack(tmp_path)
    x.ban("127.0.0.1", 300, "spot")
    first = h.request("GET", "/api/v3/depth?symbol=BTCUSDT&limit=5")
    assert first.status == 418 and first.header(b"x-bnproxy-source") == b"upstream"
    before = reached(x)
    for target in (SAPI_A, "/sapi/v1/capital/config/getall", "/api/v3/time",
                   "/sapi/../api/v3/time", "/sapi/%2e%2e/api/v3/exchangeInfo"):
        assert h.request("GET", target).status in (400, 418), target
    assert reached(x) == before


def test_exchange_a_429_without_retry_after_still_bans(tmp_path):
    x, h = exchange_stack(tmp_path)
    x.faults.path_prefix, x.faults.error_status, x.faults.error_rate = "/api/", 429, 1.0
    assert h.request("GET", "/api/v3/time").status == 429
    x.faults.error_rate = 0.0
    before = reached(x)
    answers = [h.request("GET", "/api/v3/time") for _ in range(5)]
    assert {a.status for a in answers} == {429}
    assert reached(x) == before


def test_exchange_restarts_keep_the_ban_or_refuse_to_start(tmp_path):
    x, h = exchange_stack(tmp_path)
    x.ban("127.0.0.1", 300, "spot")
    h.request("GET", "/api/v3/time")
    before = reached(x)
    _, again = exchange_stack(tmp_path, clock=h.clock, exchange=x)  # restart, intact file
    assert again.request("GET", SAPI_A).status == 418
    assert again.request("GET", "/api/v3/time").status == 418
    assert reached(x) == before
    (tmp_path / "bnproxy-bans.json").write_bytes(b'{"format": "bnproxy-ba')  # corrupted
    with pytest.raises(ConfigError, match="bnproxy-bans.json"):
        exchange_stack(tmp_path, clock=h.clock, exchange=x)
    assert reached(x) == before


# -- found in review ---------------------------------------------------------------------

def test_sapi_of_another_market_does_not_take_spot_sapi_off_the_spot_host(tmp_path):
    h = governed(Scripted((200, {}, b"{}"), (418, {b"Retry-After": b"600"}, b"{}")),
                 state_dir=tmp_path)
    h.request("GET", "/usdm/sapi/v1/nosuch")  # not a spot /sapi pool: the futures host's
    assert h.request("GET", "/api/v3/time").status == 418  # a 418 on the spot host
    before = len(h.upstream.seen)
    assert h.request("GET", "/sapi/v1/nosuch").status == 418
    assert len(h.upstream.seen) == before  # spot /sapi is silenced with the spot host


def test_an_order_count_429_bans_nothing_for_the_other_bots(tmp_path):
    body = b'{"code":-1015,"msg":"Too many new orders; current limit is 100 orders per 10 SECOND."}'
    h = governed(Scripted((429, {b"Retry-After": b"30"}, body)), state_dir=tmp_path)
    answer = h.request("POST", "/api/v3/order?symbol=BTCUSDT&timestamp=1&signature=ab",
                       headers={b"X-MBX-APIKEY": b"k"})
    assert answer.status == 429 and answer.json()["code"] == -1015  # the bot is told
    assert h.request("GET", "/api/v3/depth?symbol=BTCUSDT&limit=5").status == 200
    problems = h.request("GET", "/ready").json().get("problems", [])
    assert not any("ban" in p for p in problems)


def test_418s_of_requests_in_flight_are_one_ban_not_a_doubling(tmp_path):
    from bnproxy.testing.harness import FakeResponse, controlled_agent

    agent = controlled_agent()
    h = Harness(agent=agent, middleware=chain("ratelimit", ratelimit={
        "margin": "0", "state_file": str(tmp_path / "b.json")}), state_dir=str(tmp_path))
    h.clock.advance(1000.0)
    for _ in range(5):
        h.start("GET", "/api/v3/time")
    h.flush()
    agent.answer_all(lambda m, u: FakeResponse(418, {}, b'{"code":-1003,"msg":"Way too many."}'))
    h.flush()
    assert h.service.middlewares[0].banned_for("spot") == pytest.approx(120.0)


def test_the_bans_counter_counts_every_ban(tmp_path):
    h = governed(Scripted(*[(418, {b"Retry-After": b"60"}, b"{}")] * 3), state_dir=tmp_path)
    for _ in range(3):
        assert h.request("GET", "/api/v3/time").status == 418
        h.clock.advance(61)
    metrics = h.request("GET", "/metrics").body.decode()
    assert any(line.startswith("bnproxy_bans_total{") and line.endswith(" 3.0")
               for line in metrics.splitlines()), metrics


def test_the_ledger_keeps_a_bounded_number_of_client_names(tmp_path):
    h = governed(state_dir=tmp_path)
    for i in range(1100):
        h.request("GET", "/api/v3/time", headers={b"X-Bnproxy-Client": f"bot{i}".encode()})
    ledger = h.service.middlewares[0].state.ledger()
    assert len(ledger) == 1025 and ledger["other"]["requests"] == 1100 - 1024


# -- what is not a ban state file --------------------------------------------------------
@pytest.mark.parametrize("make,what", [
    (lambda p: os.mkfifo(p), "not a regular file: a FIFO"),
    (lambda p: os.symlink("/dev/zero", p), "not a regular file: a device"),
    (lambda p: p.write_bytes(b" " * (1 << 20) + b"{}"), "too large"),
])
def test_a_state_file_that_is_not_a_small_regular_file_refuses_start_in_one_line(
        tmp_path, make, what):
    path = tmp_path / "bnproxy-bans.json"
    make(path)
    upstream = Scripted()
    with pytest.raises(ConfigError) as e:  # at once: a FIFO does not hang it
        governed(upstream, state_dir=tmp_path)
    message = str(e.value)
    assert "\n" not in message and what in message and str(path) in message
    assert upstream.seen == []


def test_a_ban_that_cannot_be_binances_never_reaches_the_state_file(tmp_path):
    from twisted.internet.task import Clock

    from bnproxy.middleware.ratelimit.bans import BanStore
    from bnproxy.middleware.ratelimit.shared import SharedState
    from bnproxy.middleware.ratelimit.state import LocalState

    class Fleet:  # the fleet's notifications, whatever another client published
        status = "ok"

        def on_ban(self, callback):
            self.tell = callback

    clock = Clock()
    clock.advance(1_000_000)
    path = tmp_path / "bans.json"
    store = BanStore(clock, str(path))
    fleet = Fleet()
    SharedState(clock, fleet, LocalState(store))
    for until in (math.inf, math.nan, clock.seconds() + 10 * 365 * 86_400):
        fleet.tell("default", "spot", until, 418, "strikes=1")
    fleet.tell("default", "spot", clock.seconds() + 60, 200, "strikes=1")
    assert store.all() == [] and not path.exists()
    fleet.tell("default", "spot", clock.seconds() + 60, 418, "strikes=99999999")
    saved = path.read_text()
    assert "Infinity" not in saved and "NaN" not in saved
    assert json.loads(saved)["bans"][0]["until"] == clock.seconds() + 60
    # and a state file holding a far too long ban (an older version heard it) is kept
    # for Binance's longest, not refused
    data = json.loads(saved)
    data["bans"][0]["until"] = clock.seconds() + 10 * 365 * 86_400
    path.write_text(json.dumps(data))
    again = BanStore(clock, str(path))
    again.load()
    assert again.all()[0].until == clock.seconds() + 3 * 86_400
