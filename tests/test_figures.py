"""Figures that add up: after a scripted run, /dashboard/state and /metrics
agree on asked, spent, refused, saving, hits and per-bot counts (one source
for both: the counters /metrics exports)."""

from __future__ import annotations

import json

from helpers import Harness, RecordingUpstream, chain
from prometheus_client.parser import text_string_to_metric_families


def scripted_run(tmp_path) -> Harness:
    def respond(request, seen):
        request.setResponseCode(500 if b"depth" in request.uri else 200)
        return b"{}"
    h = Harness(RecordingUpstream(respond), state_dir=str(tmp_path),
                trusted_proxies=("127.0.0.1/32",),
                middleware=chain("logger", "allowlist", "cache", "ratelimit",
                                 allowlist={"allow": ["127.0.0.1/32"]}))
    klines = "/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=100"  # weight 2
    for _ in range(6):  # 1 upstream, 5 from the cache
        h.request("GET", klines, headers={b"X-Bnproxy-Client": b"cached"})
    for _ in range(3):  # each upstream (weight 1)
        h.request("GET", "/api/v3/time", headers={b"X-Bnproxy-Client": b"direct"})
    for _ in range(4):  # refused by the allowlist: asked nothing, saved nothing
        h.request("GET", "/api/v3/exchangeInfo", headers={b"X-Forwarded-For": b"10.1.1.1"})
    h.request("GET", "/api/v3/depth?symbol=BTCUSDT&limit=5",  # failed upstream: 500
              headers={b"X-Bnproxy-Client": b"direct"})
    h.clock.advance(1)
    h.service.dashboard.tick()
    return h


def metrics_of(h: Harness) -> dict[str, list]:
    text = h.request("GET", "/metrics").body.decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def total(samples, name: str, **labels) -> float:
    return sum(s.value for s in samples if s.name == name
               and all(s.labels.get(k) == v for k, v in labels.items()))


def test_the_state_and_metrics_agree_after_a_scripted_run(tmp_path):
    h = scripted_run(tmp_path)
    state = json.loads(h.request("GET", "/dashboard/state").body)
    m = metrics_of(h)
    w = state["weight_15m"]["total"]
    asked = total(m["bnproxy_weight_asked"], "bnproxy_weight_asked_total")
    spent = total(m["bnproxy_weight_spent"], "bnproxy_weight_spent_total")
    refused = total(m["bnproxy_weight_refused"], "bnproxy_weight_refused_total")
    # 6 klines of 2 and 3 times of 1 answered; 4 exchangeInfo refused (20
    # each) and a failed depth not asked (what Binance charged for it is spent)
    assert (w["asked"], w["spent"]) == (asked, spent)
    assert asked == 15
    assert w["refused"] == refused and refused >= 80
    assert w["saving_percent"] == round(100 * (1 - spent / asked), 1)
    requests = m["bnproxy_requests"]
    answers = state["answers"]["last_15m"]
    for source in ("cache", "upstream", "local"):
        assert answers[source] == total(requests, "bnproxy_requests_total", source=source)
    assert answers["cache"] == 5
    all_answers = total(requests, "bnproxy_requests_total")
    assert state["hit_ratio_15m"]["cache"] == round(answers["cache"] / all_answers, 4)
    bots = {c["client"]: c for c in state["clients"]}
    assert set(bots) == {"cached", "direct", "10.1.1.1"}
    for name, row in bots.items():
        counted = total(m["bnproxy_bot_requests"], "bnproxy_bot_requests_total", client=name)
        assert row["requests"] == row["last_15m"]["requests"] == counted
        assert row["asked"] == total(m["bnproxy_bot_weight_asked"],
                                     "bnproxy_bot_weight_asked_total", client=name)
        assert row["spent"] == total(m["bnproxy_bot_weight_spent"],
                                     "bnproxy_bot_weight_spent_total", client=name)
    assert bots["cached"]["answered"]["cache"] == 5
    assert bots["direct"]["refused"]["failed"] == 1
    assert bots["10.1.1.1"]["refused"]["allowlist"] == 4
    # every request of every bot, and the fleet's figures are the bots' sums
    assert sum(b["requests"] for b in bots.values()) == all_answers == 14
    assert sum(b["asked"] for b in bots.values()) == asked
    assert sum(b["spent"] for b in bots.values()) == spent
