"""The request chain: the plugin contract (``interfaces``), the values that
flow through it (``messages``), what factories build with (``context``),
composing the configured middlewares (``compose``) and discovering them
(``registry``)."""

from bnproxy.chain.compose import Answer, as_deferred, compose, then

__all__ = ["Answer", "as_deferred", "compose", "then"]
