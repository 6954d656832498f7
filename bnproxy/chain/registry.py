"""Discovering middleware factories and building the configured chain."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from twisted.plugin import getPlugins
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from bnproxy.chain.context import MiddlewareContext
from bnproxy.chain.interfaces import IMiddleware, IMiddlewareFactory
from bnproxy.chain.options import describe, read_options
from bnproxy.settings import ConfigError

ENTRY_POINT_GROUP = "bnproxy.middleware"


def _from_entry_points(group: str) -> Iterable[tuple[str, Any]]:
    for ep in entry_points(group=group):
        try:
            obj = ep.load()
        except Exception as e:  # a broken third-party package must say so
            raise ConfigError(
                f"middleware plugin {ep.name!r} ({ep.value}) failed to load: {e}") from e
        if isinstance(obj, type):
            obj = obj()
        yield f"entry point {ep.value}", obj


def _from_dropins(package: ModuleType) -> Iterable[tuple[str, Any]]:
    for obj in getPlugins(IMiddlewareFactory, package):
        yield f"drop-in {getattr(obj, '__module__', None) or type(obj).__module__}", obj


def discover(package: ModuleType | None = None,
             group: str = ENTRY_POINT_GROUP) -> dict[str, Any]:
    """All middleware factories by name: entry points and drop-ins merged.

    Each is checked with ``verifyObject``; two different factories under one
    name are refused.
    """
    if package is None:
        import bnproxy.plugins

        package = bnproxy.plugins
    found: dict[str, tuple[str, Any]] = {}
    for origin, factory in [*_from_dropins(package), *_from_entry_points(group)]:
        try:
            verifyObject(IMiddlewareFactory, factory)
        except Invalid as e:
            raise ConfigError(f"middleware plugin from {origin} does not provide "
                              f"IMiddlewareFactory: {e}") from None
        name = factory.name
        if name in found:
            if found[name][1] is factory or type(found[name][1]) is type(factory):
                continue  # the same factory reached twice (drop-in and entry point)
            raise ConfigError(f"two middleware plugins are named {name!r}: "
                              f"{found[name][0]} and {origin}")
        found[name] = (origin, factory)
    return {name: f for name, (_, f) in found.items()}


def build_middlewares(specs: Sequence[tuple[str, Mapping[str, Any]]],
                      factories: Mapping[str, Any],
                      context: MiddlewareContext | None) -> list[IMiddleware]:
    """Build the configured middlewares, in order, each recorded in
    ``context.built`` (what ``context.find`` and ``lookup`` read)."""
    seen: set[str] = set()
    built = []
    for name, settings in specs:
        if name in seen:
            raise ConfigError(f"middleware {name!r} is configured twice in the chain")
        seen.add(name)
        factory = factories.get(name)
        if factory is None:
            known = ", ".join(sorted(factories)) or "none"
            raise ConfigError(f"unknown middleware {name!r} (known: {known})")
        options = getattr(factory, "options", None)  # optional: typed settings
        if options is not None:
            settings = read_options(f"middleware.{name}", options, settings)
        try:
            middleware = factory.build(settings, context)
        except ConfigError:
            raise
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError(f"middleware {name}: {e}") from e
        try:
            verifyObject(IMiddleware, middleware)
        except Invalid as e:
            raise ConfigError(f"middleware {name!r} built an object that does not "
                              f"provide IMiddleware: {e}") from None
        built.append(middleware)
        if context is not None:
            context.built[name] = middleware
    return built


def describe_middleware(name: str, factories: Mapping[str, Any] | None = None) -> str:
    """What ``--help-middleware NAME`` prints: the description and every
    typed option with its type, default and help."""
    factories = discover() if factories is None else factories
    factory = factories.get(name)
    if factory is None:
        known = ", ".join(sorted(factories)) or "none"
        raise ConfigError(f"unknown middleware {name!r} (known: {known})")
    return describe(name, factory.description, getattr(factory, "options", None))
