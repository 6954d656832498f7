"""The streams middleware's old module path: ``Streams`` and
``build_streams`` now live in ``dispatcher``, the settings in ``settings``."""

from bnproxy.middleware.streams.dispatcher import Streams, build_streams
from bnproxy.middleware.streams.settings import Settings

__all__ = ["Settings", "Streams", "build_streams"]
