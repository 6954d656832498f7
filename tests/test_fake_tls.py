"""The fake exchange over https and wss, with a throwaway CA (real loopback
sockets: TLS is the point)."""

import orjson
import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.web.client import Agent, readBody
from wsclient import Collector, wait_for

from bnproxy.testing.fake.run import start_exchange
from bnproxy.testing.fake.tls import client_trusting

pytestmark = pytest.mark.integration


@pytest_twisted.ensureDeferred
async def test_rest_over_https_with_the_ca_trusted(fake_exchange_tls):
    assert fake_exchange_tls.base.startswith("https://")
    agent = Agent(reactor, contextFactory=client_trusting(fake_exchange_tls.ca_file))
    url = fake_exchange_tls.rest("spot") + "/api/v3/depth?symbol=BTCUSDT&limit=5"
    response = await agent.request(b"GET", url.encode()).addTimeout(10, reactor)
    assert response.code == 200
    body = orjson.loads(await readBody(response))
    assert len(body["bids"]) == 5


@pytest_twisted.ensureDeferred
async def test_https_is_refused_without_the_ca(fake_exchange_tls, tmp_path):
    other = start_exchange(reactor, tls=True, tls_dir=tmp_path / "other")
    try:  # a CA of another run does not verify this server's certificate
        agent = Agent(reactor, contextFactory=client_trusting(other.ca_file))
        url = fake_exchange_tls.rest("spot") + "/api/v3/ping"
        with pytest.raises(Exception) as failure:
            await agent.request(b"GET", url.encode()).addTimeout(10, reactor)
        assert "certificate" in repr(failure.value).lower() or "SSL" in repr(failure.value)
    finally:
        await other.stop()


@pytest_twisted.ensureDeferred
async def test_a_wss_stream_with_the_ca_trusted(fake_exchange_tls):
    running = fake_exchange_tls
    url = running.stream("spot") + "/ws/btcusdt@kline_1s"
    assert url.startswith("wss://")
    factory = WebSocketClientFactory(url)
    factory.protocol = Collector
    factory.messages, factory.waiters, factory.closed = [], [], False
    factory.opened = defer.Deferred()
    ca = Certificate.loadPEM(open(running.ca_file, "rb").read())
    endpoint = wrapClientTLS(optionsForClientTLS(running.host, trustRoot=ca),
                             TCP4ClientEndpoint(reactor, running.host, running.port, timeout=5))
    await endpoint.connect(factory)
    proto = await factory.opened.addTimeout(10, reactor)
    await wait_for(reactor, factory, lambda m: len(m) >= 1, timeout=10)
    assert factory.messages[0]["e"] == "kline"
    assert factory.messages[0]["k"]["i"] == "1s"
    proto.dropConnection(abort=True)


def test_given_certificate_files_are_served(tmp_path):
    from twisted.internet.testing import MemoryReactorClock

    from bnproxy.testing.fake.tls import TlsFiles, make_certificates

    made = make_certificates(tmp_path)
    memory = MemoryReactorClock()
    running = start_exchange(memory, tls=True, tls_files=TlsFiles(made.cert, made.key))
    assert running.base.startswith("https://") and running.ca_file is None
    factory = memory.tcpServers[0][1]
    assert type(factory).__name__ == "TLSMemoryBIOFactory"
    running.exchange.stop()


def test_twistd_bnproxy_exchange_tls_options(tmp_path):
    from twisted.python import usage

    from bnproxy.testing.fake.tap import Options, makeService

    options = Options()
    options.parseOptions(["--tls", "--tls-dir", str(tmp_path), "--port", "0"])
    service = makeService(options)
    assert service.tls.ca == str(tmp_path / "fake-exchange-ca.pem")
    given = Options()
    given.parseOptions(["--tls-cert", service.tls.cert, "--tls-key", service.tls.key])
    assert given["tls"] and makeService(given).tls.ca is None
    with pytest.raises(usage.UsageError):
        Options().parseOptions(["--tls-cert", service.tls.cert])


def test_twistd_bnproxy_exchange_tls_serves_https(tmp_path):
    import json
    import ssl
    import urllib.request

    from processes import free_port, twistd

    port = free_port()
    with twistd("bnproxy-exchange", "--tls", "--tls-dir", str(tmp_path / "tls"), "--port",
                f"tcp:{port}:interface=127.0.0.1", port=port, cwd=str(tmp_path)):
        context = ssl.create_default_context(cafile=str(tmp_path / "tls" /
                                                        "fake-exchange-ca.pem"))
        url = f"https://127.0.0.1:{port}/spot/api/v3/time"
        with urllib.request.urlopen(url, context=context, timeout=10) as answer:
            assert json.loads(answer.read())["serverTime"] > 0
        with pytest.raises(urllib.error.URLError):  # an untrusted certificate is refused
            urllib.request.urlopen(url, context=ssl.create_default_context(), timeout=10)
