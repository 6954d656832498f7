"""Moved to :mod:`bnproxy.plugin` (and ``bnproxy.chain.interfaces``); this
path re-exports for one release."""

from bnproxy.chain.interfaces import IMiddleware, IMiddlewareFactory

__all__ = ["IMiddleware", "IMiddlewareFactory"]
