"""TLS upstreams: an https server and a wss server on loopback with a CA made
in the test. With the CA given (``extra_ca`` / ``SSL_CERT_FILE``) public and
signed requests are forwarded and a stream flows; without it the request is
refused with a 502 in Binance's shape naming the certificate problem."""

from __future__ import annotations

import json

import orjson
import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from streamhelpers import until
from tlscerts import listen_tls, make_pki
from twisted.internet import defer, endpoints, protocol, reactor
from twisted.web import resource, server

from bnproxy.binance.markets import PRODUCTION
from bnproxy.chain.compose import as_deferred
from bnproxy.chain.messages import ProxyRequest
from bnproxy.config.model import ProxyConfig
from bnproxy.middleware.streams.manager import StreamManager
from bnproxy.service import ProxyService
from bnproxy.upstream.client import Deadlines, make_agent
from bnproxy.upstream.tls import TLSConfigError, UntrustedCertificateError, upstream_tls_policy

pytestmark = pytest.mark.integration


class Recorder(resource.Resource):
    """Answers every path with JSON describing what it received."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, bytes, bytes | None]] = []

    def render(self, request):
        self.seen.append((request.method.decode(), request.uri,
                          request.getHeader(b"x-mbx-apikey")))
        request.setHeader(b"content-type", b"application/json")
        if request.path == b"/api/v3/ticker/price":
            return b'{"symbol":"BTCUSDT","price":"50000.00"}'
        return json.dumps({"orderId": 7, "status": "NEW", "uri": request.uri.decode()}).encode()


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path / "pki")


@pytest_twisted.async_yield_fixture
async def https_upstream(pki):
    recorder = Recorder()
    port = await listen_tls(reactor, server.Site(recorder), pki)
    yield f"https://127.0.0.1:{port.getHost().port}", recorder
    await port.stopListening()


async def _proxy_ask(upstream_url: str, policy, method: str, target: str, headers=()):
    config = ProxyConfig(listen=(), upstreams={"spot": upstream_url}, middleware=(),
                         state_dir=".")  # no middleware: nothing is written there
    agent = make_agent(reactor, Deadlines(2, 5, 5), tls_policy=policy)
    service = ProxyService(reactor, config, agent=agent)
    path, _, query = target.partition("?")
    request = ProxyRequest(method, "spot", path, query.encode(), tuple(headers), b"",
                           "127.0.0.1", reactor.seconds(),
                           service.endpoints.lookup("spot", method, path))
    try:
        return await as_deferred(service.handler(request))
    finally:
        agent._pool.closeCachedConnections()


SIGNED = ("/api/v3/order", "symbol=BTCUSDT&side=BUY&type=MARKET&quantity=1&timestamp=1"
          "&signature=0f0f")


@pytest_twisted.ensureDeferred
async def test_public_and_signed_requests_reach_an_https_upstream_with_the_ca_given(
        https_upstream, pki):
    url, recorder = https_upstream
    policy = upstream_tls_policy(str(pki.ca))
    public = await _proxy_ask(url, policy, "GET", "/api/v3/ticker/price?symbol=BTCUSDT")
    assert public.status == 200 and orjson.loads(public.body)["price"] == "50000.00"
    signed = await _proxy_ask(url, policy, "POST", f"{SIGNED[0]}?{SIGNED[1]}",
                              headers=((b"x-mbx-apikey", b"k"),))
    assert signed.status == 200, signed.body
    assert orjson.loads(signed.body)["uri"] == f"{SIGNED[0]}?{SIGNED[1]}"  # raw query kept
    assert recorder.seen[-1] == ("POST", f"{SIGNED[0]}?{SIGNED[1]}".encode(), b"k")


@pytest_twisted.ensureDeferred
async def test_a_dns_name_is_verified_too(tmp_path):
    pki = make_pki(tmp_path / "pki", host="localhost")
    port = await listen_tls(reactor, server.Site(Recorder()), pki)
    try:
        url = f"https://localhost:{port.getHost().port}"
        answer = await _proxy_ask(url, upstream_tls_policy(str(pki.ca)), "GET",
                                  "/api/v3/ticker/price?symbol=BTCUSDT")
        assert answer.status == 200, answer.body
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_ssl_cert_file_is_trusted_as_the_platform_store(https_upstream, pki,
                                                             monkeypatch):
    url, _ = https_upstream
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    answer = await _proxy_ask(url, upstream_tls_policy(), "GET",
                              "/api/v3/ticker/price?symbol=BTCUSDT")
    assert answer.status == 200


@pytest_twisted.ensureDeferred
async def test_without_the_ca_the_request_is_refused_naming_the_certificate_problem(
        https_upstream, pki, monkeypatch, tmp_path):
    url, recorder = https_upstream
    # A store that exists but does not hold the test CA (so the host's store
    # cannot matter either way).
    other = make_pki(tmp_path / "other", ca_name="some other CA")
    monkeypatch.setenv("SSL_CERT_FILE", str(other.ca))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "none"))
    for method, target in (("GET", "/api/v3/ticker/price?symbol=BTCUSDT"),
                           ("POST", f"{SIGNED[0]}?{SIGNED[1]}")):
        answer = await _proxy_ask(url, upstream_tls_policy(), method, target)
        body = orjson.loads(answer.body)
        assert answer.status == 502 and body["code"] == -1001, body
        assert "not trusted: unable to get local issuer certificate" in body["msg"]
        assert "bnproxy test CA" in body["msg"] and "--upstream-ca" in body["msg"]
    assert recorder.seen == []  # nothing was sent over the untrusted connection


@pytest_twisted.ensureDeferred
async def test_a_certificate_for_another_host_is_refused_even_from_a_trusted_ca(tmp_path):
    pki = make_pki(tmp_path / "pki", host="elsewhere.example")  # trusted CA, wrong name
    recorder = Recorder()
    port = await listen_tls(reactor, server.Site(recorder), pki)
    try:
        answer = await _proxy_ask(f"https://127.0.0.1:{port.getHost().port}",
                                  upstream_tls_policy(str(pki.ca)), "POST",
                                  f"{SIGNED[0]}?{SIGNED[1]}")
    finally:
        await port.stopListening()
    body = orjson.loads(answer.body)
    assert answer.status == 502 and body["code"] == -1001, body
    assert "is not for 127.0.0.1: it names DNS:elsewhere.example" in body["msg"]
    assert recorder.seen == []


def test_an_unusable_ca_file_is_one_clear_error(tmp_path):
    with pytest.raises(TLSConfigError, match="upstream CA file .*missing.pem"):
        upstream_tls_policy(str(tmp_path / "missing.pem"))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(TLSConfigError, match="no PEM certificate"):
        upstream_tls_policy(str(junk))


class Binanceish(WebSocketServerProtocol):
    """Acknowledges SUBSCRIBE and sends one message per subscribed stream."""

    def onMessage(self, payload, isBinary):
        msg = orjson.loads(payload)
        self.sendMessage(orjson.dumps({"result": None, "id": msg["id"]}))
        for name in msg["params"]:
            self.sendMessage(orjson.dumps({"stream": name, "data": {"s": "BTCUSDT", "c": "1"}}))


@pytest_twisted.async_yield_fixture
async def wss_upstream(pki):
    factory = WebSocketServerFactory()
    factory.protocol = Binanceish
    port = await listen_tls(reactor, factory, pki)
    yield f"wss://127.0.0.1:{port.getHost().port}"
    await port.stopListening()


@pytest.mark.parametrize("given", ["extra_ca", "SSL_CERT_FILE"])
@pytest_twisted.ensureDeferred
async def test_a_wss_stream_flows_with_the_same_trust(wss_upstream, pki, given, monkeypatch):
    import attrs
    market = attrs.evolve(PRODUCTION["spot"], stream_base=wss_upstream)
    if given == "extra_ca":
        manager = StreamManager(reactor, market, tls_policy=upstream_tls_policy(str(pki.ca)))
    else:  # the manager's default policy: the platform store, which SSL_CERT_FILE sets
        monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
        manager = StreamManager(reactor, market)
    got = []
    manager.ensure("btcusdt@ticker", got.append)
    manager.startService()
    try:
        await until(lambda: got, 10)
        assert got == [{"s": "BTCUSDT", "c": "1"}] and manager.connects == 1
    finally:
        await manager.stopService()


@pytest_twisted.ensureDeferred
async def test_a_wss_connection_without_the_ca_fails_naming_the_certificate(
        wss_upstream, pki, tmp_path, monkeypatch):
    other = make_pki(tmp_path / "other", ca_name="some other CA")
    monkeypatch.setenv("SSL_CERT_FILE", str(other.ca))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "none"))
    port = int(wss_upstream.rsplit(":", 1)[1])
    lost: defer.Deferred = defer.Deferred()

    class Probe(protocol.Protocol):
        def connectionLost(self, reason):
            lost.callback([reason])

    # Exactly what the stream manager wraps its websocket endpoint with.
    creator = upstream_tls_policy().creatorForNetloc(b"127.0.0.1", port)
    endpoint = endpoints.wrapClientTLS(
        creator, endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5))
    proto = await endpoint.connect(protocol.Factory.forProtocol(Probe))
    proto.transport.write(b"GET / HTTP/1.1\r\n\r\n")
    [reason] = await lost.addTimeout(10, reactor)
    assert reason.check(UntrustedCertificateError)
    assert "unable to get local issuer certificate" in reason.getErrorMessage()


class _Echo(resource.Resource):
    """Answers with the length of the body it received; keeps each channel."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.channels: list = []
        self.bodies: list[bytes] = []

    def render(self, request):
        if request.channel not in self.channels:
            self.channels.append(request.channel)
        body = request.content.read()
        self.bodies.append(body)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"uri": request.uri.decode(), "length": len(body)}).encode()


@pytest_twisted.ensureDeferred
async def test_requests_in_a_row_share_one_tls_connection_and_arrive_whole(pki):
    # A request on a pooled TLS connection is encrypted and sent at once
    # (upstream/http11.py): a large one too (12 MB: more than a loopback
    # socket takes at once), the part the socket did not take sent after it.
    echo = _Echo()
    port = await listen_tls(reactor, server.Site(echo), pki)
    url = f"https://127.0.0.1:{port.getHost().port}"
    config = ProxyConfig(listen=(), upstreams={"spot": url}, middleware=(), state_dir=".")
    agent = make_agent(reactor, Deadlines(2, 5, 5), tls_policy=upstream_tls_policy(str(pki.ca)))
    service = ProxyService(reactor, config, agent=agent)
    sent = []
    try:
        for i in range(12):
            body = b"n=%d&pad=" % i + b"a" * (12_000_000 if i == 6 else 10)
            sent.append(body)
            request = ProxyRequest("POST", "spot", "/api/v3/order", b"symbol=BTCUSDT",
                                   (), body, "127.0.0.1", reactor.seconds(),
                                   service.endpoints.lookup("spot", "POST", "/api/v3/order"))
            answer = await as_deferred(service.handler(request))
            assert answer.status == 200, answer.body
            assert orjson.loads(answer.body)["length"] == len(body)
    finally:
        agent._pool.closeCachedConnections()
        await port.stopListening()
    assert echo.bodies == sent
    assert len(echo.channels) == 1  # one connection, kept alive
