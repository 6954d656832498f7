"""A third-party bnproxy middleware: adds a configured response header.

It lives outside the bnproxy package and is found through the
``bnproxy.middleware`` entry-point group, as any plugin would be.
"""

import attrs
from zope.interface import implementer

from bnproxy.chain.interfaces import IMiddleware, IMiddlewareFactory
from bnproxy.config.reader import SettingsReader


@implementer(IMiddleware)
class Stamp:
    def __init__(self, name, header, value):
        self.name = name
        self._header = header
        self._value = value

    def handle(self, request, next):
        def stamp(response):
            previous = response.header(self._header) or b""
            value = previous + b"," + self._value if previous else self._value
            headers = tuple((k, v) for k, v in response.headers if k != self._header)
            return attrs.evolve(response, headers=(*headers, (self._header, value)))
        return next(request).addCallback(stamp)


@implementer(IMiddlewareFactory)
class StampFactory:
    name = "stamp"
    description = "Adds a response header carrying a configured value."

    def build(self, settings, context):
        reader = SettingsReader("middleware.stamp", settings)
        header = reader.str("header", "x-stamp").lower().encode("ascii")
        value = reader.str("value", None)
        reader.done()
        if not value:
            from bnproxy.config.reader import ConfigError
            raise ConfigError("middleware.stamp.value: required")
        return Stamp(self.name, header, value.encode("ascii"))


factory = StampFactory()
