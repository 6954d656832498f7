"""The plugin contract. These docstrings are the documentation middleware
authors read: keep them true."""

from __future__ import annotations

from twisted.plugin import IPlugin
from zope.interface import Attribute, Interface


class IMiddleware(Interface):
    """One filter in the request chain ("Your Server as a Function").

    A middleware receives a frozen ``bnproxy.chain.messages.ProxyRequest`` and
    ``next``, the rest of the chain as one callable taking a request and
    returning a ``Deferred`` firing with a ``ProxyResponse``. It may answer
    locally without calling ``next``, call ``next`` with the request or an
    ``attrs.evolve``d copy, and observe or transform what ``next`` returns.

    Failure: an exception raised by ``handle`` (or a failed Deferred) becomes
    a 500 in Binance's error shape, logged with the middleware's name; the
    chain never skips a middleware. ``CancelledError`` is not an error: the
    Deferred is cancelled when the bot disconnects, and a middleware that
    waits (a queue, a coalesced fetch) must stop waiting then.

    A middleware that also provides ``twisted.application.service.IService``
    is started and stopped with the proxy (after the drain, on shutdown).
    Capabilities are declared by interface (``@implementer``), never guessed
    from attribute names: ``IHealthReporter`` (a section of ``/health``),
    ``IMetricsSource`` (families on ``/metrics``), ``IReadinessCheck``
    (reasons ``/ready`` is 503), ``IWeightGovernor`` (the weight budget).

    Optional ``plain_next = True``: ``next`` may then return a
    ``ProxyResponse`` itself when the rest of the chain answered at once (a
    cache hit, a stream, a local error) instead of a Deferred, and ``handle``
    may too; ``bnproxy.chain.compose.then(answer, f, *args)`` applies ``f`` to either.
    The built-in middlewares declare it, so that a hit makes no Deferred.

    Requests the proxy makes itself (stream snapshots, backfills, readiness
    pings) carry the ``bnproxy.chain.messages.INTERNAL`` header, which no bot can
    send (it is stripped at the door); they go through the whole chain.
    """

    name = Attribute("The name it was configured under (str).")
    # ``plain_next`` (bool, optional, default False) is declared in the
    # docstring above rather than as an Attribute: verifyObject would demand it.

    def handle(request, next):
        """Answer ``request``.

        Returns a ``Deferred[ProxyResponse]``; a coroutine or a plain
        ``ProxyResponse`` is accepted and wrapped.
        """


class IFastPathSafe(Interface):
    """A middleware's declaration that hits may be answered without its
    ``handle`` (the fast path, ``bnproxy.server.fastpath``).

    The proxy answers a plain bot ``GET`` (no body, nothing but safe
    headers, already routed) before the chain when every middleware it
    meets on the way to the answer provides this interface: it calls
    ``fast_handle`` of each, in chain order, instead of ``handle``.
    ``fast_handle(request, next)`` gets the same ``ProxyRequest`` and
    ``next``, the rest of the fast path, and returns one of:

    - a ``ProxyResponse``: the answer, given at once from the middleware's
      own state (a cache or stream hit), with every effect ``handle`` has
      when it gives that same answer (counters, touches);
    - what ``next(request)`` returned, after doing what ``handle`` does
      around a plain answer from ``next`` (an access line, a ledger entry);
      ``next`` returns a ``ProxyResponse`` or None;
    - ``None``: the fast path cannot answer this request; nothing was done
      (no counter moved, no state changed), and the request goes through the
      whole chain, this middleware's ``handle`` included, as if the fast
      path had never seen it.

    So ``handle`` and ``fast_handle`` must give the same answer and the same
    effects whenever ``fast_handle`` does not return None; a middleware that
    would refuse, transform, wait or call upstream returns None. A
    middleware that merely passes requests on writes
    ``def fast_handle(self, request, next): return next(request)``.

    A middleware that does not provide this interface sees every request
    that reaches it, as before: the fast path stops there and hands the
    request to the chain (middlewares placed after the one that answers a
    hit never see it, on either path). ``fast_handle`` is called in the
    reactor thread and must not raise; if it does, the request goes through
    the chain.
    """

    def fast_handle(request, next):
        """The answer without the chain: a ``ProxyResponse``, or None (see
        the interface)."""


class IMiddlewareFactory(IPlugin):
    """Builds a middleware from its settings. Discovered as a plugin.

    Register an instance either under the ``bnproxy.middleware`` entry-point
    group of your distribution, or as a module-level object in a module
    dropped into a ``bnproxy/plugins/`` directory on ``sys.path``.

    Optional ``options``: a sequence of ``bnproxy.chain.options.Option``
    declaring every setting (name, kind, default, help, bounds). When it is
    there, the settings are checked against it before ``build`` (unknown keys
    and bad values stop start-up with one line) and ``build`` gets a dict with
    every option's value; ``--help-middleware NAME`` lists them and the
    example configuration file shows them. Without it, ``build`` gets the raw
    settings and must check them itself (``bnproxy.plugin.SettingsReader``).
    """

    name = Attribute("Unique name used in --middleware and [middleware.NAME] (str).")
    description = Attribute("One line shown in --help-middleware (str).")

    def build(settings, context):
        """Return an ``IMiddleware`` provider.

        ``settings``: with ``options`` declared, a dict of every option's
        checked value; otherwise the mapping from the ``[middleware.NAME]``
        table of the config file or from ``--middleware NAME:key=value,...``
        (values may then be strings). Raise ``bnproxy.plugin.ConfigError`` for
        invalid settings: start-up stops with that message. ``context`` is a
        ``bnproxy.plugin.MiddlewareContext``.
        """


class IHealthReporter(Interface):
    """Something with a section in ``/health`` (and the dashboard's state)."""

    def health():
        """A JSON-able mapping describing the current state; shown in
        ``/health`` under ``middleware.<name>``. Called in the reactor thread;
        must be cheap (no I/O)."""


class IMetricsSource(Interface):
    """Something that exports Prometheus metrics on ``/metrics``."""

    def collect_metrics():
        """Yield ``prometheus_client`` metric families (``GaugeMetricFamily``,
        ``CounterMetricFamily``, …), read at scrape time in the reactor thread.
        Label values must be bounded (no per-request or unbounded per-client
        labels)."""


class IReadinessCheck(Interface):
    """Something ``/ready`` asks before saying the proxy can serve."""

    def readiness_problems():
        """A list of short strings, each a reason the proxy cannot serve
        right now (empty: ready). ``degraded`` conditions that still serve
        (shared state unreachable, say) are reported by ``IHealthReporter``,
        not here."""


class IAdmission(Interface):
    """Decides which clients may use the proxy at all (the ``allowlist``
    middleware). A chain without a provider is open to every address that
    reaches the port: start-up warns and ``/health`` says so."""

    def admits(client):
        """Whether ``client`` (a normalised address, or ``"unix"`` for a
        unix-socket peer) may send requests through the proxy."""


class IProblemReporter(Interface):
    """Something whose trouble belongs in the proxy's one verdict (``ok``,
    ``degraded``, ``not ready``, ``banned``; ``bnproxy.verdict``), shown by
    ``/ready``, ``/health``, the dashboard's banner and ``status``."""

    def health_problems():
        """A list of ``(key, severity, text)`` tuples, one per problem now
        (empty: none). ``key`` is stable while the problem lasts (the verdict
        tells since when from it: ``"streams-stale:spot"``); ``severity`` is
        ``"degraded"`` (serving, less well), ``"banned"`` (Binance refuses;
        bots are answered locally) or ``"not ready"`` (cannot serve);
        ``text`` a short sentence without secrets. A provider's problems
        replace its ``IReadinessCheck`` reasons in the verdict. Cheap, no I/O."""


class IBotLedger(Interface):
    """Every request of every bot, counted where it enters the chain (the
    ``logger`` middleware provides it); the dashboard's Bots table."""

    def bots():
        """A list of rows, busiest first: ``{"client": name (as the access
        log names the bot), "requests", "asked" (weight of its answered
        requests, predicted), "spent" (weight spent upstream on its behalf),
        "answered": {"stream", "cache", "upstream", "local"}, "refused":
        {"budget", "ban", "allowlist", "bad_request", "failed"},
        "last_minute": {...}, "last_15m": {...} (the same counts over those
        windows), "last_seen"}``. Cheap enough to call once a second."""

    def name_of(request):
        """The bot's name for a ``ProxyRequest``, as the access log and
        ``bots()`` give it (the client header, else the key's salted hash,
        else the address)."""


class IDashboardSection(Interface):
    """A section of the dashboard's state document (``/dashboard/state``),
    read once a second. The built-in ones: ``streams`` (the streams
    middleware), ``cache`` (the cache middleware)."""

    def dashboard_section():
        """``(key, value)``: the document's member ``key`` (``"streams"``,
        ``"cache"``, or a plugin's own name) and its JSON-able value. Cheap,
        no I/O."""


class IWeightGovernor(Interface):
    """The fleet's request-weight budget, per (egress address, weight pool).

    Provided by the ``ratelimit`` middleware (in-process, or backed by shared
    state). Other middlewares find it with ``context.find(IWeightGovernor)``
    (when handling: it may be built after them) and use it to size or defer
    their own requests (snapshots, backfills, refreshes).
    """

    def pool_of(request):
        """The weight pool name a ``ProxyRequest`` is charged to (``spot``,
        ``sapi:/sapi/v1/…`` per IP-limited /sapi endpoint, ``usdm``, …)."""

    def reserve(pool, weight, egress=None):
        """Take ``weight`` from ``pool``'s budget for this minute, now, if it
        fits and no ban is in force; return True, else False (nothing taken).
        ``egress`` None: any address with headroom."""

    def usage():
        """``{pool: {"used": int, "budget": int | None, "limit": int | None,
        "banned_for": float, "egress": str}}`` for every known pool, this
        minute."""

    def banned_for(pool, egress=None):
        """Seconds until a Binance ban on ``pool`` ends (0.0: none)."""

    def set_client_share(client, share):
        """Cap ``client`` at ``share`` (0 < share <= 1) of each pool's budget
        per minute; None removes the cap."""


class IAccessLog(Interface):
    """Where the access log's lines go (``MiddlewareContext.access_log``).

    Provided by ``bnproxy.server.accesslog.AccessLogWriter``: buffered in
    memory, written out at least once a second, when 64 KiB are waiting, and
    at shutdown. A middleware formats a line and hands it over; it never
    writes or flushes a file itself.
    """

    def write(line):
        """Queue ``line`` (bytes, one complete line ending in ``\\n``).
        Called in the reactor thread for every answer: must be cheap (no
        system call per line)."""


class ISharedState(Interface):
    """The weight budget, bans, client ledger and heartbeats shared by every
    instance (process, replica, host) that names the same store.

    Implemented by ``bnproxy.cluster.redis_state.RedisSharedState`` (Redis,
    ``--shared-state redis://…``). Without a store there is nothing to share:
    the rate limiter keeps its own in-process state.

    Keys: ``egress`` is the label of the source address requests leave from
    (``"default"`` when none is configured: instances behind one NAT address
    must use the same label); ``pool`` a weight pool name; ``window_start`` the
    start of the one-minute window in epoch seconds (an int: the caller's
    clock decides windows). Nothing secret is ever passed in: client labels
    are addresses or operator labels, never API keys (hash them with
    ``bnproxy.cluster.keys.hashed_label`` first).

    Deadlines: every method returning a Deferred fires within the store's
    deadline (50 ms by default). When the store does not answer in time or is
    unreachable, the state turns ``degraded`` and ``reserve``, ``reconcile``,
    ``used``, ``set_ban`` and ``bans`` answer from the local fallback at once
    (no bot request waits on the store longer than the deadline; while degraded
    none waits at all). ``clients()`` has no local answer for the fleet and
    fails with ``bnproxy.cluster.errors.SharedStateUnavailableError`` (its subclass
    ``SharedStateTimeoutError`` when the deadline passed).

    Fallback: while degraded, each (egress, pool) gets a local budget of
    ``(budget - fleet use last seen this window) / live instances last
    seen``, and never more than ``budget / live instances`` of the window in
    all (what it spent before counts); every ban known is kept; when the
    store answers again, local bans are written back (the later ``until``
    wins), remote bans re-read, and the state is ``ok`` again. Each change
    of ``status`` is logged once.
    """

    status = Attribute('"ok" or "degraded" (str); read it, never cache it.')

    def reserve(egress, pool, weight, budget, window_start):
        """Atomically add ``weight`` to the window's counter if
        ``used + weight <= budget``. Deferred[bool]: True if taken (the
        counter grew by ``weight``), False if it would not fit (unchanged)."""

    def reconcile(egress, pool, window_start, used):
        """Binance said ``used`` (``X-MBX-USED-WEIGHT-1M``, a /sapi header):
        the window's counter becomes ``max(counter, used)``. Deferred[None]."""

    def used(egress, pool, window_start):
        """Deferred[int]: the window's counter (0 when nothing was taken)."""

    def set_ban(egress, scope, until, status, cause):
        """Record a Binance ban on ``scope`` (a pool, or a host for a 418)
        from ``egress`` until epoch second ``until`` (HTTP ``status`` 418 or
        429, a short ``cause`` without secrets). The later ``until`` wins. Every
        instance hears of it (``on_ban``) within 50 ms. Deferred[None]."""

    def bans():
        """Deferred[dict]: ``{(egress, scope): (until, status, cause)}`` for
        every ban in force (read at start and after a reconnection; merged with
        the bans this instance knows)."""

    def banned_until(egress, scope):
        """Epoch second the known ban on ``(egress, scope)`` ends (0.0: none);
        synchronous, from the local copy kept current by notifications."""

    def on_ban(callback):
        """Call ``callback(egress, scope, until, status, cause)`` whenever a
        ban becomes known here or is extended (set here or by another
        instance)."""

    def add(client, weight, requests, rejected):
        """Add to ``client``'s counters in the fleet's ledger. Cheap and
        synchronous: batched and written about once a second."""

    def clients():
        """Deferred[dict]: ``{client: {"weight": int, "requests": int,
        "rejected": int}}`` for the whole fleet (this instance's unwritten
        additions included)."""

    def live_instances():
        """The number of instances that heartbeat recently (at least 1: this
        one), as last seen; synchronous."""

    def health():
        """A JSON-able mapping for ``/health``: status, live instances, the
        store's redacted address, last error; no I/O."""


class IStreamHub(Interface):
    """The market's upstream streams, for the bots' websocket gateway.

    Provided by the ``streams`` middleware; the server finds it by interface
    among the built middlewares. One upstream subscription per stream
    (shared with the REST responders) however many listeners; released a
    while after the last listener leaves (the REST streams' idle rule);
    streams of symbols the market's exchangeInfo does not list are never
    subscribed upstream (their listeners just receive nothing, as on Binance).
    """

    def stream_markets():
        """The market names (``spot``, ``usdm``, ``coinm``) whose streams can
        be relayed."""

    def subscribe(market, stream, listener, lost=None):
        """Start relaying ``stream`` of ``market`` to ``listener``, a callable
        taking each upstream frame as Binance's combined-stream bytes
        (``{"stream":…,"data":…}``, exactly as received). ``lost()``, if
        given, is called when the upstream connection carrying the stream
        dropped: frames were missed (the reconnect resubscribes). Returns a
        handle with ``close()`` to stop. Called in the reactor thread."""

    def upstream_view():
        """What the hub holds upstream, as the dashboard's websocket panel
        shows it: ``{"frames": n, "bytes": n`` (upstream frames relayed to
        listeners since start, and their bytes)``, "markets": {market:
        {"streams": subscribed upstream (for bots and REST), "bot_streams":
        those with a listener, "stale": how many of those are stale,
        "stale_streams": [up to 5 of their names], "egress": [{"egress":
        address or None (the host's default), "connections": open stream
        connections, "control_messages": SUBSCRIBE/UNSUBSCRIBE sent since
        start}]}}}``. Stream names only (public; never a listenKey). Cheap,
        no I/O: called once a second."""

    def after_read(callback):
        """Call ``callback()`` once each read from an upstream connection
        has been relayed (a listener that batches what it was given writes
        it then, not at the end of the reactor turn). Reactor thread."""


class IStreamGateway(Interface):
    """The bots' websocket gateway (``bnproxy.server.websocket.Gateway``) as
    operators see it; the dashboard's websocket panel reads it once a
    second (the feed finds it by this interface)."""

    def gateway_view(limit, names):
        """``{"connections": open bot connections, "clients": distinct bots,
        "subscriptions": streams subscribed (one per connection and stream),
        "streams": distinct streams relayed, "frames": frames written to bots
        since start, "control_messages": control messages bots sent,
        "slow_closes", "rate_closes", "upstream_closes": bots closed for a
        full send buffer, Binance's message rate, a stream lost upstream,
        "refused": upgrades refused, "bots": [rows]}``. One row per bot,
        named as the access log and ``IBotLedger.name_of`` name the request
        that opened it (never an API key or listenKey): ``{"client",
        "connections", "markets": [...], "subscriptions", "distinct"
        (distinct streams over its connections; None when not counted: too
        many to count cheaply), "streams": [at most ``names`` of them],
        "since": when its oldest connection opened}``; the ``limit`` with the
        most subscriptions. Cheap, no I/O: one pass over the connections."""


class PaceFullError(Exception):
    """An ``IUserDataUpstream`` endpoint's ``connect`` failed at once: no new
    upstream connection fits this minute's pace. ``args[0]``: seconds until
    the next minute."""


class IUserDataUpstream(Interface):
    """Where the bots' user-data streams (``/ws/<listenKey>``, USD-M's
    ``/private/…``) connect upstream: the gateway relays each one to its own
    upstream connection (``bnproxy.server.userdata``), never shared.

    Provided by the ``streams`` middleware (the market's stream base, egress
    addresses, TLS trust and new-connection pace)."""

    def user_stream(market, target):
        """``(endpoint, url)`` for one new upstream connection to ``target``
        (path and query under ``market``'s stream base): the endpoint's
        ``connect`` takes a slot of the per-egress new-connection pace (a
        share that leaves room for the market data's own reconnects) or fails
        at once with ``PaceFullError``. None when ``market`` has no stream upstream."""
