"""The Grafana dashboard and its provisioning (deploy/grafana) use only
metrics the proxy exports."""

from __future__ import annotations

import json
import os
import re

from helpers import Harness, chain

DEPLOY = os.path.join(os.path.dirname(__file__), "..", "deploy", "grafana")


def exported(tmp_path) -> set[str]:
    h = Harness(middleware=chain("streams", "cache", "ratelimit"), state_dir=str(tmp_path))
    h.request("GET", "/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=100")
    h.clock.advance(1)
    h.service.dashboard.tick()
    text = h.request("GET", "/metrics").body.decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines()
            if line and not line.startswith("#")} | set(re.findall(r"^# TYPE (\S+)", text, re.M))


def test_every_metric_the_grafana_dashboard_reads_is_exported(tmp_path):
    with open(os.path.join(DEPLOY, "bnproxy.json")) as f:
        dashboard = json.load(f)
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    names = set(re.findall(r"\bbnproxy_[a-z_]+", " ".join(exprs)))
    missing = names - exported(tmp_path)
    assert not missing, missing
    for want in ("bnproxy_weight_used", "bnproxy_weight_asked_total",
                 "bnproxy_ban_remaining_seconds", "bnproxy_requests_total", "bnproxy_status",
                 "bnproxy_upstream_latency_seconds_bucket"):
        assert want in names
    # no datasource hard-wired: chosen on import (__inputs) or by the variable,
    # and every query scoped by the instance variable
    assert dashboard["__inputs"][0]["type"] == "datasource"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert "bnproxy_build_info" in variables["instance"]["definition"]
    for p in dashboard["panels"]:
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
            for selector in re.findall(r"\bbnproxy_[a-z_]+(\{[^}]*\})?", t["expr"]):
                assert 'instance=~"$instance"' in selector, t["expr"]


def test_the_ban_panel_counts_a_scope_s_first_ban():
    with open(os.path.join(DEPLOY, "bnproxy.json")) as f:
        dashboard = json.load(f)
    [bans] = [p for p in dashboard["panels"] if p["title"].startswith("Bans and 429s")]
    expr = bans["targets"][0]["expr"]
    # increase() of a series born at 1 is 0: the series new in the window are added
    assert "unless bnproxy_bans_total" in expr and "offset 5m" in expr


def test_the_asked_and_spent_counters_follow_the_answers(tmp_path):
    h = Harness(middleware=chain("cache", "ratelimit"), state_dir=str(tmp_path))
    for _ in range(4):
        h.request("GET", "/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=100")
    h.clock.advance(1)
    h.service.dashboard.tick()
    text = h.request("GET", "/metrics").body.decode()
    assert 'bnproxy_weight_asked_total{market="spot"} 8.0' in text
    # one request reached Binance (the others were cache hits): klines limit=100 weighs 2
    assert 'bnproxy_weight_spent_total{market="spot"} 2.0' in text


def test_the_compose_file_provisions_the_grafana_dashboard():
    compose = open(os.path.join(DEPLOY, "..", "docker-compose.yml")).read()
    mounts = re.findall(r"- \./(grafana/[^:]+):([^:]+):ro", compose)
    assert ("grafana/bnproxy.json", "/var/lib/grafana/dashboards/bnproxy.json") in mounts
    assert ("grafana/provisioning", "/etc/grafana/provisioning") in mounts
    for source, _ in mounts:
        assert os.path.exists(os.path.join(DEPLOY, "..", source)), source
