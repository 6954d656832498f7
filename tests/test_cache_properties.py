"""Property: whatever the order, no request with a private marker is ever
answered from the cache or coalesced with another, except a public request
whose only marker is an API key Binance already accepted (issue 18: keyed
public requests are public once the key got a 2xx)."""

import json

import pytest
from helpers import FakeResponse, Harness, chain, controlled_agent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MARKERS = [
    ("header", b"X-MBX-APIKEY"), ("header", b"Authorization"), ("header", b"Cookie"),
    ("param", "signature"), ("param", "timestamp"), ("param", "recvWindow"),
    ("param", "listenKey"), ("param", "apiKey"), ("param", "SIGNATURE"),
]

request_st = st.tuples(
    st.sampled_from(["/api/v3/depth", "/api/v3/ticker/24hr", "/fapi/v1/klines"]),
    st.sampled_from(["BTCUSDT", "ETHUSDT"]),
    st.one_of(st.none(), st.sampled_from(MARKERS)),
    st.sampled_from(["a", "b"]),  # which bot (secret value)
)
step_st = st.one_of(
    st.tuples(st.just("send"), request_st),
    st.tuples(st.just("answer"), st.none()),
    st.tuples(st.just("advance"), st.sampled_from([0.1, 0.5, 1.5, 40.0])),
)


@pytest.fixture(scope="module", autouse=True)
def parts_read_once():
    """Each example builds a fresh proxy; the packaged endpoint table and the
    middleware plugins it reads are the same every time, so read them once
    (about half of an example's cost otherwise)."""
    import bnproxy.app

    endpoints, factories = bnproxy.app.load_endpoints(), bnproxy.app.discover()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bnproxy.app, "load_endpoints", lambda: endpoints)
        mp.setattr(bnproxy.app, "discover", lambda: dict(factories))
        yield


def echo(method, uri):
    return FakeResponse(200, {b"content-type": b"application/json"},
                        json.dumps({"uri": uri.decode()}).encode())


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step_st, min_size=1, max_size=30))
def test_private_requests_never_get_a_shared_answer(steps):
    agent = controlled_agent()
    h = Harness(agent=agent, middleware=chain("cache"))
    sent = []
    keyed_before: set[str] = set()  # bots whose key was sent (and could be accepted) earlier
    for kind, arg in steps:
        if kind == "send":
            path, symbol, marker, bot = arg
            only_key = marker == ("header", b"X-MBX-APIKEY")
            may_share = only_key and bot in keyed_before
            if only_key:
                keyed_before.add(bot)
            query = f"symbol={symbol}&interval=1m&limit=5"
            headers = {}
            if marker and marker[0] == "param":
                query += f"&{marker[1]}=secret-{bot}"
            elif marker:
                headers[marker[1]] = f"secret-{bot}".encode()
            results = []
            h.start("GET", f"{path}?{query}", headers=headers).addCallback(results.append)
            sent.append((marker is not None and not may_share, f"{path}?{query}", results))
            h.flush()
        elif kind == "answer":
            agent.answer_all(echo)
            h.flush()
        else:
            h.clock.advance(arg)
            h.flush()
    agent.answer_all(echo)
    h.flush()
    private_sent = sum(1 for kind, arg in steps if kind == "send" and arg[2] is not None)
    private_upstream = sum(
        1 for _, uri, headers in agent.calls
        if any(m in uri.decode().lower() for m in ("signature", "timestamp", "recvwindow",
                                                   "listenkey", "apikey"))
        or any(headers.hasHeader(n) for n in (b"x-mbx-apikey",)))
    for private, target, results in sent:
        assert results, target
        answer = results[0]
        if private:
            assert answer.header(b"x-cache") == b"BYPASS"
            if answer.header(b"x-bnproxy-source") == b"local":
                assert answer.status == 504  # its own upstream call hit the deadline
            else:
                assert answer.header(b"x-bnproxy-source") == b"upstream"
                assert json.loads(answer.body)["uri"].endswith(target)  # its own answer
    # every private request with a key or param made its own upstream call
    # (Authorization/Cookie are not forwarded, so count those by the answer check above)
    assert private_upstream <= private_sent
