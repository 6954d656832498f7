"""``RedisSharedState``: the ``ISharedState`` every instance naming the same
Redis shares (``--shared-state redis://…``), on txredisapi.

How it works
------------
- Budget: one counter per (egress, pool, minute window) under
  ``PREFIX:w:EGRESS|POOL|WINDOW``, changed only by Lua scripts run with
  EVALSHA (``bnproxy.cluster.scripts``): ``reserve`` adds the weight if the
  fleet's use plus the weight stays within the budget (check and add in one
  script: Redis runs scripts one at a time); ``reconcile`` raises the
  reported use (Binance's header, never added to the grants) and adds what
  was granted while Redis was away. Each call carries this instance's last
  view of the counter, which re-seeds a counter Redis lost (restarted empty):
  every grant is counted once. Keys expire two windows after their last write.
- Bans: a hash ``PREFIX:bans`` (``EGRESS|SCOPE`` -> ``[until, status,
  cause]``), written by a script that keeps the later ``until`` and
  PUBLISHes the ban on the channel ``PREFIX:bans``; every instance
  subscribes on a second connection and applies it at once. The hash is read
  at start and after every reconnection.
- Ledger: additions are summed in memory and written once a second (one
  script call with HINCRBYs on ``PREFIX:ledger``).
- Heartbeats: every ``heartbeat_interval`` seconds each instance puts its id
  in the sorted set ``PREFIX:instances`` scored by Redis's own clock; live
  instances are the ids seen within ``heartbeat_ttl``.
- Nothing secret is written: pools, egress addresses, client labels and ban
  causes only. Nothing read is trusted (``bnproxy.cluster.validate``): a
  malformed entry is skipped and logged once, a key of the wrong type is
  replaced by the next write.

Deadlines and failure
---------------------
Every Redis call has a deadline: ``deadline`` (50 ms) on the hot path
(``reserve``, ``reconcile``, ``used``), ``background_deadline`` (1 s) for
the rest. A call past its deadline fails with ``SharedStateTimeoutError``, a lost
or absent connection with ``SharedStateUnavailableError``; either turns the state
``degraded`` (logged once). While degraded, ``reserve``/``reconcile``/
``used``/``set_ban``/``bans`` answer from local state at once, without
touching Redis; ``clients()`` fails. The connections reconnect by
themselves (backoff up to ``reconnect_max`` seconds) and, when Redis is
slow rather than gone, every heartbeat tick probes it; once both
connections are up and a resynchronisation succeeds (local bans written
back, the later ``until`` winning; remote bans re-read; what was spent
locally added to Redis's counters; a heartbeat), the state is ``ok`` again.

The guarantee, and its worst case
---------------------------------
While ``ok``: for each (egress, pool, window) the weights ``reserve`` granted
over the whole fleet add up to at most ``budget`` (Redis's single-threaded
script execution is the one point of atomicity). A reservation whose reply
missed the deadline may have been counted in Redis and is then also decided
locally: that errs on the safe side (counted twice, sent once at most).
Windows are decided by each instance's clock: with a skew of ``s`` seconds
between hosts, requests in the ``s`` seconds around a minute boundary can be
counted in the neighbouring window, so Binance's minute may see the budget
plus that much traffic (keep clocks in NTP; the governor's margin absorbs
milliseconds). Weight Binance counts that nobody reserved (another program on
the address) is only known after the fact, from ``reconcile``.

While ``degraded``: with ``N`` the live instances it last saw (at least
``min_instances``), ``U`` the fleet's use of the window it last saw and ``own``
what it spent itself in the window, an instance grants locally at most
``min((budget - U) / N, budget / N - own)`` more, and never lets the highest
use it knows of (Binance's ``reconcile`` or a late answer from Redis) plus
the request pass the budget. So the fleet's window stays within the budget
when ``N`` is not below the real number of instances and none had spent more
than ``budget / N`` before Redis went away (a balanced fleet: what a load
balancer gives), however stale each instance's view of the counter was.
Otherwise: an instance that had spent more keeps what it spent (the excess is
the worst case, at most its earlier overshoot of ``budget / N``), and
instances the others did not count (started since the last heartbeat they
saw, or started while Redis was away: ``N = min_instances``) add their share
on top, i.e. up to ``real instances / N`` budgets; set ``min_instances`` to
the fleet size to bound it. While one instance alone finds Redis slow, its
local grants also go to Redis (counted there when they run); one Redis
refuses late is written back at resynchronisation, so the others may have
spent it too: at most that instance's share, once. Requests still in flight
at a minute boundary are counted by Binance in the next window (the
governor's margin covers them). Bans: every ban an instance knew is kept; an
instance that starts while Redis is away knows only the bans in its own state
file.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import uuid
from typing import Any

import txredisapi
from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from bnproxy.binance.limits import LONGEST_BAN_HEARD, WEIGHT_WINDOW
from bnproxy.chain.interfaces import IHealthReporter, IMetricsSource, ISharedState
from bnproxy.cluster import validate
from bnproxy.cluster.errors import SharedStateTimeoutError, SharedStateUnavailableError
from bnproxy.cluster.keys import Keys
from bnproxy.cluster.local import METRICS, BanBook, BanCallback, LedgerBuffer
from bnproxy.cluster.scripts import SCRIPTS
from bnproxy.cluster.url import RedisURL, parse_redis_url

_log = Logger(namespace="bnproxy.cluster")

class _Protocol(txredisapi.RedisProtocol):
    on_lost: Any = None

    def connectionLost(self, why):
        super().connectionLost(why)
        if self.on_lost is not None:
            self.on_lost(self)


class _Subscriber(txredisapi.SubscriberProtocol):
    on_lost: Any = None
    on_message: Any = None

    def messageReceived(self, pattern, channel, message):
        if self.on_message is not None:
            self.on_message(message)

    def connectionLost(self, why):
        super().connectionLost(why)
        if self.on_lost is not None:
            self.on_lost(self)


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


class _Fallback:
    """Local budgets while Redis is away or slow (see the module docstring).

    Per (egress, pool): ``[window, base, mine, reported, unsent]``: the
    fleet's use when the entry began, what this instance granted locally
    since, Binance's reported use, and the part of ``mine`` Redis has not
    counted (granted without a connection, or refused by Redis when its
    late answer came): written back at resynchronisation.
    """

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], tuple[int, int]] = {}  # -> (window, fleet use)
        self.own: dict[tuple[str, str], tuple[int, int]] = {}  # -> (window, this one's use)
        self.local: dict[tuple[str, str], list[int]] = {}
        # -> (window, epoch, granted count, reported): the last view of the
        # window's counter in Redis (see ``bnproxy.cluster.scripts``)
        self.views: dict[tuple[str, str], tuple[int, str, int, int]] = {}

    def view(self, egress: str, pool: str, window: int) -> tuple[str, int, int]:
        """(epoch, granted, reported) last seen of the window: what re-seeds
        a counter Redis lost."""
        v = self.views.get((egress, pool))
        if v is None or v[0] != window:
            return "", 0, 0
        return v[1], v[2], v[3]

    def learn(self, egress: str, pool: str, window: int, reply: Any) -> int:
        """A window script's ``[granted, reported, epoch]`` (the tail of its
        reply); returns the fleet's use, ``max(granted, reported)``."""
        try:
            granted, reported, epoch = reply[-3], reply[-2], reply[-1]
        except (TypeError, IndexError, KeyError):
            return self._seen(egress, pool, window)
        granted = validate.count(granted) or 0
        reported = validate.count(reported) or 0
        epoch = epoch if isinstance(epoch, str) else ""
        w, e, g, r = self.views.get((egress, pool), (None, "", 0, 0))
        if w == window and e == epoch:
            granted, reported = max(g, granted), max(r, reported)
        elif w == window:
            reported = max(r, reported)
        self.views[(egress, pool)] = (window, epoch, granted, reported)
        used = max(granted, reported)
        self.saw(egress, pool, window, used)
        return used

    def granted(self, egress: str, pool: str, window: int, weight: int) -> None:
        """This instance spent ``weight`` in the window (Redis said yes)."""
        w, u = self.own.get((egress, pool), (None, 0))
        self.own[(egress, pool)] = (window, (u if w == window else 0) + weight)

    def saw(self, egress: str, pool: str, window: int, used: int) -> None:
        w, u = self.seen.get((egress, pool), (None, 0))
        self.seen[(egress, pool)] = (window, max(u, used) if w == window else used)

    def _seen(self, egress: str, pool: str, window: int) -> int:
        w, u = self.seen.get((egress, pool), (None, 0))
        return u if w == window else 0

    def _entry(self, egress: str, pool: str, window: int) -> list[int]:
        e = self.local.get((egress, pool))
        if e is None or e[0] != window:
            e = self.local[(egress, pool)] = [window, self._seen(egress, pool, window), 0, 0, 0]
        return e

    def reserve(self, egress: str, pool: str, weight: int, budget: int, window: int,
                live: int, sent: bool = False) -> bool:
        """``sent``: the reservation also went to Redis, which will count it
        if it fits (a late answer)."""
        e = self._entry(egress, pool, window)
        live = max(1, live)
        w, own = self.own.get((egress, pool), (None, 0))
        own = own if w == window else 0
        # a share of what the fleet had left, and never more than a fair share
        # of the window in all: with every instance doing the same, the fleet
        # stays within the budget however stale each one's view of the counter
        left = (budget - e[1]) // live - e[2]
        fair = budget // live - own
        fleet = max(e[3], e[1] + e[2], self._seen(egress, pool, window))
        if weight > min(left, fair) or fleet + weight > budget:
            return False
        e[2] += weight
        self.granted(egress, pool, window, weight)
        if not sent:
            e[4] += weight
        return True

    def uncounted(self, egress: str, pool: str, window: int, weight: int) -> None:
        """Redis refused (late) a reservation granted locally: write it back."""
        e = self._entry(egress, pool, window)
        e[4] += weight

    def reconcile(self, egress: str, pool: str, window: int, used: int) -> None:
        e = self._entry(egress, pool, window)
        e[3] = max(e[3], used)

    def used(self, egress: str, pool: str, window: int) -> int:
        e = self._entry(egress, pool, window)
        return max(e[3], e[1] + e[2], self._seen(egress, pool, window))

    def take(self) -> dict[tuple[str, str], list[int]]:
        local, self.local = self.local, {}
        return local


@implementer(ISharedState, IHealthReporter, IMetricsSource)
class RedisSharedState(Service):
    """See the module docstring. ``start()`` connects (firing when ``ok`` or
    after ``connect_timeout``, never failing), ``stop()`` flushes the ledger,
    removes the heartbeat and disconnects. A Twisted service: add it to the
    application (``startService``/``stopService`` call them); stop it after
    the proxy has drained."""

    name = "shared-state"

    def __init__(self, reactor, url: RedisURL | str, *, deadline: float = 0.05,
                 background_deadline: float = 1.0, connect_timeout: float = 2.0,
                 heartbeat_interval: float = 2.0, heartbeat_ttl: float = 6.0,
                 ledger_interval: float = 1.0, window: float = WEIGHT_WINDOW,
                 reconnect_max: float = 2.0, prefix: str = "bnproxy",
                 min_instances: int = 1, instance_id: str | None = None,
                 tls_ca_file: str | None = None) -> None:
        self._clock = reactor
        self.url = parse_redis_url(url) if isinstance(url, str) else url
        self.deadline = deadline
        self.background_deadline = background_deadline
        self._connect_timeout = connect_timeout
        self._heartbeat_interval = heartbeat_interval
        self._heartbeat_ttl_ms = int(heartbeat_ttl * 1000)
        self._ledger_interval = ledger_interval
        self._window_ttl_ms = int(window * 2 * 1000)
        self._reconnect_max = reconnect_max
        self.keys = Keys(prefix)
        self._min_instances = max(1, min_instances)
        self._tls_ca_file = tls_ca_file
        self.instance_id = instance_id or (
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")
        self._status: str | None = None  # None until the first decision
        self.last_error = ""
        self._live = self._min_instances
        self._proto: _Protocol | None = None  # ready: authenticated, scripts loaded
        self._sub: _Subscriber | None = None  # subscribed
        self._shas: dict[str, str] = {}
        self._book = BanBook(reactor)
        self._ledger = LedgerBuffer()
        self._fallback = _Fallback()
        self._resyncing: Deferred | None = None
        self._services: list[ClientService] = []
        self._loops: list[task.LoopingCall] = []
        self._ready_waiters: list[Deferred] = []
        self._drops: list = []
        self._epochs = itertools.count(1)
        self._rejected = validate.Rejected()

    def _window_args(self, egress: str, pool: str, window: int,
                     reported: int = 0) -> list:
        """The caller's view of a window and a new epoch, for the window
        scripts (``bnproxy.cluster.scripts``)."""
        epoch, granted, seen = self._fallback.view(egress, pool, window)
        return [epoch, granted, max(seen, int(reported)),
                f"{self.instance_id}:{next(self._epochs)}"]

    # -- lifecycle ------------------------------------------------------------------
    def _endpoint(self):
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self._clock, self.url.host, self.url.port, timeout=self._connect_timeout)
        if self.url.tls:  # verified against the system's roots, or tls_ca_file's
            from twisted.internet.ssl import Certificate, optionsForClientTLS
            root = None
            if self._tls_ca_file:
                with open(self._tls_ca_file, "rb") as f:
                    root = Certificate.loadPEM(f.read())
            endpoint = wrapClientTLS(optionsForClientTLS(self.url.host, trustRoot=root),
                                     endpoint)
        return endpoint

    def start(self) -> Deferred:
        """Connect; fires (with None) once ``ok`` or after
        ``connect_timeout``, whichever is first. Never fails: without Redis
        the state starts ``degraded``."""
        self.running = 1
        policy = backoffPolicy(initialDelay=0.1, maxDelay=self._reconnect_max, factor=2.0)
        main = ClientService(self._endpoint(),
                             _Factory(_Protocol, self._clock, on_lost=self._main_lost),
                             retryPolicy=policy, clock=self._clock,
                             prepareConnection=self._prepare_main)  # type: ignore[arg-type]
        sub = ClientService(self._endpoint(),
                            _Factory(_Subscriber, self._clock, on_lost=self._sub_lost,
                                     on_message=self._message),
                            retryPolicy=policy, clock=self._clock,
                            prepareConnection=self._prepare_sub)  # type: ignore[arg-type]
        self._services = [main, sub]
        for service in self._services:
            service.startService()
        for interval, fn in ((self._heartbeat_interval, self._tick),
                             (self._ledger_interval, self._flush_ledger)):
            loop = task.LoopingCall(fn)
            loop.clock = self._clock
            loop.start(interval, now=False).addErrback(
                lambda f: _log.failure("shared-state loop failed", f))
            self._loops.append(loop)
        d: Deferred = Deferred()
        self._ready_waiters.append(d)

        def give_up() -> None:
            if not d.called:
                self._ready_waiters.remove(d)
                self._set_status("degraded", self.last_error or
                                 f"no answer from {self.url} within "
                                 f"{self._connect_timeout} s")
                d.callback(None)

        timer = self._clock.callLater(self._connect_timeout, give_up)
        d.addBoth(lambda r: (timer.cancel() if timer.active() else None, r)[1])
        return d

    @defer.inlineCallbacks
    def stop(self):
        """Write the ledger, leave the heartbeat set, disconnect (each step
        within ``background_deadline``)."""
        self.running = False
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        for call in self._drops:
            if call.active():
                call.cancel()
        if self._status == "ok":
            try:
                yield self._flush_ledger()
                yield self._call(lambda p: p.execute_command(
                    "ZREM", self.keys.instances, self.instance_id), self.background_deadline)
            except SharedStateUnavailableError:
                pass
        for service in self._services:
            yield service.stopService()
        self._services = []

    def startService(self) -> None:
        self.start()

    def stopService(self) -> Deferred:
        return self.stop()

    def collect_metrics(self):
        from prometheus_client.core import GaugeMetricFamily
        ok = GaugeMetricFamily("bnproxy_shared_state_ok",
                               "1 while the shared state (Redis) answers, 0 while degraded.")
        ok.add_metric([], 1 if self.status == "ok" else 0)
        live = GaugeMetricFamily("bnproxy_live_instances",
                                 "Instances heartbeating in the shared state, as last seen.")
        live.add_metric([], self._live)
        yield from (ok, live)

    # -- connections ----------------------------------------------------------------
    @defer.inlineCallbacks
    def _prepare_main(self, proto: _Protocol):
        try:
            if self.url.password is not None:
                yield self._with_deadline(proto.auth(self.url.password, self.url.username),
                                          self._connect_timeout)
            if self.url.db:
                yield self._with_deadline(proto.select(self.url.db), self._connect_timeout)
            for name, script in SCRIPTS.items():
                self._shas[name] = yield self._with_deadline(proto.script_load(script),
                                                             self._connect_timeout)
        except Exception as e:
            self._note_error(f"cannot prepare the connection to {self.url}: {_describe(e)}")
            self._drop_later(proto)
            return
        self._proto = proto
        self._maybe_resync()

    @defer.inlineCallbacks
    def _prepare_sub(self, proto: _Subscriber):
        try:
            if self.url.password is not None:
                yield self._with_deadline(proto.auth(self.url.password, self.url.username),
                                          self._connect_timeout)
            yield self._with_deadline(proto.subscribe(self.keys.ban_channel),
                                      self._connect_timeout)
        except Exception as e:
            self._note_error(f"cannot subscribe on {self.url}: {_describe(e)}")
            self._drop_later(proto)
            return
        self._sub = proto
        self._maybe_resync()

    def _drop_later(self, proto) -> None:
        """A connection that could not be prepared (refused password, say) is
        closed after ``reconnect_max`` seconds and then reconnected: at most
        one attempt per ``reconnect_max``. (Failing ClientService's
        ``prepareConnection`` instead races with stopService in Twisted.)"""
        call = self._clock.callLater(self._reconnect_max, proto.transport.loseConnection)
        self._drops = [c for c in self._drops if c.active()] + [call]

    def _main_lost(self, proto) -> None:
        if proto is self._proto:
            self._proto = None
            self._degrade(f"lost the connection to {self.url}")

    def _sub_lost(self, proto) -> None:
        if proto is self._sub:
            self._sub = None
            self._degrade(f"lost the notification connection to {self.url}")

    def _note_error(self, text: str) -> None:
        self.last_error = text

    def _set_status(self, status: str, reason: str) -> None:
        if status == self._status:
            return
        first = self._status is None
        self._status = status
        if status == "ok":
            _log.info("shared state ok: {url}, {live} live instance(s)", url=str(self.url),
                      live=self._live)
        elif first:
            _log.warn("shared state degraded from the start: {reason}; local budgets "
                      "(budget / {live}) until Redis answers", reason=reason, live=self._live)
        else:
            _log.warn("shared state degraded: {reason}; local budgets (budget / {live}), "
                      "bans kept, until Redis answers", reason=reason, live=self._live)

    def _degrade(self, reason: str) -> None:
        self.last_error = reason
        if self.running:
            self._set_status("degraded", reason)

    @property
    def decided(self) -> bool:
        """True once the first connection succeeded (the fleet's bans read)
        or ``connect_timeout`` passed without one."""
        return self._status is not None

    @property
    def status(self) -> str:
        return "ok" if self._status == "ok" else "degraded"

    # -- calls ----------------------------------------------------------------------
    def _with_deadline(self, d: Deferred, seconds: float) -> Deferred:
        def translate(f: Failure):
            if f.check(defer.TimeoutError, defer.CancelledError):
                raise SharedStateTimeoutError(f"no answer from {self.url} within {seconds} s")
            if f.check(SharedStateUnavailableError):
                return f
            raise SharedStateUnavailableError(f"{self.url}: {_describe(f.value)}")

        return d.addTimeout(seconds, self._clock).addErrback(translate)

    def _call(self, fn, seconds: float) -> Deferred:
        """``fn(protocol)`` within ``seconds``; failures become
        ``SharedStateUnavailableError``/``SharedStateTimeoutError`` and degrade."""
        proto = self._proto
        if proto is None:
            return defer.fail(SharedStateUnavailableError(f"not connected to {self.url}"))
        d = self._with_deadline(defer.maybeDeferred(fn, proto), seconds)

        def failed(f: Failure):
            self._degrade(f.getErrorMessage())
            return f

        return d.addErrback(failed)

    def _script(self, name: str, keys: list[str], args: list, seconds: float) -> Deferred:
        return self._call(lambda proto: self._evalsha(proto, name, keys, args), seconds)

    def _ok(self) -> bool:
        return self._status == "ok" and self._proto is not None

    # -- budget ---------------------------------------------------------------------
    def reserve(self, egress: str, pool: str, weight: int, budget: int,
                window_start: int) -> Deferred:
        window = int(window_start)
        proto = self._proto
        if proto is None:  # no connection: decided here, written back later
            return succeed(self._fallback.reserve(egress, pool, weight, budget, window,
                                                  self._live))
        if self._status != "ok":  # slow or resynchronising: decided here, at once;
            # a grant also goes to Redis, which counts it when it runs (or it is
            # written back at the resynchronisation): nothing refused is counted
            granted = self._fallback.reserve(egress, pool, weight, budget, window,
                                             self._live, sent=True)
            if granted:
                self._send_reserve(proto, egress, pool, weight, budget, window,
                                   [True]).addErrback(lambda f: None)
            return succeed(granted)
        # Redis decides unless it misses the deadline; then the decision is
        # local, and a late answer still updates what this instance knows.
        decided: list[bool | None] = [None]  # None: Redis's answer decides
        raw = self._send_reserve(proto, egress, pool, weight, budget, window, decided)

        def failed(f: Failure) -> bool:
            f.trap(SharedStateUnavailableError)
            sent = f.check(SharedStateTimeoutError) is not None and not raw.called
            granted = self._fallback.reserve(egress, pool, weight, budget, window,
                                             self._live, sent=sent)
            decided[0] = granted
            return granted

        def answered(result) -> bool:
            if result[0] == 1:
                self._fallback.granted(egress, pool, window, weight)
                return True
            return False

        return self._race(raw, self.deadline).addCallbacks(answered, failed)

    def _send_reserve(self, proto, egress: str, pool: str, weight: int, budget: int,
                      window: int, decided: list) -> Deferred:
        """The reserve script; its answer (whenever it comes) updates the view
        of the window, and squares a local decision taken meanwhile
        (``decided[0]``: True granted, False refused, None not yet): a grant
        Redis did not count is written back later, a weight Redis counted for
        a refused request is released."""
        key = self.keys.window(egress, pool, window)
        raw = defer.maybeDeferred(self._evalsha, proto, "reserve", [key],
                                  [int(weight), int(budget), self._window_ttl_ms,
                                   *self._window_args(egress, pool, window)])

        def learn(result):
            taken = isinstance(result, list) and bool(result) and result[0] == 1
            self._fallback.learn(egress, pool, window, result)
            if decided[0] is True and not taken:
                self._fallback.uncounted(egress, pool, window, weight)
            elif decided[0] is False and taken:
                self._release(key, weight, result[-1])
            return result

        def lost(f: Failure):
            if decided[0] is True:  # perhaps never ran: count it again (errs safe)
                self._fallback.uncounted(egress, pool, window, weight)
            return f

        return raw.addCallbacks(learn, lost)

    def _release(self, key: str, weight: int, epoch: object) -> None:
        if not isinstance(epoch, str) or self._proto is None:
            return
        self._script("release", [key], [int(weight), epoch],
                     self.background_deadline).addErrback(lambda f: None)

    def _evalsha(self, proto, name: str, keys: list[str], args: list) -> Deferred:
        return proto.evalsha(self._shas[name], keys, args).addErrback(
            lambda f: f.trap(txredisapi.ScriptDoesNotExist) and proto.eval(
                SCRIPTS[name], keys, args))

    def _race(self, d: Deferred, seconds: float) -> Deferred:
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
                out.errback(SharedStateUnavailableError(f"{self.url}: {_describe(result.value)}"))

        d.addBoth(done)

        def failed(f: Failure):
            self._degrade(f.getErrorMessage())
            return f

        return out.addErrback(failed)

    def reconcile(self, egress: str, pool: str, window_start: int, used: int) -> Deferred:
        window = int(window_start)
        self._fallback.saw(egress, pool, window, int(used))
        if not self._ok():
            self._fallback.reconcile(egress, pool, window, int(used))
            return succeed(None)

        def failed(f: Failure) -> None:
            f.trap(SharedStateUnavailableError)
            self._fallback.reconcile(egress, pool, window, int(used))

        return self._script("reconcile", [self.keys.window(egress, pool, window)],
                            [self._window_ttl_ms,
                             *self._window_args(egress, pool, window, int(used)), 0],
                            self.deadline).addCallbacks(
            lambda reply: (self._fallback.learn(egress, pool, window, reply), None)[1],
            failed)

    def used(self, egress: str, pool: str, window_start: int) -> Deferred:
        window = int(window_start)
        if not self._ok():
            return succeed(self._fallback.used(egress, pool, window))

        def done(reply) -> int:
            return self._fallback.learn(egress, pool, window, reply)

        def failed(f: Failure) -> int:
            f.trap(SharedStateUnavailableError)
            return self._fallback.used(egress, pool, window)

        return self._script("read_window", [self.keys.window(egress, pool, window)], [],
                            self.deadline).addCallbacks(done, failed)

    # -- bans -----------------------------------------------------------------------
    def _publish_ban(self, egress: str, scope: str, until: float, status: int,
                     cause: str) -> Deferred:
        value = json.dumps([until, status, cause])
        message = json.dumps({"egress": egress, "scope": scope, "until": until,
                              "status": status, "cause": cause, "from": self.instance_id})
        return self._script("set_ban", [self.keys.bans],
                            [self.keys.field(egress, scope), repr(float(until)), value,
                             self.keys.ban_channel, message, repr(self._clock.seconds()),
                             repr(LONGEST_BAN_HEARD)],
                            self.background_deadline)

    def set_ban(self, egress: str, scope: str, until: float, status: int,
                cause: str) -> Deferred:
        checked = validate.ban_message(json.dumps(
            {"egress": egress, "scope": scope, "until": until, "status": status,
             "cause": str(cause)}), self._clock.seconds())
        if checked is None:  # never Binance's: not kept, not spread
            _log.error("refusing to record a malformed ban: {egress} {scope} until "
                       "{until!r} ({status!r})", egress=egress, scope=scope, until=until,
                       status=status)
            return succeed(None)
        egress, scope, until, status, cause = checked
        self._book.merge(egress, scope, until, status, cause)
        if not self._ok():
            return succeed(None)  # written back when Redis returns
        return self._publish_ban(egress, scope, until, status, cause).addCallbacks(
            lambda _: None, lambda f: f.trap(SharedStateUnavailableError) and None)

    def _message(self, raw) -> None:
        m = validate.ban_message(raw, self._clock.seconds())
        if m is None:
            self._rejected("ban notification", f"channel {self.keys.ban_channel}: "
                           f"{str(raw)[:100]}")
            return
        self._book.merge(*m)

    def _read_bans(self) -> Deferred:
        def merge(flat) -> None:
            now = self._clock.seconds()
            for field, value in validate.pairs(flat):
                where = validate.ban_field(field)
                ban = validate.ban_entry(value, now)
                if where is None or ban is None:
                    self._rejected("ban entry", f"{self.keys.bans} {str(field)[:100]}")
                    continue
                self._book.merge(where[0], where[1], *ban)

        return self._script("read_hash", [self.keys.bans], [],
                            self.background_deadline).addCallback(merge)

    def bans(self) -> Deferred:
        if not self._ok():
            return succeed(self._book.in_force())
        return self._read_bans().addCallbacks(
            lambda _: self._book.in_force(),
            lambda f: (f.trap(SharedStateUnavailableError), self._book.in_force())[1])

    def banned_until(self, egress: str, scope: str) -> float:
        return self._book.until(egress, scope)

    def on_ban(self, callback: BanCallback) -> None:
        self._book.on_ban(callback)

    # -- ledger ---------------------------------------------------------------------
    def add(self, client: str, weight: int, requests: int, rejected: int) -> None:
        self._ledger.add(client, weight, requests, rejected)

    def _flush_ledger(self) -> Deferred:
        if not self._ok() or not self._ledger.pending:
            return succeed(None)
        taken = self._ledger.take()
        args: list = []
        for client, row in taken.items():
            for metric, value in zip(METRICS, row):
                if value:
                    args += [f"{client}|{metric}", int(value)]
        if not args:
            return succeed(None)

        def failed(f: Failure) -> None:
            f.trap(SharedStateUnavailableError)
            self._ledger.put_back(taken)

        return self._script("ledger", [self.keys.ledger], args,
                            self.background_deadline).addCallbacks(lambda _: None, failed)

    def clients(self) -> Deferred:
        def table(flat) -> dict:
            out: dict[str, dict[str, int]] = {}
            for field, value in validate.pairs(flat):
                client, _, metric = str(field).rpartition("|")
                n = validate.count(value)
                if metric not in METRICS or not client or n is None:
                    self._rejected("ledger entry", f"{self.keys.ledger} {str(field)[:100]}")
                    continue
                out.setdefault(client, dict.fromkeys(METRICS, 0))[metric] = n
            return self._ledger.merged_into(out)

        if not self._ok():
            return defer.fail(SharedStateUnavailableError(
                f"the fleet's ledger is in {self.url}, which is not answering"))
        return self._script("read_hash", [self.keys.ledger], [],
                            self.background_deadline).addCallback(table)

    # -- heartbeats, probes, resynchronisation -----------------------------------------
    def live_instances(self) -> int:
        return self._live

    def _heartbeat(self) -> Deferred:
        def seen(count) -> int:
            self._live = max(self._min_instances, validate.count(count) or 1)
            return self._live

        return self._script("heartbeat", [self.keys.instances],
                            [self.instance_id, self._heartbeat_ttl_ms],
                            self.background_deadline).addCallback(seen)

    def _tick(self) -> Deferred | None:
        if self._ok():
            return self._heartbeat().addErrback(lambda f: f.trap(SharedStateUnavailableError))
        self._maybe_resync()  # Redis slow, or connections coming back
        return None

    def _maybe_resync(self) -> None:
        if self._proto is None or self._sub is None or self._resyncing is not None:
            return
        if not self.running:
            return
        self._resyncing = Deferred.fromCoroutine(self._resync())

        def done(_):
            self._resyncing = None

        self._resyncing.addBoth(done)

    async def _resync(self) -> None:
        """Write back what was decided locally, read what others decided."""
        try:
            for (egress, scope), (until, status, cause) in self._book.in_force().items():
                await self._publish_ban(egress, scope, until, status, cause)
            spent = self._fallback.take()
            while spent:
                (egress, pool), (window, _base, _mine, reported, unsent) = \
                    next(iter(spent.items()))
                try:
                    reply = await self._script(
                        "reconcile", [self.keys.window(egress, pool, window)],
                        [self._window_ttl_ms,
                         *self._window_args(egress, pool, window, reported), unsent],
                        self.background_deadline)
                    self._fallback.learn(egress, pool, window, reply)
                except SharedStateUnavailableError:
                    for key, entry in spent.items():  # still to be written next time
                        self._fallback.local.setdefault(key, entry)
                    raise
                del spent[(egress, pool)]
            await self._read_bans()
            await self._heartbeat()
        except SharedStateUnavailableError as e:
            self._degrade(str(e))
            return
        if self._proto is not None and self._sub is not None:
            self._set_status("ok", "")
            waiters, self._ready_waiters = self._ready_waiters, []
            for d in waiters:
                d.callback(None)

    # -- reporting ------------------------------------------------------------------
    def health(self) -> dict:
        return {"status": self.status, "store": str(self.url),
                "instance": self.instance_id, "live_instances": self._live,
                "bans": len(self._book.in_force()),
                "last_error": self.last_error if self.status != "ok" else ""}


def _describe(e: BaseException | None) -> str:
    text = str(e) or type(e).__name__
    return text[:200]
