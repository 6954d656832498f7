"""/metrics for an operator: weight asked against weight spent, process and
build metrics, unrouted requests and failed connects counted, and a client
label that cannot grow without bound (nor /health's per-client table)."""

import re

from helpers import Harness, chain
from prometheus_client.parser import text_string_to_metric_families

from bnproxy import __version__
from bnproxy.chain.labels import BoundedLabels


def scrape(h: Harness) -> dict[str, list]:
    text = h.request("GET", "/metrics").body.decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(samples, **labels) -> float:
    found = [s.value for s in samples if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (labels, samples)
    return found[0]


def test_weight_asked_beside_weight_spent_shows_what_the_cache_saved():
    h = Harness(middleware=chain("cache", "ratelimit"))
    for _ in range(4):  # one miss, three hits: weight 5 each (limit 5)
        assert h.request("GET", "/api/v3/depth?symbol=BTCUSDT&limit=5").status == 200
    h.request("GET", "/fapi/v1/time")  # weight 1, sent
    metrics = scrape(h)
    assert value(metrics["bnproxy_weight_asked"], market="spot") == 20
    assert value(metrics["bnproxy_weight_spent"], market="spot") == 5
    assert value(metrics["bnproxy_weight_asked"], market="usdm") == 1
    assert value(metrics["bnproxy_weight_spent"], market="usdm") == 1


def test_a_refused_request_is_not_asked_weight_and_so_never_a_saving():
    h = Harness(middleware=chain("allowlist", allowlist={"allow": "10.0.0.0/8"}))
    assert h.request("GET", "/api/v3/exchangeInfo").status == 403
    metrics = scrape(h)
    assert value(metrics["bnproxy_weight_refused"], market="spot") == 20
    assert not [s for s in metrics["bnproxy_weight_asked"] if s.labels["market"] == "spot"]
    assert not [s for s in metrics["bnproxy_weight_spent"] if s.labels["market"] == "spot"]


def test_process_and_build_information_are_exported():
    import platform

    from twisted.copyright import version
    metrics = scrape(Harness())
    build = metrics["bnproxy_build_info"]
    assert value(build, version=__version__, python=platform.python_version(),
                 twisted=version) == 1
    assert value(metrics["process_resident_memory_bytes"]) > 0
    assert value(metrics["process_cpu_seconds"]) >= 0
    assert "python_info" in metrics


def test_unrouted_requests_are_counted():
    h = Harness()
    assert h.request("GET", "/nope").status == 404
    assert h.request("GET", "/wp-login.php").status == 404
    requests = scrape(h)["bnproxy_requests"]
    assert value(requests, market="none", endpoint="unrouted", status="404") == 2


def test_failed_connects_are_counted_per_market():
    from test_forwarding import ScriptedAgent
    from twisted.internet.defer import fail
    from twisted.internet.error import ConnectionRefusedError, DNSLookupError
    h = Harness(agent=ScriptedAgent(fail(ConnectionRefusedError()), fail(DNSLookupError())))
    assert h.request("GET", "/api/v3/time").status == 502
    assert h.request("GET", "/fapi/v1/time").status == 502
    failures = scrape(h)["bnproxy_upstream_connect_failures"]
    assert value(failures, market="spot") == 1 and value(failures, market="usdm") == 1


def test_200_distinct_bots_make_at_most_65_client_labels_and_health_rows():
    h = Harness(middleware=chain("ratelimit", ratelimit={"client_header": "X-Bnproxy-Client"}))
    for i in range(200):
        assert h.request("GET", "/api/v3/time",
                         headers={b"X-Bnproxy-Client": f"bot-{i:03d}".encode()}).status == 200
    metrics = scrape(h)
    for family in ("bnproxy_client_weight", "bnproxy_client_requests"):
        clients = {s.labels["client"] for s in metrics[family]}
        assert len(clients) <= 65 and "other" in clients, family
        assert sum(s.value for s in metrics[family]) == 200  # nothing lost, only folded
        assert value(metrics[family], client="other") == 200 - 64
    text = h.request("GET", "/metrics").body.decode()
    assert len(set(re.findall(r'client="([^"]+)"', text))) <= 65
    table = h.request("GET", "/health").json()["middleware"]["ratelimit"]["clients"]
    assert len(table) == 65 and table["other"]["requests"] == 200 - 64
    # /metrics and /health name the same clients
    assert set(table) == {s.labels["client"] for s in metrics["bnproxy_client_requests"]}


def test_the_bound_is_configurable():
    h = Harness(middleware=chain("ratelimit", ratelimit={"client_header": "X-Bnproxy-Client"}),
                metrics_clients=2)
    for name in (b"a", b"b", b"c", b"d", b"a"):
        h.request("GET", "/api/v3/time", headers={b"X-Bnproxy-Client": name})
    requests = scrape(h)["bnproxy_client_requests"]
    assert {s.labels["client"]: s.value for s in requests} == {"a": 2, "b": 1, "other": 2}


def test_bounded_labels_keep_the_first_values_seen():
    labels = BoundedLabels(2)
    assert [labels(v) for v in ("x", "y", "z", "x", "other", "y")] == [
        "x", "y", "other", "x", "other", "y"]
    folded = labels.fold({"x": {"n": 1, "orders": {"1m": "3"}}, "z": {"n": 2, "flag": True},
                          "w": {"n": 3, "orders": {"1m": "9"}}})
    assert folded == {"x": {"n": 1, "orders": {"1m": "3"}}, "other": {"n": 5, "orders": {}}}
