"""The dashboard's state feed: what the proxy is doing, once a second.

``DashboardFeed`` samples what the proxy already exposes, found by interface
(never by the shape of a ``health()``): the ``IWeightGovernor`` (pools, and
its ``IHealthReporter`` section's bans), the ``IBotLedger`` (bots), each
``IDashboardSection`` (streams, cache, a plugin's own), the bots' websocket
gateway (``IStreamGateway``) and what the streams hold upstream for it
(``IStreamHub.upstream_view``), the verdict, the
answers counter and the upstream latency histogram of
``bnproxy.server.metrics.Metrics``, and answers with a status of
400 or more (``observer(answered)`` wraps the forwarding resource's
``answered`` callback; a successful answer costs one comparison).

Once a second (``tick``) it takes one sample, keeps the last 15 minutes of
them in a ring of plain numbers, and encodes the live document **once** into
bytes shared by every open page (``event`` for ``/dashboard/events``); the
full document with the history (``state_bytes()``, ``/dashboard/state``) is
encoded at most once a second, when asked for. Nothing here runs per
request except the error check.

The state document (``/dashboard/state``; ``/dashboard/events`` sends the
same document without ``history`` and with ``sample``, the newest history
point, as a ``state`` event when a page connects, then once a second a
``patch`` event: the JSON merge patch (RFC 7386) from the previous second's
document, ``null`` for a member that went)::

    {
      "schema": 1,
      "status": "ok",                # the proxy's verdict (bnproxy.verdict): ok,
                                     # degraded, banned or not ready, as /health
      "problems": ["…"],             # its reasons, as sentences
      "issues": [{"name": "streams-stale:spot", "severity": "degraded",
                  "text": "…", "since": 1764299990.0}],
      "time": 1764300000.0,          # the proxy's clock (Unix seconds)
      "version": "0.x", "uptime_seconds": 12.0,
      "pools": [{"pool": "spot", "egress": null, "used": 40, "budget": 5400,
                 "limit": 6000, "queued": 0, "banned_for": 0.0}],
      "bans": [{"pool": "spot", "egress": null, "seconds_left": 88.2,
                "until": 1764300088.2, "status": 418, "cause": "…"}],
      "weight_15m": {"asked": {"spot": 1200}, "spent": {"spot": 80},
                     "refused": {"spot": 30},       # refused here or failed: not saved
                     "saving_percent": {"spot": 93.3},   # 1 - spent / asked (answered)
                     "total": {"asked": 1200, "spent": 80, "refused": 30,
                               "saving_percent": 93.3}},
      "clients": [{"client": "bot-a",   # named as in the access log
                   "requests": 10, "asked": 20, "spent": 4,   # since start
                   "answered": {"stream": 6, "cache": 2, "upstream": 2, "local": 0},
                   "refused": {"budget": 0, "ban": 0, "allowlist": 0,
                               "bad_request": 0, "failed": 0},
                   "last_minute": {…the same counts…}, "last_15m": {…},
                   "last_seen": 1764299990.0}],   # IBotLedger.bots(), busiest first
      "answers": {"total": {"cache": 5, …}, "last_15m": {"cache": 5, …}},
      "hit_ratio_15m": {"cache": 0.8, "stream": 0.1},   # share of answers
      "cache": {"entries": 3, "bytes": 9000},  # the cache's IDashboardSection
      "streams": {"served": 4, "markets": {"spot": {"connections": 1, "open": 1,
                  "streams": 3, "stale": 0, "reconnects": 0, "messages_per_second": 2.0}}},
      "latency": {"p50": 0.004, "p99": 0.02},   # upstream, seconds, last 10 s
      "websocket": {"connections": 3, "clients": 2, "subscriptions": 5, "streams": 5,
                    "frames": 900, "control_messages": 1, "slow_closes": 0,
                    "rate_closes": 0, "upstream_closes": 0, "refused": 0,
                    "bots": [{"client": "bot-a", "connections": 2,
                              "markets": ["spot", "usdm"], "subscriptions": 4,
                              "distinct": 4, "streams": ["spot:btcusdt@trade", …],
                              "since": 1764299000.0}],   # IStreamGateway, at most 50
                                                          # (events: 20)
                    "relayed_frames": 300, "relayed_bytes": 60000,
                    "upstream": {"spot": {"streams": 4, "bot_streams": 3, "stale": 0,
                                          "stale_streams": [],
                                          "egress": [{"egress": None, "connections": 1,
                                                      "control_messages": 2}]}}},
                                     # IStreamHub.upstream_view(); null: no gateway
      "errors": [{"time": …, "client": "127.0.0.1", "method": "GET",
                  "market": "spot", "path": "/api/v3/depth", "query": "symbol=X",
                  "status": 418, "source": "local", "msg": "…"}],   # newest first
      "instances": [...],            # any other IDashboardSection's (key, value)
      "history": {"time": [t0, t1, …],               # one a second, up to 15 minutes
                  "series": {"used.spot": [...], "asked.spot": [...],
                             "spent.spot": [...], "latency.p50": [...],
                             "latency.p99": [...], "answers.cache": [...], …}}
    }

History series: ``used.<pool>`` (``used.<pool>@<egress>`` when the governor
reports an egress address): weight used this minute; ``asked.<market>``:
weight the bots' answered requests would have cost upstream, per second
(``bnproxy_weight_asked_total``); ``refused.<market>``: the weight of those
refused here or failed (``bnproxy_weight_refused_total``);
``spent.<market>``: weight the governor counted upstream that second
(bots' and the proxy's own requests; ``sapi`` counts under ``spot``);
``latency.p50``/``latency.p99``: upstream latency over the last 10 s from
histogram bucket deltas (null: no upstream answer);
``answers.<source>``: answers per second by source (stream, cache,
upstream, local); ``ws.delivered``/``ws.relayed``: websocket frames a
second written to bots and relayed from upstream (with a gateway). A
value is null where the series did not exist yet.
"""

from __future__ import annotations

import math
import os
import stat
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from twisted.application.service import Service
from twisted.internet import task
from twisted.logger import Logger

from bnproxy import __version__
from bnproxy.binance.limits import BAN_STATUSES
from bnproxy.binance.privacy import redact_query, redact_text, shown_path
from bnproxy.chain.interfaces import (
    IBotLedger,
    IDashboardSection,
    IHealthReporter,
    IStreamGateway,
    IStreamHub,
    IWeightGovernor,
)
from bnproxy.chain.messages import ProxyRequest, ProxyResponse
from bnproxy.dashboard.firstpaint import readable_times
from bnproxy.statefile import write_atomically
from bnproxy.verdict import OK, Verdict

_log = Logger(namespace="bnproxy.dashboard")

HISTORY = 900  # seconds of history: 15 minutes, one sample a second
ERRORS = 20
LATENCY_WINDOW = 10  # seconds of histogram deltas behind each latency point
SOURCES = ("stream", "cache", "upstream", "local")
MAX_CLIENTS = 500  # rows in the per-bot table (the busiest by weight)
EVENT_CLIENTS = 50  # of which the live events carry the first (the page's table)
MAX_REFUSED = 64  # (bot, status, reason, market) kinds of local refusals summed
TEXT = 200  # characters of a path, query or message shown
WS_BOTS = 50  # rows in the websocket bots table (the most subscriptions)
EVENT_WS_BOTS = 20  # of which the live events carry the first (the page's table)
WS_NAMES = 8  # stream names shown per websocket bot
MAX_SAVED = 64 * 1024 * 1024  # bytes of a saved history read at start


def quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float | None:
    """Prometheus' ``histogram_quantile``: ``counts`` are cumulative per
    upper bound (the last bound is +Inf); linear within the bucket."""
    total = counts[-1] if counts else 0
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in zip(bounds, counts):
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


class DashboardFeed(Service):
    """Samples the proxy once a second; see the module docstring.

    ``reporters``: a callable returning the middlewares (or anything) to ask
    for ``health()``; ``metrics``: a ``bnproxy.server.metrics.Metrics``;
    ``endpoints``: the endpoint table (for predicted weights).
    """

    def __init__(self, clock, reporters: Callable[[], Sequence[Any]], metrics,
                 endpoints=None, history: int = HISTORY, interval: float = 1.0,
                 verdict: Callable[[], Verdict] | None = None,
                 state_file: str | None = None) -> None:
        self._clock = clock
        self._state_file = state_file
        self._verdict = verdict
        self._reporters = reporters
        self._metrics = metrics
        self._endpoints = endpoints
        self._interval = interval
        self._started = clock.seconds()
        self._times: deque[float] = deque(maxlen=history)
        self._series: dict[str, deque] = {}
        self._totals: dict[str, float] = {}  # the sum of each series' ring
        self._raw_errors: deque[tuple[float, ProxyRequest, ProxyResponse]] = deque(
            maxlen=ERRORS)
        self._errors: list[dict] = []
        self._errors_seen = 0
        self._upstream_errors = 0  # of which answered upstream (the ring)
        self._refused: dict[tuple[str, int, str, str], list[Any]] = {}
        self._errors_added = 0
        self._answers_prev: dict[str, int] = {}
        self._asked_prev: dict[str, float] = {}
        self._refused_prev: dict[str, int] = {}
        self._spent_prev: dict[str, int] = {}
        self._ws_prev = (0, 0)  # frames delivered to bots, relayed from upstream
        self._buckets: deque[tuple[list[float], list[float]]] = deque(
            maxlen=LATENCY_WINDOW + 1)
        self._listeners: list[Callable[[bytes], None]] = []
        self._governors: list[Any] = []
        self._gateways: list[Any] = []
        self._hubs: list[Any] = []
        self._ledgers: list[Any] = []
        self._closers: dict[Callable, Callable[[], None]] = {}
        self._ban_causes: dict[str, tuple[int, str]] = {}
        self.spent_total: dict[str, int] = {}  # since start, per market
        self._causes_scanned = 0
        self.document: dict[str, Any] = {}
        self.event: bytes = b""  # the whole live document: a page's first event
        self.delta: bytes = b""  # what changed since the last tick: every later one
        self._live: dict[str, Any] | None = None
        self._state: bytes | None = None
        self._loop = task.LoopingCall(self.tick)
        self._loop.clock = clock

    # -- lifecycle ---------------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        if self._state_file is not None:
            self.restore(self._state_file)
        self._loop.start(self._interval, now=True)

    def stopService(self):
        if self._loop.running:
            self._loop.stop()
        for close in list(self._closers.values()):
            close()  # open event streams end: the pages reconnect to the next process
        if self._state_file is not None:
            self.save(self._state_file)
        return super().stopService()

    # -- history across restarts -----------------------------------------------------------
    def save(self, path: str) -> None:
        """Write the history and the ban causes to ``path`` (atomically;
        a failure is logged, never raised: the history is not a promise)."""
        doc = {"schema": 1, "times": list(self._times),
               "series": {k: list(v) for k, v in self._series.items()},
               "ban_causes": {m: list(c) for m, c in self._ban_causes.items()}}
        try:
            write_atomically(path, orjson.dumps(doc))
        except OSError as e:
            _log.warn("dashboard history not saved to {path}: {e}", path=path, e=e)

    def restore(self, path: str) -> None:
        """Read what ``save`` wrote: the points of the last ``HISTORY``
        seconds and the ban causes. Anything unreadable or malformed is
        skipped with one log line (a regular file, read up to a bound)."""
        try:
            if not os.path.exists(path):
                return
            if not stat.S_ISREG(os.stat(path).st_mode):
                raise ValueError("not a regular file")
            with open(path, "rb") as f:
                raw = f.read(MAX_SAVED + 1)
            if len(raw) > MAX_SAVED:
                raise ValueError(f"larger than {MAX_SAVED} bytes")
            doc = orjson.loads(raw)
            times, series, causes = _checked_history(doc)
        except (OSError, ValueError) as e:
            _log.warn("dashboard history in {path} not read: {e}", path=path, e=e)
            return
        now = self._clock.seconds()
        keep = [i for i, t in enumerate(times) if now - self._times.maxlen < t <= now]
        self._times.clear()
        self._times.extend(times[i] for i in keep)
        self._series, self._totals = {}, {}
        for key, values in series.items():
            ring: deque = deque((values[i] for i in keep), maxlen=self._times.maxlen)
            self._series[key] = ring
            self._totals[key] = sum(v for v in ring if v is not None)
        self._ban_causes.update(causes)

    def subscribe(self, listener: Callable[[bytes], None],
                  close: Callable[[], None] | None = None) -> Callable[[], None]:
        """Call ``listener(event_bytes)`` after every tick, and ``close()``
        when the feed stops; returns the unsubscribe function."""
        self._listeners.append(listener)
        if close is not None:
            self._closers[listener] = close

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)
            self._closers.pop(listener, None)

        return unsubscribe

    # -- the one thing on the request path ----------------------------------------------
    def observer(self, answered: Callable[[ProxyRequest | None, ProxyResponse], None] | None
                 ) -> Callable[[ProxyRequest | None, ProxyResponse], None]:
        """``answered`` plus the error ring: pass the result to the
        forwarding resource in place of ``answered`` (request None: no market
        serves the path; counted, not listed)."""
        errors = self._raw_errors
        clock = self._clock

        refused = self._refused

        def observe(request: ProxyRequest | None, response: ProxyResponse) -> None:
            if answered is not None:
                answered(request, response)
            if response.status >= 400 and request is not None:
                self._errors_added += 1
                if response.source != "local":
                    errors.append((clock.seconds(), request, response))
                    self._upstream_errors += 1
                    return
                # refused here (allowlist, budget, ban, bad request): summed per
                # (bot, status, reason), never each kept: any client could
                # otherwise fill the list and set every event's size
                key = (self._name_of(request), response.status, response.detail or "",
                       request.market)
                row = refused.get(key)
                if row is None:
                    if len(refused) >= MAX_REFUSED:
                        del refused[min(refused, key=lambda k: refused[k][1])]
                    row = refused[key] = [0, 0.0, request, response, key[0]]
                row[0] += 1
                row[1] = clock.seconds()
                row[2], row[3] = request, response

        return observe

    # -- sampling ------------------------------------------------------------------------
    def tick(self) -> None:
        try:
            self._tick()
        except Exception:
            _log.failure("dashboard sample failed")

    def _tick(self) -> None:
        now = self._clock.seconds()
        sections = self._sources()
        sample: dict[str, float | None] = {}
        verdict = self._verdict() if self._verdict is not None else Verdict(OK, ())
        doc: dict[str, Any] = {"schema": 1, **verdict.document(), "time": round(now, 3),
                               "version": __version__,
                               "uptime_seconds": round(now - self._started, 3)}
        pools = self._pools()
        doc["pools"] = pools
        for p in pools:
            if p.get("folded"):
                continue
            key = p["pool"] if not p.get("egress") else f"{p['pool']}@{p['egress']}"
            sample[f"used.{key}"] = p["used"]
        self._note_ban_causes()
        doc["bans"] = self._bans(now)
        # answers by source, asked weight per market
        answers_total, asked = self._answers()
        for source in set(answers_total) | set(self._answers_prev) | set(SOURCES):
            sample[f"answers.{source}"] = answers_total.get(source, 0) - \
                self._answers_prev.get(source, 0)
        self._answers_prev = answers_total
        for market, w in asked.items():
            sample[f"asked.{market}"] = w - self._asked_prev.get(market, 0)
        self._asked_prev = asked
        refused = dict(getattr(self._metrics, "refused", {}))
        for market, w in refused.items():
            sample[f"refused.{market}"] = w - self._refused_prev.get(market, 0)
        self._refused_prev = refused
        for market, w in self._spent().items():
            sample[f"spent.{market}"] = w
            self.spent_total[market] = self.spent_total.get(market, 0) + w
        p50, p99 = self._latency()
        sample["latency.p50"], sample["latency.p99"] = p50, p99
        websocket = self._websocket(sample)
        self._record(now, sample)
        doc["weight_15m"] = self._weight_15m()
        doc["answers"] = {"total": answers_total, "last_15m": self._sums("answers.")}
        last = doc["answers"]["last_15m"]
        n = sum(last.values())
        doc["hit_ratio_15m"] = {"cache": round(last.get("cache", 0) / n, 4) if n else None,
                                "stream": round(last.get("stream", 0) / n, 4) if n else None}
        doc["clients"] = self._clients()
        doc["cache"] = sections.pop("cache", None)
        doc["streams"] = sections.pop("streams", None)
        doc["latency"] = {"p50": p50, "p99": p99}
        doc["websocket"] = websocket
        doc["errors"] = self._error_rows()
        for key, value in sections.items():  # a plugin's (or "instances")
            doc.setdefault(key, value)
        self.document = doc
        self._state = None
        live = {**doc, "clients": doc["clients"][:EVENT_CLIENTS], "sample": sample}
        if websocket is not None and len(websocket["bots"]) > EVENT_WS_BOTS:
            live["websocket"] = {**websocket, "bots": websocket["bots"][:EVENT_WS_BOTS]}
        self.event = b"event: state\ndata: " + orjson.dumps(live) + b"\n\n"
        # what changed since the last event (an open page has it): a JSON
        # merge patch (RFC 7386), usually a few hundred bytes
        # (``sample`` whole: it is the new point of every series)
        self.delta = self.event if self._live is None else (
            b"event: patch\ndata: " + orjson.dumps(
                {**merge_patch(self._live, live), "sample": sample}) + b"\n\n")
        self._live = live
        for listener in list(self._listeners):
            try:
                listener(self.delta)
            except Exception:
                _log.failure("dashboard listener failed")

    def state_bytes(self) -> bytes:
        """The full document with the history, encoded at most once a tick."""
        if self._state is None:
            if not self.document:
                self.tick()
            history = {"time": list(self._times),
                       "series": {k: list(v) for k, v in self._series.items()}}
            self._state = orjson.dumps({**self.document, "history": history})
        return self._state

    def _record(self, now: float, sample: Mapping[str, float | None]) -> None:
        """Append one sample; running sums per series (what the ring drops
        is subtracted), so no tick walks the 15 minutes."""
        full = len(self._times) == self._times.maxlen
        self._times.append(round(now, 3))
        n = len(self._times)
        totals = self._totals
        for key, ring in self._series.items():
            if full and ring[0] is not None:
                totals[key] -= ring[0]
            value = sample.get(key)
            ring.append(value)
            if value is not None:
                totals[key] += value
        for key, value in sample.items():
            if key not in self._series:
                ring = self._series[key] = deque([None] * (n - 1), maxlen=self._times.maxlen)
                ring.append(value)
                totals[key] = value or 0

    def _sums(self, prefix: str) -> dict[str, float]:
        return {k[len(prefix):]: round(v, 6) if isinstance(v, float) else v
                for k, v in self._totals.items() if k.startswith(prefix)}

    # -- sources ---------------------------------------------------------------------------
    def _sources(self) -> dict[str, Any]:
        """Find the parts by interface; the sections (``IDashboardSection``)."""
        reporters = self._reporters()
        self._governors = [m for m in reporters if IWeightGovernor.providedBy(m)]
        self._gateways = [m for m in reporters if IStreamGateway.providedBy(m)]
        self._hubs = [m for m in reporters if IStreamHub.providedBy(m)]
        self._ledgers = [m for m in reporters if IBotLedger.providedBy(m)]
        sections: dict[str, Any] = {}
        for m in reporters:
            if IDashboardSection.providedBy(m):
                try:
                    key, value = m.dashboard_section()
                except Exception:
                    _log.failure("dashboard_section() of {name} failed",
                                 name=getattr(m, "name", m))
                    continue
                sections[str(key)] = value
        return sections

    def _pools(self) -> list[dict]:
        """Every pool of the governor (``IWeightGovernor.usage()``), the
        busiest first (banned, then by share of the budget used); the idle
        ``sapi:…`` pools of each egress address folded into one row."""
        rows: list[dict] = []
        for g in self._governors[:1]:
            # keys are "pool" or "pool@egress"; the default egress is shown as none
            rows = [{"pool": name.split("@", 1)[0],
                     "egress": None if u.get("egress") in (None, "default") else u["egress"],
                     "used": u.get("used", 0),
                     "budget": u.get("budget"), "limit": u.get("limit"),
                     "queued": u.get("queued", 0), "banned_for": u.get("banned_for", 0.0)}
                    for name, u in g.usage().items()]
        return pressure_order(fold_idle(rows))

    def _note_ban_causes(self) -> None:
        """Remember the newest upstream 418/429 per market (the error ring
        may lose it under a flood of refusals)."""
        new = min(self._upstream_errors - self._causes_scanned, len(self._raw_errors))
        self._causes_scanned = self._upstream_errors
        for _t, request, response in list(self._raw_errors)[len(self._raw_errors) - new:]:
            if response.status in BAN_STATUSES and response.source == "upstream":
                self._ban_causes[request.market] = (
                    response.status, f"Binance answered {response.status}: {_msg(response)}")

    def _bans(self, now: float) -> list[dict]:
        """One row per ban in force, from the governor's own list (the
        ``bans`` of the ``IWeightGovernor``'s ``IHealthReporter`` section):
        scope ``spot``, ``sapi:/sapi/…`` or ``host:NETLOC`` (a 418: every path
        of that host), shown under the first market it silences, with the
        newest Binance message of that market and status as the cause."""
        for g in self._governors[:1]:
            listed = g.health().get("bans") if IHealthReporter.providedBy(g) else None
            if isinstance(listed, list):
                return [self._ban_row(b, now) for b in listed
                        if float(b.get("seconds_left") or 0) > 0]
        return []

    def _ban_row(self, ban: Mapping[str, Any], now: float) -> dict:
        scope, status = str(ban.get("scope")), ban.get("status")
        left = float(ban.get("seconds_left") or 0.0)
        markets = list(ban.get("markets") or [scope])
        seen = [m for m in markets if (self._ban_causes.get(m) or (None,))[0] == status]
        if seen:  # the market the ban came from first
            markets.remove(seen[0])
            markets.insert(0, seen[0])
        cause = self._ban_causes.get(markets[0])
        text = cause[1] if cause is not None and cause[0] == status else (
            f"Binance answered {status}" if status else "Binance answered 418 or 429")
        if len(markets) > 1 or scope != markets[0] and not scope.startswith("sapi"):
            text += f" (it silences {scope.partition(':')[2] or scope}: " \
                    f"{', '.join(markets)})"
        text = readable_times(text)
        egress = ban.get("egress")
        return {"pool": markets[0], "scope": scope, "markets": markets,
                "egress": None if egress in (None, "default") else egress,
                "seconds_left": round(left, 1), "until": round(now + left, 3),
                "status": status, "cause": text}

    def _answers(self) -> tuple[dict[str, int], dict[str, float]]:
        """Answers by source, and the weight the bots asked per market (what
        ``bnproxy_weight_asked_total`` counts), both since start."""
        by_source: dict[str, int] = {}
        for (_market, _endpoint, _status, source), n in list(self._metrics.answers.items()):
            by_source[source] = by_source.get(source, 0) + n
        return by_source, dict(self._metrics.asked)

    def _spent(self) -> dict[str, int]:
        """Weight spent upstream since the last sample, per market: the rise
        of what ``bnproxy_weight_spent_total`` counts."""
        upstream = getattr(self._metrics, "upstream", None)
        total: dict[str, int] = dict(upstream.weight_spent) if upstream is not None else {}
        delta = {m: n - self._spent_prev.get(m, 0) for m, n in total.items()}
        self._spent_prev = total
        return delta

    def _weight_15m(self) -> dict[str, Any]:
        asked, spent, refused = self._sums("asked."), self._sums("spent."), self._sums("refused.")

        def saving(a: float, s: float) -> float | None:
            return round(100.0 * (a - s) / a, 1) if a > 0 else None

        markets = sorted(set(asked) | set(spent) | set(refused))
        ta, ts = sum(asked.values()), sum(spent.values())
        return {"asked": {m: asked.get(m, 0) for m in markets},
                "spent": {m: spent.get(m, 0) for m in markets},
                "refused": {m: refused.get(m, 0) for m in markets},
                "saving_percent": {m: saving(asked.get(m, 0), spent.get(m, 0))
                                   for m in markets},
                "total": {"asked": ta, "spent": ts, "refused": sum(refused.values()),
                          "saving_percent": saving(ta, ts)}}

    def _latency(self) -> tuple[float | None, float | None]:
        hist = getattr(self._metrics, "upstream_latency", None)
        if hist is None:
            return None, None
        cumulative: dict[float, float] = {}
        for family in hist.collect():
            for s in family.samples:
                if s.name.endswith("_bucket"):
                    le = float(s.labels["le"])
                    cumulative[le] = cumulative.get(le, 0.0) + s.value
        bounds = sorted(cumulative)
        counts = [cumulative[b] for b in bounds]
        self._buckets.append((bounds, counts))
        old_bounds, old = self._buckets[0]
        if old_bounds != bounds:
            old = [0.0] * len(bounds)
        delta = [c - o for c, o in zip(counts, old)]
        if len(self._buckets) == 1:
            delta = [0.0] * len(bounds)
        p50, p99 = quantile(0.5, bounds, delta), quantile(0.99, bounds, delta)
        return (None if p50 is None else round(p50, 6),
                None if p99 is None else round(p99, 6))

    def _name_of(self, request: ProxyRequest) -> str:
        """The bot's name as the access log gives it (``IBotLedger``), else
        its address."""
        if not self._ledgers:
            self._ledgers = [m for m in self._reporters() if IBotLedger.providedBy(m)]
        for ledger in self._ledgers:
            return str(ledger.name_of(request))
        return request.client

    def _clients(self) -> list[dict]:
        """The per-bot ledger (``IBotLedger``: the logger, first in the
        chain, counts every request), busiest first."""
        for ledger in self._ledgers:
            return list(ledger.bots()[:MAX_CLIENTS])
        return []

    def _websocket(self, sample: dict[str, float | None]) -> dict | None:
        """The bots' websocket gateway (``IStreamGateway``) and what the
        streams hold upstream for it (``IStreamHub.upstream_view``); frames
        a second into ``sample``; None without a gateway."""
        view: dict[str, Any] | None = None
        for gateway in self._gateways[:1]:
            try:
                view = dict(gateway.gateway_view(WS_BOTS, WS_NAMES))
            except Exception:
                _log.failure("gateway_view() failed")
        if view is None:
            return None
        upstream: Mapping[str, Any] = {}
        for hub in self._hubs[:1]:
            try:
                upstream = hub.upstream_view()
            except Exception:
                _log.failure("upstream_view() failed")
        view["relayed_frames"] = upstream.get("frames", 0)
        view["relayed_bytes"] = upstream.get("bytes", 0)
        view["upstream"] = upstream.get("markets", {})
        delivered, relayed = view.get("frames", 0), view["relayed_frames"]
        sample["ws.delivered"] = delivered - self._ws_prev[0]
        sample["ws.relayed"] = relayed - self._ws_prev[1]
        self._ws_prev = (delivered, relayed)
        return view

    def _error_rows(self) -> list[dict]:
        """The newest errors: upstream failures each, local refusals summed
        per (bot, status, reason, market) with a ``count``; at most ERRORS
        rows, every text bounded and redacted."""
        if self._errors_added != self._errors_seen:  # formatted only when new ones came
            self._errors_seen = self._errors_added
            rows = [_error_row(t, r, a, 1, self._name_of(r))
                    for t, r, a in reversed(self._raw_errors)]
            rows += [_error_row(t, r, a, n, bot) for n, t, r, a, bot in self._refused.values()]
            rows.sort(key=lambda row: -row["time"])
            self._errors = rows[:ERRORS]
        return self._errors


def _checked_history(doc: Any) -> tuple[list[float], dict[str, list], dict[str, tuple]]:
    """The parts of a saved history, each checked (ValueError otherwise)."""
    if not isinstance(doc, dict) or doc.get("schema") != 1:
        raise ValueError("not a saved dashboard history")
    times, series, causes = doc.get("times"), doc.get("series"), doc.get("ban_causes")
    if not isinstance(times, list) or not all(
            isinstance(t, (int, float)) and math.isfinite(t) for t in times):
        raise ValueError("malformed times")
    if not isinstance(series, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and len(v) == len(times)
            and all(x is None or (isinstance(x, (int, float)) and math.isfinite(x)) for x in v)
            for k, v in series.items()):
        raise ValueError("malformed series")
    if not isinstance(causes, dict) or not all(
            isinstance(m, str) and isinstance(c, list) and len(c) == 2
            and isinstance(c[0], int) and isinstance(c[1], str) for m, c in causes.items()):
        raise ValueError("malformed ban causes")
    return times, series, {m: (c[0], c[1][:TEXT * 2]) for m, c in causes.items()}


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``:
    changed members (objects recursively, lists whole), removed ones null."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key, _MISSING)
        if before is _MISSING or before != value:
            if isinstance(value, dict) and isinstance(before, dict):
                patch[key] = merge_patch(before, value)
            else:
                patch[key] = value
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


_MISSING = object()


def fold_idle(rows: list[dict], family: str = "sapi") -> list[dict]:
    """The pools of ``family`` (``sapi:/sapi/…``, one per IP-limited
    endpoint) with nothing used, queued or banned, as one row per egress
    address: ``{"pool": "sapi", "folded": N, …}``."""
    out: list[dict] = []
    idle: dict[str | None, list[dict]] = {}
    for row in rows:
        if row["pool"].startswith(family + ":") and not (
                row["used"] or row["queued"] or row["banned_for"] > 0):
            idle.setdefault(row["egress"], []).append(row)
        else:
            out.append(row)
    for egress, folded in idle.items():
        if len(folded) == 1:
            out.append(folded[0])
            continue
        out.append({"pool": f"{family} ({len(folded)} idle endpoints)", "egress": egress,
                    "used": 0, "budget": folded[0]["budget"], "limit": folded[0]["limit"],
                    "queued": 0, "banned_for": 0.0, "folded": len(folded)})
    return out


def pressure_order(rows: list[dict]) -> list[dict]:
    """Banned first (longest ban first), then by share of the budget used."""
    def key(row: dict) -> tuple:
        budget = row.get("budget") or 0
        share = row["used"] / budget if budget else 0.0
        return (-(row.get("banned_for") or 0.0 > 0), -(row.get("banned_for") or 0.0),
                -share, -row["used"], row["pool"], row["egress"] or "")
    return sorted(rows, key=key)


def _error_row(t: float, r: ProxyRequest, a: ProxyResponse, count: int, bot: str) -> dict:
    return {"time": round(t, 3), "client": bot[:64], "address": r.client[:64],
            "method": r.method[:16],
            "market": r.market, "path": _cut(shown_path(r)), "query": _cut(redact_query(r)),
            "status": a.status, "source": a.source, "reason": (a.detail or "")[:40],
            "msg": _msg(a), "count": count}


def _cut(text: str) -> str:
    return text if len(text) <= TEXT else text[:TEXT] + "…"


def _msg(response: ProxyResponse) -> str:
    """The ``msg`` of a Binance-shaped error body, else the detail or ''."""
    body = response.body
    if body[:1] == b"{" and len(body) < 4096:
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, dict) and isinstance(value.get("msg"), str):
            return readable_times(redact_text(value["msg"], TEXT))
    return redact_text(response.detail or "", TEXT)
