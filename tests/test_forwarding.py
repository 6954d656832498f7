"""The Upstream: byte-exact forwarding, header allowlists, deadlines, retries."""

import gzip

import pytest
from helpers import API_KEY, Harness, RecordingUpstream, sign, verify_hmac
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.python.failure import Failure
from twisted.web.client import ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent
from zope.interface import implementer

from bnproxy.chain.messages import ProxyRequest


def test_a_signed_request_still_verifies_after_passing_through():
    h = Harness()
    # As ccxt signs: urlencoded params (with characters a re-encoder would touch).
    query = (b"symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=0.001&price=30000.10"
             b"&newClientOrderId=x-R4BD3S82%2Babc&symbols=%5B%22BTCUSDT%22%5D"
             b"&note=a~b*c'&recvWindow=5000&timestamp=1700000000000")
    body = b"extra=1&more=%7Bx%7D"
    signed = sign(query, body)
    answer = h.request("POST", b"/api/v3/order?" + signed,
                       headers={b"X-MBX-APIKEY": API_KEY,
                                b"Content-Type": b"application/x-www-form-urlencoded"},
                       body=body)
    assert answer.status == 200
    seen = h.upstream.seen[-1]
    assert seen.uri == b"/api/v3/order?" + signed
    assert seen.body == body
    assert verify_hmac(seen.uri.split(b"?", 1)[1], seen.body)
    assert seen.header(b"x-mbx-apikey") == API_KEY


def test_methods_pass_unchanged():
    h = Harness()
    for method in ("GET", "POST", "PUT", "DELETE"):
        h.request(method, "/fapi/v1/listenKey")
        assert h.upstream.seen[-1].method == method


def test_hop_by_hop_and_unlisted_request_headers_never_reach_binance():
    h = Harness()
    h.request("GET", "/api/v3/ping", headers={
        b"Connection": b"X-Secret-Hop, X-MBX-Custom",
        b"X-Secret-Hop": b"1", b"X-MBX-Custom": b"named-by-connection",
        b"Keep-Alive": b"timeout=5", b"TE": b"trailers", b"Trailer": b"X",
        b"Upgrade": b"websocket", b"Proxy-Authorization": b"Basic Zm9vOmJhcg==",
        b"Cookie": b"session=bot-a", b"Authorization": b"Bearer x",
        b"X-Forwarded-For": b"10.9.9.9", b"X-MBX-APIKEY": API_KEY,
        b"X-MBX-TIME-UNIT": b"MICROSECOND",
    })
    seen = h.upstream.seen[-1]
    for name in (b"x-secret-hop", b"x-mbx-custom", b"keep-alive", b"te", b"trailer",
                 b"upgrade", b"proxy-authorization", b"cookie", b"authorization",
                 b"x-forwarded-for"):
        assert name not in seen.headers, name
    assert seen.host == b"spot.upstream.test"  # never the client's Host
    assert seen.header(b"x-mbx-apikey") == API_KEY
    assert seen.header(b"x-mbx-time-unit") == b"MICROSECOND"


def _respond_with(headers, body=b"{}", code=200):
    def respond(request, seen):
        request.setResponseCode(code)
        for k, v in headers:
            request.responseHeaders.addRawHeader(k, v)
        return body
    return respond


def test_hop_by_hop_response_headers_never_reach_the_bot():
    h = Harness(RecordingUpstream(_respond_with([
        (b"Content-Type", b"application/json"), (b"Connection", b"X-Internal"),
        (b"X-Internal", b"secret"), (b"Keep-Alive", b"timeout=5"), (b"Upgrade", b"h2c"),
        (b"Proxy-Authenticate", b"Basic"), (b"X-MBX-USED-WEIGHT-1M", b"42"),
        (b"Retry-After", b"3"), (b"X-Powered-By", b"binance"),
    ])))
    answer = h.request("GET", "/api/v3/ping")
    assert answer.header(b"x-mbx-used-weight-1m") == b"42"
    assert answer.header(b"retry-after") == b"3"
    assert answer.header(b"content-type") == b"application/json"
    for name in (b"x-internal", b"keep-alive", b"upgrade", b"proxy-authenticate",
                 b"x-powered-by"):
        assert answer.header(name) is None, name


def test_a_redirect_is_relayed_not_followed():
    h = Harness(RecordingUpstream(_respond_with([(b"Location", b"http://evil.test/steal")],
                                                code=302)))
    answer = h.request("GET", "/api/v3/account?timestamp=1&signature=x",
                       headers={b"X-MBX-APIKEY": API_KEY})
    assert answer.status == 302
    assert answer.header(b"location") == b"http://evil.test/steal"
    assert len(h.upstream.seen) == 1  # the key went nowhere else


def test_no_cookie_jar_is_shared_between_bots():
    h = Harness(RecordingUpstream(_respond_with([(b"Set-Cookie", b"aws=bot-a-session")])))
    first = h.request("GET", "/api/v3/ping")
    assert first.header(b"set-cookie") == b"aws=bot-a-session"  # relayed to its own bot
    h.request("GET", "/api/v3/ping")
    assert h.upstream.seen[-1].header(b"cookie") is None


def test_gzip_from_upstream_arrives_as_a_body_and_headers_that_agree():
    payload = b'{"serverTime":1700000000000}' * 50
    h = Harness(RecordingUpstream(_respond_with(
        [(b"Content-Encoding", b"gzip"), (b"Content-Type", b"application/json")],
        body=gzip.compress(payload))))
    answer = h.request("GET", "/api/v3/time", headers={b"Accept-Encoding": b"gzip"})
    assert answer.body == payload
    assert answer.header(b"content-encoding") is None
    assert answer.length == len(payload)
    assert h.upstream.seen[-1].header(b"accept-encoding") == b"gzip"


@implementer(IAgent)
class ScriptedAgent:
    """An agent whose answers the test scripts: a Deferred per call."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.calls = []

    def request(self, method, uri, headers=None, bodyProducer=None):
        self.calls.append((method, uri))
        outcome = self.outcomes.pop(0) if self.outcomes else Deferred()
        return outcome() if callable(outcome) else outcome


class StalledBodyResponse:
    """Headers arrive; the body never finishes."""

    code = 200
    phrase = b"OK"
    version = (b"HTTP", 1, 1)
    length = 100

    def __init__(self):
        self.headers = Headers({b"content-type": [b"application/json"]})
        self.aborted = False

    def deliverBody(self, protocol):
        response = self

        class Transport:
            def abortConnection(self):
                response.aborted = True

        protocol.makeConnection(Transport())
        protocol.dataReceived(b'{"partial":')


def test_a_stalled_upstream_gets_a_504_at_the_header_deadline():
    agent = ScriptedAgent()  # never answers
    h = Harness(agent=agent, response_timeout=2.0)
    d = h.start("GET", "/api/v3/depth?symbol=BTCUSDT")
    h.flush()
    results = []
    d.addBoth(results.append)
    h.clock.advance(1.9)
    h.flush()
    assert results == []
    h.clock.advance(0.2)
    h.flush()
    assert results[0].status == 504
    assert results[0].json()["code"] == -1007


def test_a_stalled_body_is_aborted_at_the_body_deadline():
    response = StalledBodyResponse()
    h = Harness(agent=ScriptedAgent(succeed(response)), body_timeout=3.0)
    d = h.start("GET", "/api/v3/depth?symbol=BTCUSDT")
    results = []
    d.addBoth(results.append)
    h.flush()
    h.clock.advance(3.1)
    h.flush()
    assert results[0].status == 504
    assert response.aborted


def test_refused_connection_is_a_502_in_binance_shape():
    h = Harness(agent=ScriptedAgent(fail(ConnectionRefusedError())))
    answer = h.request("POST", "/api/v3/order?symbol=BTCUSDT&timestamp=1&signature=a")
    assert answer.status == 502
    body = answer.json()
    # 12.1: a refused connect provably never left: it says so (was "unknown").
    assert body["code"] == -1001 and "was not sent" in body["msg"]
    assert "unknown" not in body["msg"]


def _never_received():
    return fail(ResponseNeverReceived([Failure(ConnectionRefusedError())]))


def test_a_public_get_is_retried_once_after_a_lost_connection():
    recorder = RecordingUpstream()
    from treq.testing import RequestTraversalAgent
    real = RequestTraversalAgent(recorder)
    agent = ScriptedAgent(_never_received,
                          lambda: real.request(b"GET", b"http://spot.upstream.test/api/v3/time"))
    h = Harness(recorder, agent=agent)
    d = h.start("GET", "/api/v3/time")
    results = []
    d.addBoth(results.append)
    for _ in range(5):
        h.flush()
        real.flush()
    assert results[0].status == 200
    assert len(agent.calls) == 2


def test_orders_and_keyed_requests_are_never_retried():
    for method, target, headers in [
        ("POST", "/api/v3/order?symbol=X&timestamp=1&signature=a", {}),
        ("DELETE", "/api/v3/order?symbol=X&timestamp=1&signature=a", {}),
        ("GET", "/fapi/v1/historicalTrades?symbol=X", {b"X-MBX-APIKEY": API_KEY}),
        ("GET", "/api/v3/time", {b"X-MBX-APIKEY": API_KEY}),
    ]:
        agent = ScriptedAgent(_never_received, _never_received)
        h = Harness(agent=agent)
        answer = h.request(method, target, headers=headers)
        assert answer.status == 502
        assert len(agent.calls) == 1, (method, target)


def test_a_market_without_an_upstream_answers_502_without_sending():
    h = Harness(testnet=True, upstreams={})
    answer = h.request("GET", "/eapi/v1/time")
    assert answer.status == 502
    assert "--upstream options=URL" in answer.json()["msg"]


class CancelWrapsAgent(ScriptedAgent):
    """As twisted.web's HTTP11ClientProtocol: cancelling a request in flight
    fails it with ResponseNeverReceived([CancelledError]), not CancelledError."""

    def request(self, method, uri, headers=None, bodyProducer=None):
        self.calls.append((method, uri))

        def cancel(d):
            d.errback(ResponseNeverReceived([Failure(CancelledError())]))
        return Deferred(cancel)


@pytest.mark.parametrize("target", ["/api/v3/time", "/api/v3/order?symbol=X&timestamp=1"
                                    "&signature=a"])
def test_a_missed_header_deadline_is_one_504_and_nothing_is_sent_twice(target):
    agent = CancelWrapsAgent()
    h = Harness(agent=agent, response_timeout=2.0)
    d = h.start("GET", target)
    results = []
    d.addBoth(results.append)
    h.flush()
    h.clock.advance(2.1)
    h.flush()
    h.clock.advance(30)
    h.flush()
    assert results[0].status == 504
    body = results[0].json()
    assert body["code"] == -1007
    assert "send status unknown; execution status unknown" in body["msg"]
    assert "Cancelled" not in body["msg"]
    assert len(agent.calls) == 1


def test_a_stale_pooled_connection_is_retried_once_within_the_same_deadline():
    from twisted.web.client import RequestNotSent
    agent = ScriptedAgent(lambda: fail(RequestNotSent()), lambda: fail(RequestNotSent()))
    h = Harness(agent=agent, response_timeout=2.0)
    answer = h.request("GET", "/api/v3/time")
    assert answer.status == 502 and "was not sent" in answer.json()["msg"]
    assert len(agent.calls) == 2  # at most once again


def test_the_retry_gets_only_what_is_left_of_the_deadline():
    first = Deferred()

    class Agent(CancelWrapsAgent):
        def request(self, method, uri, headers=None, bodyProducer=None):
            if not self.calls:
                self.calls.append((method, uri))
                return first
            return super().request(method, uri, headers, bodyProducer)
    agent = Agent()
    h = Harness(agent=agent, response_timeout=2.0)
    d = h.start("GET", "/api/v3/time")
    results = []
    d.addBoth(results.append)
    h.flush()
    h.clock.advance(1.5)
    from twisted.web.client import RequestTransmissionFailed
    first.errback(RequestTransmissionFailed([Failure(ConnectionRefusedError())]))
    h.flush()
    h.clock.advance(0.6)  # 2.1 s after the request arrived
    h.flush()
    assert results and results[0].status == 504
    assert len(agent.calls) == 2


@pytest.mark.parametrize("error,words", [
    (lambda: DNSLookupError("no such host"), "DNS lookup failed"),
    (lambda: ConnectionRefusedError(), "connection refused"),
])
def test_a_request_that_never_left_says_so_and_is_not_retried(error, words):
    agent = ScriptedAgent(lambda: fail(error()), lambda: fail(error()))
    h = Harness(agent=agent)
    answer = h.request("GET", "/api/v3/time")
    assert answer.status == 502
    msg = answer.json()["msg"]
    assert words in msg and "was not sent" in msg and "spot.upstream.test" in msg
    assert len(agent.calls) == 1


def test_retry_and_failure_causes_name_no_object_reprs():
    from twisted.internet.error import ConnectingCancelledError

    from bnproxy.upstream.client import cause
    f = Failure(ResponseNeverReceived([Failure(ConnectingCancelledError(object()))]))
    assert "object at 0x" not in cause(f) and cause(f) == "connect not completed"
    f = Failure(ResponseNeverReceived([Failure(ValueError(f"bad {object()!r}"))]))
    assert "0x" not in cause(f) and "ValueError" in cause(f)


def test_a_bot_that_goes_away_is_not_an_upstream_failure():
    agent = CancelWrapsAgent()
    h = Harness(agent=agent)
    request = ProxyRequest("GET", "spot", "/api/v3/time", b"", (), b"", "bot", 0.0,
                           h.service.endpoints.lookup("spot", "GET", "/api/v3/time"))
    d = h.service.upstream(request)
    results = []
    d.addBoth(results.append)
    d.cancel()
    assert results and isinstance(results[0], Failure) and results[0].check(CancelledError)
    assert h.service.upstream.reachability["spot"]["error"] is None
    assert len(agent.calls) == 1


class _Answered(StalledBodyResponse):
    """A response whose body arrives whole."""

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body

    def deliverBody(self, protocol):
        from twisted.web.client import ResponseDone
        protocol.makeConnection(None)
        protocol.dataReceived(self.body)
        protocol.connectionLost(Failure(ResponseDone()))


def test_overlapping_requests_each_get_their_own_deadline():
    # One reactor timer serves every deadline in flight (upstream.client._Timer):
    # a request answered in time leaves the others' deadlines as they were, and
    # a body deadline earlier than a pending header deadline is kept.
    first, third = Deferred(), StalledBodyResponse()
    h = Harness(agent=ScriptedAgent(first, Deferred(), succeed(third)),
                response_timeout=2.0, body_timeout=0.5)
    results: dict[str, list] = {"first": [], "second": [], "third": []}
    h.start("GET", "/api/v3/depth?symbol=BTCUSDT").addBoth(results["first"].append)
    h.flush()
    h.clock.advance(1.0)
    h.start("GET", "/api/v3/depth?symbol=ETHUSDT").addBoth(results["second"].append)
    h.flush()
    first.callback(_Answered(b'{"a":1}'))
    h.flush()
    assert results["first"][0].status == 200
    h.clock.advance(0.2)  # 1.2 s: the third has its head at once, a body due by 1.7 s
    h.start("GET", "/api/v3/depth?symbol=BNBUSDT").addBoth(results["third"].append)
    h.flush()
    h.clock.advance(0.4)  # 1.6 s
    h.flush()
    assert results["second"] == [] and results["third"] == []
    h.clock.advance(0.2)  # 1.8 s: the third's body deadline, before the second's
    h.flush()
    assert results["third"][0].status == 504 and results["second"] == []
    h.clock.advance(1.1)  # 2.9 s: the second, asked at 1.0 s, had until 3.0 s
    h.flush()
    assert results["second"] == []
    h.clock.advance(0.2)
    h.flush()
    assert results["second"][0].status == 504 and results["second"][0].json()["code"] == -1007
