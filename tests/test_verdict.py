"""The proxy's one verdict (bnproxy.verdict, Readiness.verdict): named
problems with since-when, read by interface, the same on /ready, /health,
/dashboard/state and /metrics."""

from __future__ import annotations

from helpers import Harness, RecordingUpstream, chain
from test_streams_own_weight import ask, feed, kline_event, make
from twisted.internet import task
from zope.interface import implementer

from bnproxy.chain.interfaces import IProblemReporter
from bnproxy.readiness import ban_problems
from bnproxy.server.accesslog import AccessLogWriter
from bnproxy.verdict import EXIT_CODES, Since


def test_since_is_when_a_problem_was_first_seen_and_resets_when_it_ends():
    since = Since()
    v = since.verdict(100.0, [("streams-stale:spot", "degraded", "stale")])
    assert v.status == "degraded" and v.problems[0].since == 100.0
    v = since.verdict(130.0, [("streams-stale:spot", "degraded", "3 stale"),
                              ("ban:spot", "banned", "ban")])
    assert v.status == "banned"
    assert [(p.key, p.since) for p in v.problems] == [("ban:spot", 130.0),
                                                     ("streams-stale:spot", 100.0)]
    assert since.verdict(140.0, []).status == "ok"
    assert since.verdict(150.0, [("streams-stale:spot", "degraded", "x")]).problems[0].since == 150
    assert EXIT_CODES == {"ok": 0, "degraded": 1, "banned": 2, "not ready": 2}
    [long] = since.verdict(160.0, [("x", "degraded", "y" * 10_000)]).problems
    assert len(long.text) <= 301


def test_a_ban_on_one_of_two_egress_addresses_is_degraded_on_both_banned():
    usage = {"spot@10.0.0.1": {"egress": "10.0.0.1", "banned_for": 60.0},
             "spot@10.0.0.2": {"egress": "10.0.0.2", "banned_for": 0.0}}
    [(key, severity, text)] = ban_problems(usage, 0.0)
    assert (key, severity) == ("ban:spot", "degraded") and "10.0.0.1" in text
    usage["spot@10.0.0.2"]["banned_for"] = 30.0
    assert ban_problems(usage, 0.0)[0][1] == "banned"
    # a 418 silences every /sapi pool: one problem, not one per endpoint
    sapi = {f"sapi:/sapi/v1/x{i}": {"egress": "default", "banned_for": 60.0} for i in range(9)}
    [(key, severity, text)] = ban_problems(sapi, 0.0)
    assert key == "ban:sapi" and "9 sapi pools" in text and "until 00:01:00 UTC" in text


def ready_harness(**config):
    h = Harness(RecordingUpstream(), **config)
    h.service.readiness.probe()
    return h


def test_a_plugin_reports_problems_by_interface_with_since_everywhere():
    h = ready_harness()

    @implementer(IProblemReporter)
    class Plugin:
        name = "plugin"
        trouble: list = []

        def health_problems(self):
            return self.trouble

    plugin = Plugin()
    h.service.middlewares.append(plugin)
    assert h.request("GET", "/ready").json() == {"status": "ready"}
    plugin.trouble = [("plugin:x", "degraded", "plugin x is slow")]
    started = h.clock.seconds()
    h.clock.advance(5)
    h.request("GET", "/health")
    h.clock.advance(5)
    health = h.request("GET", "/health").json()
    assert health["status"] == "degraded" and health["problems"] == ["plugin x is slow"]
    assert health["issues"] == [{"name": "plugin:x", "severity": "degraded",
                                 "text": "plugin x is slow", "since": started + 5}]
    ready = h.request("GET", "/ready")
    assert ready.status == 200 and ready.json()["status"] == "degraded"
    h.service.dashboard.tick()
    state = h.request("GET", "/dashboard/state").json()
    assert (state["status"], state["issues"][0]["since"]) == ("degraded", started + 5)
    metrics = h.request("GET", "/metrics").body.decode()
    assert 'bnproxy_status{status="degraded"} 1.0' in metrics
    assert 'bnproxy_status{status="ok"} 0.0' in metrics
    plugin.trouble = [("plugin:x", "not ready", "plugin x is down")]
    assert h.request("GET", "/ready").status == 503


def test_a_ban_is_banned_not_unready_on_every_surface():
    statuses = iter([200, 418])

    def respond(request, seen):
        request.setResponseCode(next(statuses, 200))
        request.setHeader(b"retry-after", b"120")
        return b"{}"
    h = Harness(RecordingUpstream(respond), middleware=chain("ratelimit"))
    h.request("GET", "/api/v3/ping")
    h.request("GET", "/api/v3/time")  # Binance bans us for 2 minutes
    ready = h.request("GET", "/ready")
    assert ready.status == 200 and ready.json()["status"] == "banned"
    h.service.dashboard.tick()
    state = h.request("GET", "/dashboard/state").json()
    assert state["status"] == "banned" and "ban in force for spot" in state["problems"][0]
    assert 'bnproxy_status{status="banned"} 1.0' in h.request("GET", "/metrics").body.decode()
    answer = h.request("GET", "/api/v3/time")  # the bot is still answered, locally
    assert answer.status == 418 and answer.header(b"retry-after")


def test_an_access_log_that_cannot_be_written_is_degraded_until_it_can():
    class Broken:
        fail = True

        def write(self, data):
            if self.fail:
                raise OSError(28, "No space left on device")

        def flush(self):
            pass
    stream = Broken()
    log = AccessLogWriter(task.Clock(), "/var/log/bnproxy.log", stream=stream)
    log.write(b"line\n")
    log.flush()
    [(key, severity, text)] = log.health_problems()
    assert (key, severity) == ("access-log", "degraded")
    assert "No space left on device" in text and "1 line(s) lost" in text
    stream.fail = False
    log.write(b"line\n")
    log.flush()
    assert log.health_problems() == []


def test_stale_streams_are_a_named_degraded_problem():
    clock, upstream, streams = make()
    for _ in range(3):
        ask(streams, upstream, "spot", "/api/v3/klines", "symbol=BTCUSDT&interval=1m&limit=5")
    placed = sorted(streams.managers["spot"].placed)
    assert placed, "a kline stream is subscribed after demand"
    for name in placed:
        feed(streams, "spot", name, kline_event("BTCUSDT", int(clock.seconds() * 1000)))
    assert not [p for p in streams.health_problems() if p[0].startswith("streams-stale")]
    clock.advance(3600)
    stale = [p for p in streams.health_problems() if p[0] == "streams-stale:spot"]
    assert stale and stale[0][1] == "degraded" and "spot streams stale" in stale[0][2]
