"""Composing middlewares into one callable."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from bnproxy.binance.errors import UNKNOWN
from bnproxy.interfaces import IMiddleware
from bnproxy.messages import ProxyRequest, ProxyResponse, local_error

Handler = Callable[[ProxyRequest], "Deferred[ProxyResponse]"]

_log = Logger(namespace="bnproxy.chain")


def as_deferred(result: object) -> Deferred:
    """A Deferred from a Deferred, a coroutine or a plain value."""
    if isinstance(result, Deferred):
        return result
    if inspect.iscoroutine(result):
        return Deferred.fromCoroutine(result)
    return succeed(result)


def _internal_error(name: str, request: ProxyRequest, failure: Failure) -> ProxyResponse:
    _log.failure("middleware {name} failed on {method} {market}{path}", failure,
                 name=name, method=request.method, market=request.market, path=request.path)
    return local_error(500, UNKNOWN, f"bnproxy: internal error in middleware {name}",
                       detail=f"error:{name}")


def _wrap(middleware: IMiddleware, nxt: Handler) -> Handler:
    name = middleware.name
    handle = middleware.handle

    def call(request: ProxyRequest) -> Deferred:
        try:
            d = as_deferred(handle(request, nxt))
        except Exception:
            return succeed(_internal_error(name, request, Failure()))

        def check(result: object) -> object:
            if isinstance(result, ProxyResponse):
                return result
            return _internal_error(name, request, Failure(TypeError(
                f"{name}.handle returned {type(result).__name__}, not ProxyResponse")))

        def failed(f: Failure) -> object:
            if f.check(CancelledError):
                return f
            return _internal_error(name, request, f)

        return d.addCallbacks(check, failed)

    return call


def compose(middlewares: Sequence[IMiddleware], terminal: Handler) -> Handler:
    """One callable: ``middlewares[0]`` first, ``terminal`` last."""
    handler = terminal
    for middleware in reversed(middlewares):
        handler = _wrap(middleware, handler)
    return handler
