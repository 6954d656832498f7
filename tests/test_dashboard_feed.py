"""The dashboard's state feed and resources, in virtual time."""

from __future__ import annotations

import json

import pytest
from helpers import Harness, RecordingUpstream, chain
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.web.test.requesthelper import DummyRequest

from bnproxy.dashboard.feed import HISTORY, DashboardFeed, quantile
from bnproxy.dashboard.resource import EventsResource, StateResource
from bnproxy.server.metrics import Metrics

KLINES = "/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=100"


def harness(tmp_path, upstream=None, names=("cache", "ratelimit"), **settings) -> Harness:
    h = Harness(upstream, middleware=chain(*names, **settings), state_dir=str(tmp_path))
    return h


def tick(h: Harness, seconds: int = 1) -> dict:
    for _ in range(seconds):
        h.clock.advance(1)
        h.service.dashboard.tick()
    return json.loads(h.service.dashboard.state_bytes())


def answering(status: int, headers=None, body=b"{}"):
    def respond(request, seen):
        request.setResponseCode(status)
        for k, v in (headers or {}).items():
            request.setHeader(k, v)
        return body
    return RecordingUpstream(respond)


def test_asked_against_spent_shows_what_the_cache_saved(tmp_path):
    h = harness(tmp_path)
    tick(h)
    for _ in range(10):
        assert h.request("GET", KLINES).status == 200
    state = tick(h)
    w = state["weight_15m"]
    # klines with limit 100 weigh 2: ten answers asked 20, one went upstream
    # (weight 2 spent; the fake upstream reports 7 used this minute, for the pool)
    assert w["asked"]["spot"] == 20
    assert w["spent"]["spot"] == 2
    assert w["saving_percent"]["spot"] == 90.0
    assert state["answers"]["last_15m"] == {"cache": 9, "upstream": 1, "stream": 0, "local": 0}
    assert state["hit_ratio_15m"]["cache"] == 0.9
    assert state["history"]["series"]["answers.cache"][-1] == 9
    assert state["history"]["series"]["used.spot"][-1] == 7
    spot = next(p for p in state["pools"] if p["pool"] == "spot")
    health = h.request("GET", "/health").json()["middleware"]["ratelimit"]["pools"]["spot"]
    assert (spot["used"], spot["budget"], spot["limit"]) == (
        health["used"], health["budget"], health["limit"])


def test_history_keeps_fifteen_minutes_of_one_sample_a_second(tmp_path):
    h = harness(tmp_path)
    state = tick(h, HISTORY + 30)
    times = state["history"]["time"]
    assert len(times) == HISTORY
    assert times[-1] - times[0] == HISTORY - 1
    assert all(len(v) == HISTORY for v in state["history"]["series"].values())


def test_a_series_that_appears_later_is_padded_to_the_timeline(tmp_path):
    h = harness(tmp_path)
    tick(h, 3)
    h.request("GET", "/usdm/fapi/v1/time")
    state = tick(h)
    asked = state["history"]["series"]["asked.usdm"]
    assert asked == [None, None, None, 1]


def test_errors_keep_the_last_twenty_newest_first_without_secrets(tmp_path):
    h = harness(tmp_path, answering(400, body=b'{"code":-1102,"msg":"Mandatory parameter"}'),
                names=())
    for i in range(25):
        h.request("GET", f"/api/v3/order?symbol=S{i}&timestamp=1&signature=deadbeef{i}",
                  headers={b"X-MBX-APIKEY": b"secret-key"})
    state = tick(h)
    errors = state["errors"]
    assert len(errors) == 20
    assert errors[0]["query"] == "symbol=S24&timestamp=1&signature=[redacted]"
    assert errors[-1]["query"].startswith("symbol=S5&")
    assert errors[0]["status"] == 400 and errors[0]["msg"] == "Mandatory parameter"
    assert errors[0]["path"] == "/api/v3/order" and errors[0]["method"] == "GET"
    text = h.service.dashboard.state_bytes() + h.service.dashboard.event
    assert b"deadbeef" not in text and b"secret-key" not in text


def test_a_ban_shows_its_countdown_and_cause_then_goes(tmp_path):
    body = b'{"code":-1003,"msg":"Way too much request weight used; IP banned until 1."}'
    h = harness(tmp_path, answering(418, {b"Retry-After": b"120"}, body))
    tick(h)
    assert h.request("GET", "/api/v3/depth?symbol=BTCUSDT").status == 418
    state = tick(h, 10)
    [ban] = state["bans"]
    assert ban["pool"] == "spot" and ban["status"] == 418
    assert ban["seconds_left"] == pytest.approx(110, abs=0.5)
    assert ban["until"] == pytest.approx(state["time"] + 110, abs=0.5)
    assert "418" in ban["cause"] and "banned" in ban["cause"]
    assert tick(h, 111)["bans"] == []


def test_bots_show_requests_weight_refusals_and_last_seen(tmp_path):
    h = harness(tmp_path, names=("logger", "ratelimit"))
    tick(h)
    h.request("GET", "/api/v3/time", headers={b"X-Bnproxy-Client": b"bot-a"})
    first = tick(h)["clients"]
    row = next(c for c in first if c["client"] == "bot-a")
    assert (row["requests"], row["asked"], row["spent"]) == (1, 1, 1)
    assert row["answered"]["upstream"] == 1 and sum(row["refused"].values()) == 0
    assert row["last_minute"]["requests"] == row["last_15m"]["requests"] == 1
    seen = row["last_seen"]
    later = tick(h, 5)
    assert next(c for c in later["clients"] if c["client"] == "bot-a")["last_seen"] == seen
    h.request("GET", "/api/v3/time", headers={b"X-Bnproxy-Client": b"bot-a"})
    again = next(c for c in tick(h)["clients"] if c["client"] == "bot-a")
    assert again["requests"] == 2 and again["last_seen"] == seen + 6


def test_a_bot_served_from_the_cache_is_counted_with_every_request(tmp_path):
    h = harness(tmp_path, names=("logger", "cache", "ratelimit"))
    target = "/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=100"  # weight 2
    for _ in range(5):
        h.request("GET", target, headers={b"X-Bnproxy-Client": b"cached-bot"})
    row = next(c for c in tick(h)["clients"] if c["client"] == "cached-bot")
    assert (row["requests"], row["asked"], row["spent"]) == (5, 10, 2)
    assert row["answered"] == {"stream": 0, "cache": 4, "upstream": 1, "local": 0}
    later = next(c for c in tick(h, 70)["clients"] if c["client"] == "cached-bot")
    assert later["last_minute"]["requests"] == 0 and later["last_15m"]["requests"] == 5


def test_refusals_are_counted_by_reason_and_not_asked(tmp_path):
    h = Harness(state_dir=str(tmp_path), middleware=chain(
        "logger", "allowlist", allowlist={"allow": "10.0.0.0/8"}))
    h.request("GET", "/api/v3/exchangeInfo")
    [row] = tick(h)["clients"]
    assert row["client"] == "127.0.0.1"  # no name, no key: the address, as the access log
    assert row["refused"]["allowlist"] == 1 and row["asked"] == 0


def test_upstream_latency_quantiles_come_from_the_last_ten_seconds():
    clock = task.Clock()
    metrics = Metrics()
    feed = DashboardFeed(clock, lambda: [], metrics)
    feed.tick()
    for _ in range(97):
        metrics.upstream_latency.labels("spot").observe(0.02)
    for _ in range(3):
        metrics.upstream_latency.labels("usdm").observe(4.0)
    clock.advance(1)
    feed.tick()
    assert 0.01 < feed.document["latency"]["p50"] <= 0.025
    assert 2.5 < feed.document["latency"]["p99"] <= 5
    for _ in range(11):
        clock.advance(1)
        feed.tick()
    assert feed.document["latency"] == {"p50": None, "p99": None}


def test_quantile_interpolates_within_the_bucket():
    inf = float("inf")
    assert quantile(0.5, [1.0, 2.0, inf], [0, 10, 10]) == 1.5
    assert quantile(0.99, [1.0, 2.0, inf], [0, 0, 10]) == 2.0
    assert quantile(0.5, [1.0, inf], [0, 0]) is None


def test_sections_come_from_their_interface_not_from_the_shape_of_a_health():
    from zope.interface import implementer

    from bnproxy.chain.interfaces import IDashboardSection

    @implementer(IDashboardSection)
    class Shared:
        name = "shared"

        def dashboard_section(self):
            return "instances", [{"id": "a", "used": 3}, {"id": "b", "used": 4}]

    class LooksLikeACache:  # a health() of the right shape, no interface: ignored
        name = "impostor"

        def health(self):
            return {"entries": 1, "bytes": 2, "hit_ratio": 0.5, "instances": []}

    clock = task.Clock()
    feed = DashboardFeed(clock, lambda: [Shared(), LooksLikeACache()], Metrics())
    feed.tick()
    assert feed.document["instances"] == [{"id": "a", "used": 3}, {"id": "b", "used": 4}]
    assert feed.document["cache"] is None
    alone = DashboardFeed(clock, lambda: [], Metrics())
    alone.tick()
    assert "instances" not in alone.document


class Page(DummyRequest):
    """A page holding an event stream (twisted's DummyRequest pulls from a
    producer in a loop: the stream registers a push producer)."""

    def __init__(self, *args, host: str = "127.0.0.1", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.client = IPv4Address("TCP", host, 5000)
        self.producer = None

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None


def test_every_open_page_gets_the_same_bytes_and_the_stream_ends_on_stop():
    clock = task.Clock()
    feed = DashboardFeed(clock, lambda: [], Metrics())
    feed.startService()
    events = EventsResource(feed)
    pages = [Page([b"events"]) for _ in range(3)]
    for page in pages:
        events.render_GET(page)
    assert events.open == 3
    for page in pages:
        assert page.written[0] == b"retry: 1000\n\n"
        assert page.responseHeaders.getRawHeaders(b"content-type") == [b"text/event-stream"]
    clock.advance(1)
    assert all(page.written[1].startswith(b"event: state\ndata: {") for page in pages)
    sent = [page.written[-1] for page in pages]
    assert sent[0].startswith(b"event: patch\ndata: {")
    assert sent[0] is sent[1] is sent[2]  # encoded once, shared
    pages[0].processingFailed(Exception("gone"))  # a page closed
    assert events.open == 2
    feed.stopService()
    assert all(page.finished for page in pages[1:])
    assert events.open == 0


def test_the_state_document_is_encoded_once_a_tick():
    clock = task.Clock()
    feed = DashboardFeed(clock, lambda: [], Metrics())
    feed.tick()
    state = StateResource(feed)
    first = state.render_GET(DummyRequest([b"state"]))
    assert state.render_GET(DummyRequest([b"state"])) is first
    clock.advance(1)
    feed.tick()
    assert state.render_GET(DummyRequest([b"state"])) is not first


def test_the_page_and_its_assets_are_served_and_need_nothing_external(tmp_path):
    h = harness(tmp_path)
    page = h.request("GET", "/dashboard")
    assert page.status == 200
    assert page.header(b"content-type") == b"text/html; charset=utf-8"
    assert b"default-src 'self'" in page.header(b"content-security-policy")
    assert b"http://" not in page.body and b"https://" not in page.body
    for asset in (b"dashboard/dashboard.js", b"dashboard/dashboard.css",
                  b"dashboard/vendor/uPlot.iife.min.js", b"dashboard/vendor/uPlot.min.css"):
        assert asset in page.body
        answer = h.request("GET", b"/" + asset)
        assert answer.status == 200 and len(answer.body) > 1000
    assert h.request("GET", "/dashboard/").status == 302
    assert h.request("GET", "/dashboard/state").json()["schema"] == 1


def test_the_dashboard_is_admin_only(tmp_path):
    h = Harness(trusted_proxies=("127.0.0.1/32",), state_dir=str(tmp_path))
    for path in ("/dashboard", "/dashboard/state", "/dashboard/events"):
        denied = h.request("GET", path, headers={b"X-Forwarded-For": b"203.0.113.7"})
        assert denied.status == 403, path


def test_every_file_the_page_needs_is_shipped_as_package_data():
    import configparser
    import os

    from bnproxy.dashboard import resource

    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(os.path.dirname(__file__), "..", "setup.cfg"))
    shipped = {f.strip() for f in cfg["options.package_data"]["bnproxy.dashboard"].split(",")}
    needed = {"index.html"} | {path for path, _ in resource.STATIC.values()} | {
        path for path, _ in resource.VENDOR.values()}
    assert needed <= shipped


def test_fifteen_minute_sums_forget_what_left_the_ring(tmp_path):
    h = harness(tmp_path)
    tick(h)
    for _ in range(3):
        h.request("GET", KLINES)
    assert tick(h)["answers"]["last_15m"]["cache"] == 2
    assert tick(h, HISTORY - 1)["answers"]["last_15m"]["cache"] == 2
    state = tick(h)
    assert state["answers"]["last_15m"]["cache"] == 0
    assert state["weight_15m"]["asked"]["spot"] == 0
    assert state["answers"]["total"]["cache"] == 2


def test_weight_spent_is_what_reached_binance_per_sample(tmp_path):
    h = harness(tmp_path, names=("ratelimit",))
    tick(h)
    h.request("GET", "/api/v3/time")  # weight 1, sent upstream
    assert tick(h)["history"]["series"]["spent.spot"][-1] == 1
    assert tick(h)["history"]["series"]["spent.spot"][-1] == 0  # nothing new
    h.request("GET", "/api/v3/time")
    h.request("GET", "/api/v3/time")
    state = tick(h)
    assert state["history"]["series"]["spent.spot"][-1] == 2
    assert state["weight_15m"]["spent"]["spot"] == 3


def test_bans_on_two_hosts_are_shown_under_their_own_markets(tmp_path):
    body = b'{"code":-1003,"msg":"Way too many requests; IP banned until 9999999999999."}'
    h = harness(tmp_path, answering(418, {b"Retry-After": b"120"}, body))
    tick(h)
    assert h.request("GET", "/fapi/v1/time").status == 418
    assert h.request("GET", "/api/v3/time").status == 418
    bans = {b["pool"]: b for b in tick(h)["bans"]}
    assert set(bans) == {"spot", "usdm"}
    assert bans["usdm"]["scope"] == "host:usdm.upstream.test"
    assert bans["spot"]["markets"] == ["spot"]


def test_event_streams_are_capped_in_all_and_per_address():
    clock = task.Clock()
    feed = DashboardFeed(clock, lambda: [], Metrics())
    events = EventsResource(feed, max_streams=6, per_address=2)
    mine = [Page([b"events"], host="127.0.0.2") for _ in range(3)]
    bodies = [events.render_GET(page) for page in mine]
    assert events.open == 2
    assert mine[2].responseCode == 429 and mine[2].responseHeaders.getRawHeaders(
        b"retry-after") == [b"10"]
    assert json.loads(bodies[2])["code"] == -1003
    others = [Page([b"events"], host=f"127.0.1.{i}") for i in range(6)]
    for page in others:
        events.render_GET(page)
    assert events.open == 6 and [p.responseCode for p in others][-2:] == [429, 429]
    mine[0].processingFailed(Exception("gone"))  # a tab closed: room for one more
    again = Page([b"events"], host="127.0.0.2")
    events.render_GET(again)
    assert again.responseCode is None and events.open == 6


def test_a_page_that_stops_reading_is_closed_when_its_transport_pauses():
    clock = task.Clock()
    feed = DashboardFeed(clock, lambda: [], Metrics())
    feed.startService()
    events = EventsResource(feed)
    page = Page([b"events"])
    aborted = []

    class Transport:
        def abortConnection(self):
            aborted.append(True)
            page.processingFailed(Exception("aborted"))

    page.channel = type("Channel", (), {"transport": Transport()})()
    events.render_GET(page)
    clock.advance(1)
    written = len(page.written)
    page.producer.pauseProducing()  # more than 64 KiB wait unsent: the page stopped reading
    assert aborted == [True] and events.open == 0 and events.closed_unread == 1
    clock.advance(5)
    assert len(page.written) == written  # nothing more is queued for it


def test_refusals_are_summed_and_upstream_messages_redacted(tmp_path):
    key = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
    body = ('{"code":-1022,"msg":"Signature for this request is not valid: signature=abc123 '
            f'apiKey={key}"}}').encode()
    h = Harness(answering(400, body=body), state_dir=str(tmp_path),
                trusted_proxies=("127.0.0.1/32",),
                middleware=chain("allowlist", allowlist={"allow": ["127.0.0.1/32"]}))
    for i in range(500):  # one client floods with refused requests, each unique
        h.request("GET", f"/api/v3/depth?symbol=X{i}&pad={'p' * 3000}",
                  headers={b"X-Forwarded-For": b"10.9.9.9"})
    h.request("GET", "/api/v3/order?symbol=S&timestamp=1&signature=deadbeef")
    state = tick(h)
    errors = state["errors"]
    assert len(errors) == 2
    refused = next(e for e in errors if e["source"] == "local")
    assert refused["count"] == 500 and len(refused["query"]) <= 201
    upstream = next(e for e in errors if e["source"] == "upstream")
    assert "abc123" not in upstream["msg"] and key not in upstream["msg"]
    assert "signature=[redacted]" in upstream["msg"]
    assert len(h.service.dashboard.event) < 16 * 1024


def test_pools_come_busiest_first_and_idle_sapi_endpoints_fold_into_one_row():
    from bnproxy.dashboard.feed import fold_idle, pressure_order

    def pool(name, used, budget=5400, banned=0.0, egress=None):
        return {"pool": name, "egress": egress, "used": used, "budget": budget,
                "limit": budget, "queued": 0, "banned_for": banned}
    rows = [pool("coinm", 100, 2160), pool("spot", 5400), pool("usdm", 2000, 2160),
            *[pool(f"sapi:/sapi/v1/e{i}", 0, 10800) for i in range(30)],
            pool("sapi:/sapi/v1/busy", 50, 10800), pool("options", 0, 0, banned=30.0)]
    names = [r["pool"] for r in pressure_order(fold_idle(rows))]
    assert names == ["options", "spot", "usdm", "coinm", "sapi:/sapi/v1/busy",
                     "sapi (30 idle endpoints)"]


def test_after_the_first_event_only_what_changed_is_sent_gzip_compressed_once():
    import zlib

    from bnproxy.dashboard.feed import merge_patch

    clock = task.Clock()
    feed = DashboardFeed(clock, lambda: [], Metrics())
    feed.startService()
    events = EventsResource(feed)
    pages = [Page([b"events"]) for _ in range(2)]
    for page in pages:
        page.requestHeaders.setRawHeaders(b"accept-encoding", [b"gzip, deflate, br"])
        events.render_GET(page)
    plain = Page([b"events"])
    events.render_GET(plain)
    for _ in range(2):
        clock.advance(1)
    late = Page([b"events"])  # joins later: its dictionary is the whole state it read
    late.requestHeaders.setRawHeaders(b"accept-encoding", [b"gzip"])
    events.render_GET(late)
    for _ in range(3):
        clock.advance(1)
    late_text = zlib.decompressobj(31).decompress(b"".join(late.written))
    assert late_text.split(b"\n\n")[-2] == b"".join(plain.written).split(b"\n\n")[-2]
    assert pages[0].responseHeaders.getRawHeaders(b"content-encoding") == [b"gzip"]
    assert pages[0].written[-1] is pages[1].written[-1]  # compressed once for both
    text = zlib.decompressobj(31).decompress(b"".join(pages[0].written))
    assert text == b"".join(plain.written)  # the same events, as a browser reads them
    first, *later = text.split(b"\n\n")[1:-1]
    assert first.startswith(b"event: state\ndata: ")
    assert all(e.startswith(b"event: patch\ndata: ") for e in later) and len(later) == 5
    patch = json.loads(later[-1].split(b"data: ", 1)[1])
    assert set(patch) == {"time", "uptime_seconds", "sample"}  # an idle proxy
    assert patch["sample"]["answers.cache"] == 0  # the whole new point
    assert len(later[-1]) < 400
    assert merge_patch({"a": 1, "b": {"c": 1, "d": 2}, "e": [1]},
                       {"a": 1, "b": {"c": 2, "d": 2}, "e": [1, 2]}) == {
                           "b": {"c": 2}, "e": [1, 2]}
    assert merge_patch({"a": 1}, {}) == {"a": None}


def test_errors_name_the_bot_as_the_access_log_does(tmp_path):
    h = harness(tmp_path, answering(400, body=b'{"code":-1100,"msg":"bad"}'),
                names=("logger", "ratelimit"))
    h.request("GET", "/api/v3/depth?symbol=X", headers={b"X-Bnproxy-Client": b"named-bot"})
    h.request("GET", "/api/v3/depth?symbol=Y", headers={b"X-MBX-APIKEY": b"k" * 64})
    errors = tick(h)["errors"]
    named = next(e for e in errors if e["query"] == "symbol=X")
    assert (named["client"], named["address"]) == ("named-bot", "127.0.0.1")
    keyed = next(e for e in errors if e["query"] == "symbol=Y")
    bots = {c["client"] for c in tick(h)["clients"]}
    assert keyed["client"] in bots and len(keyed["client"]) == 10  # the key's hash, never it


def test_history_and_ban_causes_survive_a_restart(tmp_path):
    saved = str(tmp_path / "dashboard.json")
    statuses = iter([200, 418])

    def respond(request, seen):
        request.setResponseCode(next(statuses, 200))
        request.setHeader(b"retry-after", b"600")
        return b'{"code":-1003,"msg":"Way too much request weight used; IP banned."}'
    h = harness(tmp_path, RecordingUpstream(respond), names=("ratelimit",))
    clock = h.clock
    first = DashboardFeed(clock, lambda: h.service.middlewares, h.service.metrics,
                          state_file=saved)
    first.startService()
    for _ in range(10):
        h.request("GET", "/api/v3/time")
        clock.advance(1)
    first._raw_errors.append((clock.seconds(), *_ban_answer(h)))
    first._upstream_errors += 1
    clock.advance(1)
    cause = json.loads(first.state_bytes())["bans"][0]["cause"]
    assert "Way too much request weight used" in cause
    before = json.loads(first.state_bytes())["history"]
    first.stopService()
    clock.advance(30)  # restarted 30 s later
    second = DashboardFeed(clock, lambda: h.service.middlewares, h.service.metrics,
                           state_file=saved)
    second.startService()
    after = json.loads(second.state_bytes())
    assert after["history"]["time"][:len(before["time"])] == before["time"]
    assert after["history"]["series"]["answers.upstream"][:11] == \
        before["series"]["answers.upstream"][:11]
    assert after["bans"][0]["cause"] == cause  # not "Binance answered 418"
    second.stopService()


def _ban_answer(h):
    from bnproxy.chain.messages import ProxyRequest, ProxyResponse
    request = ProxyRequest("GET", "spot", "/api/v3/time", b"", (), b"", "127.0.0.1",
                           h.clock.seconds(), None)
    body = b'{"code":-1003,"msg":"Way too much request weight used; IP banned."}'
    return request, ProxyResponse(418, (), body, "upstream")


def test_a_malformed_saved_history_is_skipped(tmp_path):
    for content in (b"[1, 2]", b'{"schema": 1, "times": [1e999]}', b"\xff",
                    b'{"schema": 1, "times": [1], "series": {"a": [1, 2]}, "ban_causes": {}}'):
        saved = tmp_path / "dashboard.json"
        saved.write_bytes(content)
        feed = DashboardFeed(task.Clock(), lambda: [], Metrics(), state_file=str(saved))
        feed.startService()  # no exception: an empty history
        assert json.loads(feed.state_bytes())["history"]["time"] == [0.0]
        feed.stopService()
