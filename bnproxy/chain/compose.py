"""Composing middlewares into one callable.

The composed handler returns an *answer*: a ``ProxyResponse`` when the chain
answered at once (a cache hit, a stream, a local error), else a ``Deferred``
firing with one. Only middlewares that declare ``plain_next = True`` see plain
answers from ``next``; every other one gets a Deferred, as the contract in
``bnproxy.chain.interfaces`` says.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Union

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from bnproxy.binance.errors import UNKNOWN
from bnproxy.chain.interfaces import IMiddleware
from bnproxy.chain.messages import ProxyRequest, ProxyResponse, local_error

Answer = Union[ProxyResponse, "Deferred[ProxyResponse]"]
Handler = Callable[[ProxyRequest], Answer]

_log = Logger(namespace="bnproxy.chain.compose")
_NO_KEYWORDS: dict = {}
# What ``addCallback`` puts on the failure side (Twisted's private ``_failthru``)
_FAILTHRU = Deferred().addCallback(lambda r: r)._callbacks[0][1][0]


def as_deferred(result: object) -> Deferred:
    """A Deferred from a Deferred, a coroutine or a plain value."""
    if isinstance(result, Deferred):
        return result
    if inspect.iscoroutine(result):
        return Deferred.fromCoroutine(result)
    return succeed(result)


def then(answer: Answer, f: Callable[..., ProxyResponse], *args: object) -> Answer:
    """``f(response, *args)`` now for a plain answer, or when a Deferred one
    fires: what a ``plain_next`` middleware uses on what ``next`` returns."""
    # Each by its type first: isinstance of a Deferred (an ABC, Awaitable)
    # goes through ABCMeta.__instancecheck__, slow for the common cases.
    if type(answer) is Deferred:
        return answer.addCallback(f, *args)
    if isinstance(answer, ProxyResponse) or not isinstance(answer, Deferred):
        return f(answer, *args)
    return answer.addCallback(f, *args)


def _internal_error(name: str, request: ProxyRequest, failure: Failure) -> ProxyResponse:
    _log.failure("middleware {name} failed on {method} {market}{path}", failure,
                 name=name, method=request.method, market=request.market, path=request.path)
    return local_error(500, UNKNOWN, f"bnproxy: internal error in middleware {name}",
                       detail=f"error:{name}")


def _deferring(handler: Handler) -> Callable[[ProxyRequest], Deferred]:
    def call(request: ProxyRequest) -> Deferred:
        answer = handler(request)
        return answer if isinstance(answer, Deferred) else succeed(answer)
    return call


def _check(result: object, name: str, request: ProxyRequest) -> ProxyResponse:
    if isinstance(result, ProxyResponse):
        return result
    return _internal_error(name, request, Failure(TypeError(
        f"{name}.handle returned {type(result).__name__}, not ProxyResponse")))


def _settled(result: object, name: str, request: ProxyRequest) -> ProxyResponse | Failure:
    """What middleware ``name``'s Deferred answer comes to: a ProxyResponse,
    or a CancelledError (the bot went away); anything else is a logged 500
    naming it. One callback for both outcomes (cheaper than a pair)."""
    if type(result) is ProxyResponse:
        return result
    if isinstance(result, Failure):
        if result.check(CancelledError):
            return result
        return _internal_error(name, request, result)
    return _check(result, name, request)


def _settled_after(result: object, callback: tuple, name: str,
                   request: ProxyRequest) -> object:
    """``callback`` (a ``(function, args, kwargs)`` a middleware added to
    its Deferred answer), then ``_settled``: the two in one step of the
    Deferred's callback chain (``_settling``)."""
    f, args, kwargs = callback
    try:
        result = f(result, *args, **kwargs)
    except BaseException:  # as the Deferred would have caught it (a CancelledError passes)
        return _settled(Failure(), name, request)
    if type(result) is ProxyResponse:
        return result
    if isinstance(result, Deferred):  # chained: settled when it fires
        return result.addBoth(_settled, name, request)
    return _settled(result, name, request)


def _settling(answer: Deferred, name: str, request: ProxyRequest) -> Deferred:
    """``answer.addBoth(_settled, name, request)``, unless the last callback
    on it settles already (an inner middleware's: the answer was passed on
    with nothing added since). A callback the middleware added last with
    ``addCallback`` is folded into one step with the check (each step of a
    Deferred's chain costs about as much as the check itself): on success
    ``_settled_after``, on failure ``_settled``, what the two steps did.
    Reads and replaces the Deferred's private ``_callbacks``
    (twistedcompat.PRIVATE_ATTRIBUTES)."""
    callbacks = answer._callbacks
    if callbacks:
        last = callbacks[-1]
        on_failure = last[1][0]
        if on_failure is _settled:
            return answer
        if on_failure is _FAILTHRU and not answer.called:
            callbacks[-1] = ((_settled_after, (last[0], name, request), _NO_KEYWORDS),
                             (_settled, (name, request), _NO_KEYWORDS))
            return answer
    return answer.addBoth(_settled, name, request)


def _wrap(middleware: IMiddleware, nxt: Handler) -> Handler:
    name = middleware.name
    handle = middleware.handle
    given = nxt if getattr(middleware, "plain_next", False) else _deferring(nxt)

    def call(request: ProxyRequest) -> Answer:
        try:
            result = handle(request, given)
        except Exception:
            return _internal_error(name, request, Failure())
        kind = type(result)
        if kind is ProxyResponse:
            return result
        # (a Deferred by its type first: isinstance of an ABC is slow)
        if kind is Deferred or isinstance(result, Deferred):
            return _settling(result, name, request)
        if inspect.iscoroutine(result):
            return Deferred.fromCoroutine(result).addBoth(_settled, name, request)
        return _check(result, name, request)

    return call


def compose(middlewares: Sequence[IMiddleware], terminal: Handler) -> Handler:
    """One callable: ``middlewares[0]`` first, ``terminal`` last."""
    handler = terminal
    for middleware in reversed(middlewares):
        handler = _wrap(middleware, handler)
    return handler
