"""The built-in middleware factories, registered as plugins like any other."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

from zope.interface import implementer

from bnproxy.chain.context import MiddlewareContext
from bnproxy.chain.interfaces import IMiddleware, IMiddlewareFactory
from bnproxy.chain.options import Option


@implementer(IMiddlewareFactory)
class _Factory:
    def __init__(self, name: str, description: str, module: str, builder: str) -> None:
        self.name = name
        self.description = description
        self._module = module
        self._builder = builder

    def _loaded(self) -> ModuleType:
        import importlib

        return importlib.import_module(self._module)

    @property
    def options(self) -> Sequence[Option] | None:
        """The module's ``OPTIONS`` when it declares them (typed settings)."""
        return getattr(self._loaded(), "OPTIONS", None)

    def build(self, settings: dict[str, Any], context: MiddlewareContext) -> IMiddleware:
        """``build_NAME(name, settings, context)`` of the module."""
        build = getattr(self._loaded(), self._builder)
        middleware: IMiddleware = build(self.name, settings, context)
        return middleware


logger = _Factory("logger", "Access log (text or JSON) with secrets redacted.",
                  "bnproxy.middleware.logger", "build_logger")
allowlist = _Factory("allowlist", "Admit only listed client networks.",
                     "bnproxy.middleware.allowlist", "build_allowlist")
cache = _Factory("cache", "Public market data from a bounded cache, coalesced, stale-if-error.",
                 "bnproxy.middleware.cache.middleware", "build_cache")
ratelimit = _Factory("ratelimit", "One weight budget for the fleet; no ban ever escalates.",
                     "bnproxy.middleware.ratelimit.middleware", "build_ratelimit")
streams = _Factory("streams", "Klines, order books and tickers from websocket streams.",
                   "bnproxy.middleware.streams.dispatcher", "build_streams")
