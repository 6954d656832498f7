"""``RedisSharedState``: the ``ISharedState`` every instance naming the same
Redis shares (``--shared-state redis://…``), on txredisapi. One module a
job: ``connection`` (the connections, deadlines, status), ``leases`` (the
budget), ``bans``, ``ledger``, ``heartbeats``; this one composes them,
starts and stops them, and resynchronises after an outage.

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
missed the deadline is decided locally; when its late answer comes, a weight
Redis counted for a request refused here is released, one granted here that
Redis refused is written back. A counter Redis lost (restarted empty) is
re-seeded by each instance's next call from what it had seen and from its own
use of the window (their sum is the fleet's use once all have called); until
as many instances as the caller counts live have called, it grants each no
more than ``budget / live`` in all, its own use counted, so a view that lags
what the others were granted cannot let the fleet pass the budget (a balanced
fleet, as in degraded mode). The live count does not drop on a heartbeat set
Redis lost: a lower count is believed once it has lasted ``heartbeat_ttl``.
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

import os
import socket
import uuid
from collections.abc import Iterator
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from bnproxy.binance.limits import WEIGHT_WINDOW
from bnproxy.chain.interfaces import IHealthReporter, IMetricsSource, ISharedState
from bnproxy.cluster import validate
from bnproxy.cluster.bans import BanCallback, Bans
from bnproxy.cluster.connection import Connection
from bnproxy.cluster.errors import SharedStateUnavailableError
from bnproxy.cluster.heartbeats import Heartbeats
from bnproxy.cluster.keys import Keys
from bnproxy.cluster.leases import Budget
from bnproxy.cluster.ledger import Ledger
from bnproxy.cluster.url import RedisURL, parse_redis_url

_log = Logger(namespace="bnproxy.cluster")


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
        self.keys = Keys(prefix)
        self.instance_id = instance_id or (
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")
        self._heartbeat_interval = heartbeat_interval
        self._ledger_interval = ledger_interval
        rejected = validate.Rejected()
        self.conn = Connection(
            reactor, self.url, self.keys.ban_channel, deadline=deadline,
            background_deadline=background_deadline, connect_timeout=connect_timeout,
            reconnect_max=reconnect_max, tls_ca_file=tls_ca_file,
            on_message=lambda raw: self._bans.message(raw), on_ready=self._maybe_resync,
            live=self.live_instances)
        self._heartbeats = Heartbeats(self.conn, self.keys, self.instance_id, heartbeat_ttl,
                                      min_instances, reactor)
        self._budget = Budget(self.conn, self.keys, self.instance_id,
                              int(window * 2 * 1000), self.live_instances)
        self._bans = Bans(reactor, self.conn, self.keys, self.instance_id, rejected)
        self._ledger = Ledger(self.conn, self.keys, rejected)
        self._resyncing: Deferred | None = None
        self._loops: list[task.LoopingCall] = []
        self._ready_waiters: list[Deferred] = []

    # -- settings and state, as read by callers and tests ------------------------------------
    @property
    def deadline(self) -> float:
        return self.conn.deadline

    @property
    def background_deadline(self) -> float:
        return self.conn.background_deadline

    @property
    def decided(self) -> bool:
        """True once the first connection succeeded (the fleet's bans read)
        or ``connect_timeout`` passed without one."""
        return self.conn.decided

    @property
    def status(self) -> str:
        return self.conn.status

    @property
    def last_error(self) -> str:
        return self.conn.last_error

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> Deferred:
        """Connect; fires (with None) once ``ok`` or after
        ``connect_timeout``, whichever is first. Never fails: without Redis
        the state starts ``degraded``."""
        self.running = 1
        self.conn.start()
        for interval, fn in ((self._heartbeat_interval, self._tick),
                             (self._ledger_interval, self._ledger.flush)):
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
                self.conn.give_up()
                d.callback(None)

        timer = self._clock.callLater(self.conn.connect_timeout, give_up)
        d.addBoth(lambda r: (timer.cancel() if timer.active() else None, r)[1])
        return d

    @defer.inlineCallbacks
    def stop(self):
        """Write the ledger, leave the heartbeat set, disconnect (each step
        within ``background_deadline``). Safe while a connection is being
        made."""
        self.running = False
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        if self.conn.ok():
            try:
                yield self._ledger.flush()
                yield self._heartbeats.leave()
            except SharedStateUnavailableError:
                pass
        yield self.conn.stop()
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.callback(None)

    def startService(self) -> None:
        self.start()

    def stopService(self) -> Deferred:
        return self.stop()

    # -- ISharedState -------------------------------------------------------------------
    def reserve(self, egress: str, pool: str, weight: int, budget: int,
                window_start: int) -> Deferred:
        return self._budget.reserve(egress, pool, weight, budget, window_start)

    def reconcile(self, egress: str, pool: str, window_start: int, used: int) -> Deferred:
        return self._budget.reconcile(egress, pool, window_start, used)

    def used(self, egress: str, pool: str, window_start: int) -> Deferred:
        return self._budget.used(egress, pool, window_start)

    def set_ban(self, egress: str, scope: str, until: float, status: int,
                cause: str) -> Deferred:
        return self._bans.set_ban(egress, scope, until, status, cause)

    def bans(self) -> Deferred:
        return self._bans.bans()

    def banned_until(self, egress: str, scope: str) -> float:
        return self._bans.book.until(egress, scope)

    def on_ban(self, callback: BanCallback) -> None:
        self._bans.book.on_ban(callback)

    def add(self, client: str, weight: int, requests: int, rejected: int) -> None:
        self._ledger.add(client, weight, requests, rejected)

    def clients(self) -> Deferred:
        return self._ledger.clients()

    def live_instances(self) -> int:
        return self._heartbeats.live

    # -- heartbeats, probes, resynchronisation -----------------------------------------
    def _tick(self) -> Deferred | None:
        if self.conn.ok():
            return self._heartbeats.beat().addErrback(
                lambda f: f.trap(SharedStateUnavailableError))
        self._maybe_resync()  # Redis slow, or connections coming back
        return None

    def _maybe_resync(self) -> None:
        if not self.running or not self.conn.up() or self._resyncing is not None:
            return
        self._resyncing = Deferred.fromCoroutine(self._resync())

        def done(_):
            self._resyncing = None

        self._resyncing.addBoth(done)

    async def _resync(self) -> None:
        """Write back what was decided locally, read what others decided."""
        try:
            await self._bans.write_back()
            await self._budget.write_back()
            await self._bans.read()
            await self._heartbeats.beat()
        except SharedStateUnavailableError as e:
            self.conn.degrade(str(e))
            return
        if self.running and self.conn.up():
            self.conn.set_status("ok")
            waiters, self._ready_waiters = self._ready_waiters, []
            for d in waiters:
                d.callback(None)

    # -- reporting ------------------------------------------------------------------
    def health(self) -> dict:
        return {"status": self.status, "store": str(self.url),
                "instance": self.instance_id, "live_instances": self.live_instances(),
                "bans": len(self._bans.book.in_force()),
                "last_error": self.last_error if self.status != "ok" else ""}

    def collect_metrics(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily
        ok = GaugeMetricFamily("bnproxy_shared_state_ok",
                               "1 while the shared state (Redis) answers, 0 while degraded.")
        ok.add_metric([], 1 if self.status == "ok" else 0)
        live = GaugeMetricFamily("bnproxy_live_instances",
                                 "Instances heartbeating in the shared state, as last seen.")
        live.add_metric([], self.live_instances())
        yield from (ok, live)
