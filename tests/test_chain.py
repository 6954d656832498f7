"""The middleware chain: order, failure handling, coroutines, cancellation."""

import attrs
import pytest
from helpers import Harness
from twisted.internet.defer import CancelledError, Deferred, succeed
from zope.interface import implementer

from bnproxy.chain.compose import as_deferred, compose, then
from bnproxy.chain.interfaces import IMiddleware
from bnproxy.chain.messages import ProxyRequest, ProxyResponse


def request(path="/api/v3/ping"):
    return ProxyRequest("GET", "spot", path, b"", (), b"", "127.0.0.1", 0.0)


@implementer(IMiddleware)
class Tag:
    def __init__(self, name, trail):
        self.name = name
        self.trail = trail

    def handle(self, req, next):
        self.trail.append(f"{self.name}>")

        def back(response):
            self.trail.append(f"<{self.name}")
            return attrs.evolve(response, detail=response.detail + self.name)
        return next(req).addCallback(back)


def terminal_ok(trail):
    def terminal(req):
        trail.append("upstream")
        return succeed(ProxyResponse(200, (), b"{}", "upstream", ""))
    return terminal


def result_of(d):
    out = []
    as_deferred(d).addBoth(out.append)
    assert out
    return out[0]


def test_middlewares_run_in_configured_order_around_the_upstream():
    trail = []
    handler = compose([Tag("a", trail), Tag("b", trail)], terminal_ok(trail))
    response = result_of(handler(request()))
    assert trail == ["a>", "b>", "upstream", "<b", "<a"]
    assert response.detail == "ba"


@implementer(IMiddleware)
class Raises:
    name = "boom"

    def handle(self, req, next):
        raise RuntimeError("bad plugin")


@implementer(IMiddleware)
class FailsLater:
    name = "later"

    def handle(self, req, next):
        return next(req).addCallback(lambda r: 1 / 0)


@implementer(IMiddleware)
class ReturnsJunk:
    name = "junk"

    def handle(self, req, next):
        return {"not": "a response"}


@pytest.mark.parametrize("broken", [Raises(), FailsLater(), ReturnsJunk()])
def test_a_failing_middleware_yields_a_logged_500_and_is_never_skipped(broken, caplog):
    trail = []
    outer = Tag("outer", trail)
    handler = compose([outer, broken], terminal_ok(trail))
    response = result_of(handler(request()))
    assert response.status == 500
    assert response.source == "local"
    assert broken.name in response.body.decode()
    assert trail[0] == "outer>" and trail[-1] == "<outer"  # the outer one still ran
    if isinstance(broken, Raises):
        assert "upstream" not in trail  # never skipped to the upstream


@implementer(IMiddleware)
class Coroutine:
    name = "coro"

    async def handle(self, req, next):
        response = await next(req)
        return attrs.evolve(response, headers=((b"x-coro", b"1"),))


@implementer(IMiddleware)
class Local:
    name = "local"

    def handle(self, req, next):
        return ProxyResponse(204, (), b"", "local", "")


def test_coroutines_and_plain_values_are_accepted():
    trail = []
    response = result_of(compose([Coroutine()], terminal_ok(trail))(request()))
    assert response.header(b"x-coro") == b"1"
    untouched = []
    response = result_of(compose([Local()], terminal_ok(untouched))(request()))
    assert response.status == 204 and untouched == []


@implementer(IMiddleware)
class Sees:
    """Records what ``next`` returned to it."""

    def __init__(self, name, plain):
        self.name = name
        self.plain_next = plain
        self.got = []

    def handle(self, req, next):
        answer = next(req)
        self.got.append(type(answer).__name__)
        return then(answer, lambda r: attrs.evolve(r, detail=r.detail + self.name))


def test_only_a_plain_next_middleware_sees_an_answer_made_at_once():
    classic, plain = Sees("c", False), Sees("p", True)
    answer = compose([classic, plain, Local()], terminal_ok([]))(request())
    assert plain.got == ["ProxyResponse"]  # it asked for plain answers
    assert classic.got == ["Deferred"]  # the contract it was written against
    assert result_of(answer).detail == "pc"
    quick = compose([Sees("a", True), Sees("b", True), Local()], terminal_ok([]))(request())
    assert isinstance(quick, ProxyResponse) and quick.detail == "ba"  # no Deferred made


def test_cancelling_reaches_the_waiting_terminal():
    cancelled = []
    waiting = Deferred(lambda d: cancelled.append(True))
    handler = compose([Coroutine(), Tag("t", [])], lambda req: waiting)
    d = handler(request())
    d.cancel()
    assert cancelled == [True]
    failure = result_of(d)
    assert failure.check(CancelledError)


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "twisted.web"])
@pytest.mark.parametrize("head", [
    b"GET /api/v3/depth?symbol=X HTTP/1.1\r\nHost: p\r\n\r\n",
    b"POST /api/v3/order?symbol=X HTTP/1.1\r\nHost: p\r\nContent-Length: 0\r\n\r\n"],
    ids=["GET", "POST"])
def test_a_bot_disconnecting_cancels_its_request(fast, head):
    """Whichever request object answers it (the fast path's for a GET, or
    twisted.web's), the upstream request is cancelled and nothing is left
    in flight (a drain waits for nothing)."""
    from test_forwarding import ScriptedAgent
    from twisted.internet.address import IPv4Address
    from twisted.internet.error import ConnectionDone
    from twisted.internet.testing import StringTransport
    from twisted.python.failure import Failure

    pending = []
    agent = ScriptedAgent(Deferred(lambda d: pending.append("cancelled")))
    h = Harness(agent=agent)
    protocol = h.service.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    protocol.fast = fast
    protocol.makeConnection(StringTransport())
    protocol.dataReceived(head)
    assert len(agent.calls) == 1
    forward = h.service.proxy.forward
    assert forward.inflight == 1
    protocol.connectionLost(Failure(ConnectionDone()))
    assert pending == ["cancelled"]
    assert forward.inflight == 0


def test_a_canceller_that_fails_does_not_stop_the_connection_s_end():
    """A cancel that raises (a plugin's canceller, say) is logged; the
    connection still ends: its per-client count is given back."""
    from test_forwarding import ScriptedAgent
    from twisted.internet.address import IPv4Address
    from twisted.internet.error import ConnectionDone
    from twisted.internet.testing import StringTransport
    from twisted.logger import globalLogPublisher
    from twisted.python.failure import Failure

    def canceller(d):
        raise RuntimeError("canceller bug")
    h = Harness(agent=ScriptedAgent(Deferred(canceller)))
    site = h.service.site
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    protocol.makeConnection(StringTransport())
    protocol.dataReceived(b"GET /api/v3/depth?symbol=X HTTP/1.1\r\nHost: p\r\n\r\n")
    assert site._open["127.0.0.1"] == 1  # (the per-address cap's count)
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        protocol.connectionLost(Failure(ConnectionDone()))
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert [e for e in events if "log_failure" in e
            and e["log_failure"].check(RuntimeError)], events
    assert "127.0.0.1" not in site._open


@implementer(IMiddleware)
class PassesOn:
    """Gives ``next``'s answer back as it came (as the allowlist does)."""

    plain_next = True

    def __init__(self, name):
        self.name = name

    def handle(self, req, next):
        return next(req)


def test_an_answer_passed_on_is_checked_once_and_still_fails_named():
    """Issue 21: a Deferred answer that already ends with an inner
    middleware's check gets no second one; the callback a middleware adds
    is folded into one step with its check, and what it gives is still
    checked and named."""
    pending = Deferred()
    handler = compose([PassesOn("a"), PassesOn("b"), FailsLater()], lambda req: pending)
    answer = handler(request())
    assert len(answer._callbacks) == 1  # FailsLater's own callback, with its check
    pending.callback(ProxyResponse(200, (), b"{}", "upstream", ""))
    response = result_of(answer)
    assert response.status == 500 and b"later" in response.body
    outer = Deferred()
    handler = compose([Tag("outer", []), PassesOn("b")], lambda req: outer)
    answer = handler(request())
    assert len(answer._callbacks) == 2  # b's check; outer's callback with its check
    outer.callback(ProxyResponse(200, (), b"{}", "upstream", ""))
    assert result_of(answer).detail == "outer"


@implementer(IMiddleware)
class ChainsJunk:
    """Its callback returns a Deferred that later fires with no response."""

    name = "chainsjunk"
    plain_next = True

    def __init__(self):
        self.later = Deferred()

    def handle(self, req, next):
        return then(next(req), lambda r: self.later)


def test_a_folded_check_waits_for_a_deferred_its_callback_returns_and_passes_failures_named():
    pending, chains = Deferred(), ChainsJunk()
    answer = compose([chains], lambda req: pending)(request())
    pending.callback(ProxyResponse(200, (), b"{}", "upstream", ""))
    seen = []
    answer.addBoth(seen.append)
    assert seen == []  # waiting for the Deferred the callback gave
    chains.later.callback("not a response")
    response = seen[0]
    assert response.status == 500 and b"chainsjunk" in response.body
    # an inner failure skips the middleware's callback and is named at its check,
    # as the two separate steps did; a cancellation passes as it is
    for error, named in ((ZeroDivisionError(), True), (CancelledError(), False)):
        pending = Deferred()
        answer = compose([Tag("tagged", [])], lambda req, d=pending: d)(request())
        pending.errback(error)
        result = result_of(answer)
        if named:
            assert result.status == 500 and b"tagged" in result.body
        else:
            assert result.check(CancelledError)
    # a folded callback that raises is settled as the Deferred would have settled
    # it: named, unless it is a cancellation (the bot went away: nothing to write)
    for error, named in ((ZeroDivisionError(), True), (CancelledError(), False)):
        pending = Deferred()

        @implementer(IMiddleware)
        class Raises:
            name = "raises"

            def handle(self, req, next, error=error):
                def fail(r):
                    raise error
                return next(req).addCallback(fail)
        answer = compose([Raises()], lambda req, d=pending: d)(request())
        pending.callback(ProxyResponse(200, (), b"{}", "upstream", ""))
        result = result_of(answer)
        if named:
            assert result.status == 500 and b"raises" in result.body
        else:
            assert result.check(CancelledError)


@implementer(IMiddleware)
class JunkLater:
    name = "junklater"
    plain_next = True

    def handle(self, req, next):
        return then(next(req), lambda r: "not a response")


def test_a_deferred_answer_that_is_not_a_response_is_a_500_naming_its_middleware():
    pending = Deferred()
    answer = compose([PassesOn("a"), JunkLater()], lambda req: pending)(request())
    pending.callback(ProxyResponse(200, (), b"{}", "upstream", ""))
    response = result_of(answer)
    assert response.status == 500 and b"junklater" in response.body
