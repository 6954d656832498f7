"""The connection lifecycle of the shared state: two connections to Redis
(commands; ban notifications), their preparation (AUTH, SELECT, script
loading, SUBSCRIBE), reconnection with backoff, the deadline of every call,
and the status (``ok`` / ``degraded``).

``Connection`` knows nothing of budgets or bans: the jobs (``leases``,
``bans``, ``ledger``, ``heartbeats``) call Redis through it, and
``RedisSharedState`` decides when the state is ``ok`` again (after its
resynchronisation, told by ``on_ready``).

txredisapi is imported only when a connection is made: it installs the
global reactor at import.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from bnproxy.cluster.errors import SharedStateTimeoutError, SharedStateUnavailableError
from bnproxy.cluster.scripts import SCRIPTS
from bnproxy.cluster.url import RedisURL

_log = Logger(namespace="bnproxy.cluster")


@cache
def _protocols() -> tuple[type, type, type]:
    """(command protocol, subscriber protocol, NOSCRIPT error), built on
    first use."""
    import txredisapi

    class Command(txredisapi.RedisProtocol):
        on_lost: Any = None

        def connectionLost(self, why):
            super().connectionLost(why)
            if self.on_lost is not None:
                self.on_lost(self)

    class Subscriber(txredisapi.SubscriberProtocol):
        on_lost: Any = None
        on_message: Any = None

        def messageReceived(self, pattern, channel, message):
            if self.on_message is not None:
                self.on_message(message)

        def connectionLost(self, why):
            super().connectionLost(why)
            if self.on_lost is not None:
                self.on_lost(self)

    return Command, Subscriber, txredisapi.ScriptDoesNotExist


REPLY_TIMEOUT = 5.0  # seconds: a command connection whose reply is later is dropped


class _Factory(Factory):
    noisy = False

    def __init__(self, protocol_class, clock, **attributes) -> None:
        self._class = protocol_class
        self._clock = clock
        self._attributes = attributes

    def buildProtocol(self, addr):
        p = self._class(charset="utf-8", convertNumbers=False)
        p.callLater = self._clock.callLater  # txredisapi defaults to the global reactor
        p.factory = self
        for k, v in self._attributes.items():
            setattr(p, k, v)
        return p


def _same(lost: Any, held: Any) -> bool:
    """Whether the protocol that lost its connection is the one held: what is
    held is ClientService's proxy of it (which forwards attributes), so they
    are compared by their transport."""
    return held is not None and (held is lost or held.transport is lost.transport)


def describe(e: BaseException | None) -> str:
    text = str(e) or type(e).__name__
    return text[:200]


class Connection:
    """See the module docstring. ``on_message(raw)`` gets every notification
    on ``channel``; ``on_ready()`` is called whenever both connections are
    up (after a reconnection too)."""

    def __init__(self, reactor, url: RedisURL, channel: str, *, deadline: float,
                 background_deadline: float, connect_timeout: float, reconnect_max: float,
                 tls_ca_file: str | None, on_message: Callable[[Any], Any],
                 on_ready: Callable[[], Any], live: Callable[[], int]) -> None:
        self._clock = reactor
        self.url = url
        self.channel = channel
        self.deadline = deadline
        self.background_deadline = background_deadline
        self.connect_timeout = connect_timeout
        self._reconnect_max = reconnect_max
        self._tls_ca_file = tls_ca_file
        self._on_message = on_message
        self._on_ready = on_ready
        self._live = live
        self.running = False
        self.proto: Any = None  # ready: authenticated, scripts loaded
        self.sub: Any = None  # subscribed
        self._shas: dict[str, str] = {}
        self._status: str | None = None  # None until the first decision
        self.last_error = ""
        self._services: list[ClientService] = []
        self._drops: list = []

    # -- status -------------------------------------------------------------------------
    @property
    def decided(self) -> bool:
        """True once the first connection succeeded (and the state was
        resynchronised) or ``give_up`` was called."""
        return self._status is not None

    @property
    def status(self) -> str:
        return "ok" if self._status == "ok" else "degraded"

    def ok(self) -> bool:
        return self._status == "ok" and self.proto is not None

    def up(self) -> bool:
        """Both connections are ready (a resynchronisation may start)."""
        return self.running and self.proto is not None and self.sub is not None

    def set_status(self, status: str, reason: str = "") -> None:
        if status == self._status:
            return
        first = self._status is None
        self._status = status
        live = self._live()
        if status == "ok":
            _log.info("shared state ok: {url}, {live} live instance(s)", url=str(self.url),
                      live=live)
        elif first:
            _log.warn("shared state degraded from the start: {reason}; local budgets "
                      "(budget / {live}) until Redis answers", reason=reason, live=live)
        else:
            _log.warn("shared state degraded: {reason}; local budgets (budget / {live}), "
                      "bans kept, until Redis answers", reason=reason, live=live)

    def degrade(self, reason: str) -> None:
        self.last_error = reason
        if self.running:
            self.set_status("degraded", reason)

    def give_up(self) -> None:
        """The connect timeout passed without a connection: degraded."""
        self.set_status("degraded", self.last_error or
                        f"no answer from {self.url} within {self.connect_timeout} s")

    # -- lifecycle ----------------------------------------------------------------------
    def _endpoint(self) -> IStreamClientEndpoint:
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self._clock, self.url.host, self.url.port, timeout=self.connect_timeout)
        if self.url.tls:  # verified against the system's roots, or tls_ca_file's
            from twisted.internet.ssl import Certificate, optionsForClientTLS
            root = None
            if self._tls_ca_file:
                with open(self._tls_ca_file, "rb") as f:
                    root = Certificate.loadPEM(f.read())
            endpoint = wrapClientTLS(optionsForClientTLS(self.url.host, trustRoot=root),
                                     endpoint)
        return endpoint

    def start(self) -> None:
        command, subscriber, _ = _protocols()
        self.running = True
        policy = backoffPolicy(initialDelay=0.1, maxDelay=self._reconnect_max, factor=2.0)
        main = ClientService(self._endpoint(),
                             # a reply later than this drops the connection (txredisapi
                             # aborts it), so a Redis that stops answering is left and
                             # reconnected, and replies never pile up without end
                             _Factory(command, self._clock, on_lost=self._main_lost,
                                      replyTimeout=max(REPLY_TIMEOUT, self.connect_timeout)),
                             retryPolicy=policy, clock=self._clock,
                             prepareConnection=self._prepare_main)
        sub = ClientService(self._endpoint(),
                            _Factory(subscriber, self._clock, on_lost=self._sub_lost,
                                     on_message=self._on_message),
                            retryPolicy=policy, clock=self._clock,
                            prepareConnection=self._prepare_sub)
        self._services = [main, sub]
        for service in self._services:
            service.startService()

    @defer.inlineCallbacks
    def stop(self):
        """Disconnect; a connection being prepared is abandoned (its
        preparation fails, so the client service stops cleanly)."""
        self.running = False
        for call in self._drops:
            if call.active():
                call.cancel()
        self._drops = []
        services, self._services = self._services, []
        for service in services:
            yield service.stopService()

    # -- preparing a connection ---------------------------------------------------------
    @defer.inlineCallbacks
    def _prepare_main(self, proto):
        try:
            if self.url.password is not None:
                yield self.with_deadline(proto.auth(self.url.password, self.url.username),
                                         self.connect_timeout)
            if self.url.db:
                yield self.with_deadline(proto.select(self.url.db), self.connect_timeout)
            for name, script in SCRIPTS.items():
                self._shas[name] = yield self.with_deadline(proto.script_load(script),
                                                            self.connect_timeout)
        except Exception as e:
            if self.running:
                self._unprepared(proto, f"cannot prepare the connection to {self.url}: "
                                        f"{describe(e)}")
                return
        if not self.running:
            yield self._abandon(proto)
        self.proto = proto
        self._on_ready()

    @defer.inlineCallbacks
    def _prepare_sub(self, proto):
        try:
            if self.url.password is not None:
                yield self.with_deadline(proto.auth(self.url.password, self.url.username),
                                         self.connect_timeout)
            yield self.with_deadline(proto.subscribe(self.channel), self.connect_timeout)
        except Exception as e:
            if self.running:
                self._unprepared(proto, f"cannot subscribe on {self.url}: {describe(e)}")
                return
        if not self.running:
            yield self._abandon(proto)
        self.sub = proto
        self._on_ready()

    @staticmethod
    def _abandon(proto) -> Deferred:
        """Stopped while the connection was being prepared: the connection is
        closed and the preparation never ends. The client service, already
        disconnecting, learns of the end from the connection's loss; a
        preparation that succeeded or failed now would reach it in a state
        that has no transition for it (Twisted's ``NoTransition``)."""
        proto.transport.loseConnection()
        return Deferred()

    def _unprepared(self, proto, text: str) -> None:
        """A connection that could not be prepared (refused password, say) is
        closed after ``reconnect_max`` seconds and then reconnected: at most
        one attempt per ``reconnect_max``."""
        self.last_error = text
        call = self._clock.callLater(self._reconnect_max, proto.transport.loseConnection)
        self._drops = [c for c in self._drops if c.active()] + [call]

    def _main_lost(self, proto) -> None:
        if _same(proto, self.proto):
            self.proto = None
            self.degrade(f"lost the connection to {self.url}")

    def _sub_lost(self, proto) -> None:
        if _same(proto, self.sub):
            self.sub = None
            self.degrade(f"lost the notification connection to {self.url}")

    # -- calls --------------------------------------------------------------------------
    def with_deadline(self, d: Deferred, seconds: float) -> Deferred:
        def translate(f: Failure):
            if f.check(defer.TimeoutError, defer.CancelledError):
                raise SharedStateTimeoutError(f"no answer from {self.url} within {seconds} s")
            if f.check(SharedStateUnavailableError):
                return f
            raise SharedStateUnavailableError(f"{self.url}: {describe(f.value)}")

        return d.addTimeout(seconds, self._clock).addErrback(translate)

    def _degrading(self, f: Failure) -> Failure:
        self.degrade(f.getErrorMessage())
        return f

    def call(self, fn: Callable[[Any], Any], seconds: float) -> Deferred:
        """``fn(protocol)`` within ``seconds``; failures become
        ``SharedStateUnavailableError``/``SharedStateTimeoutError`` and degrade."""
        proto = self.proto
        if proto is None:
            return defer.fail(SharedStateUnavailableError(f"not connected to {self.url}"))
        return self.with_deadline(defer.maybeDeferred(fn, proto), seconds).addErrback(
            self._degrading)

    def script(self, name: str, keys: list[str], args: list, seconds: float) -> Deferred:
        """Run the script ``name`` of ``bnproxy.cluster.scripts``."""
        return self.call(lambda proto: self.evalsha(proto, name, keys, args), seconds)

    def evalsha(self, proto, name: str, keys: list[str], args: list) -> Deferred:
        """The script without a deadline (see ``race``)."""
        no_script = _protocols()[2]
        return proto.evalsha(self._shas[name], keys, args).addErrback(
            lambda f: f.trap(no_script) and proto.eval(SCRIPTS[name], keys, args))

    def race(self, d: Deferred, seconds: float) -> Deferred:
        """``d``'s result if it comes within ``seconds``, else
        ``SharedStateTimeoutError``; ``d`` itself is not cancelled (a late
        answer is still used by its own callbacks). Failures degrade."""
        out: Deferred = Deferred()

        def timeout() -> None:
            if not out.called:
                out.errback(SharedStateTimeoutError(
                    f"no answer from {self.url} within {seconds} s"))

        timer = self._clock.callLater(seconds, timeout)

        def done(result) -> None:
            if timer.active():
                timer.cancel()
            if out.called:
                return  # too late: the caller was answered locally
            if not isinstance(result, Failure):
                out.callback(result)
            elif result.check(SharedStateUnavailableError):
                out.errback(result)
            else:
                out.errback(SharedStateUnavailableError(f"{self.url}: {describe(result.value)}"))

        d.addBoth(done)
        return out.addErrback(self._degrading)
