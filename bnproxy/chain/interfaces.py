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
    is started and stopped with the proxy (after the drain, on shutdown). One
    that has a ``health()`` method returning a JSON-able mapping is shown in
    ``/health`` under its name; one with ``collect_metrics()`` yielding
    ``prometheus_client`` metric families is exported on ``/metrics``.

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

    def handle(request, next):
        """Answer ``request``.

        Returns a ``Deferred[ProxyResponse]``; a coroutine or a plain
        ``ProxyResponse`` is accepted and wrapped.
        """


class IMiddlewareFactory(IPlugin):
    """Builds a middleware from its settings. Discovered as a plugin.

    Register an instance either under the ``bnproxy.middleware`` entry-point
    group of your distribution, or as a module-level object in a module
    dropped into a ``bnproxy/plugins/`` directory on ``sys.path``.
    """

    name = Attribute("Unique name used in --middleware and [middleware.NAME] (str).")
    description = Attribute("One line shown in --help-middleware (str).")

    def build(settings, context):
        """Return an ``IMiddleware`` provider.

        ``settings`` is a mapping from the ``[middleware.NAME]`` table of the
        config file or from ``--middleware NAME:key=value,...`` (values may
        then be strings). Raise ``bnproxy.config.reader.ConfigError`` for invalid
        settings: start-up stops with that message. ``context`` is a
        ``bnproxy.chain.context.MiddlewareContext``.
        """
