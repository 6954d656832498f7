"""Plugin discovery: entry points and drop-ins, checked and ordered."""

import sys
import textwrap

import pytest
from helpers import Harness

from bnproxy.chain.registry import build_middlewares, discover
from bnproxy.config.reader import ConfigError


def test_a_third_party_plugin_is_discovered_from_its_entry_point():
    factories = discover()
    assert "stamp" in factories
    assert factories["stamp"].description


def test_a_third_party_plugin_is_configured_and_ordered():
    h = Harness(middleware=(("stamp", {"value": "first"}),))
    answer = h.request("GET", "/api/v3/ping")
    assert answer.header(b"x-stamp") == b"first"
    assert h.service.health.document()["chain"] == ["stamp"]


def test_bad_settings_stop_start_up_naming_the_key():
    with pytest.raises(ConfigError, match="middleware.stamp: unknown setting.*colour"):
        Harness(middleware=(("stamp", {"value": "x", "colour": "red"}),))
    with pytest.raises(ConfigError, match="stamp.value: required"):
        Harness(middleware=(("stamp", {}),))


def test_an_unknown_middleware_is_refused_with_the_known_names():
    with pytest.raises(ConfigError, match="unknown middleware 'nope'.*stamp"):
        Harness(middleware=(("nope", {}),))


def _dropin_package(tmp_path, name, source):
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text(textwrap.dedent(source))
    sys.path.insert(0, str(tmp_path))
    try:
        __import__(name)
        return sys.modules[name]
    finally:
        sys.path.remove(str(tmp_path))


def test_a_dropin_is_found_with_getplugins(tmp_path):
    pkg = _dropin_package(tmp_path, "dropins_ok", """
        from zope.interface import implementer
        from bnproxy.chain.interfaces import IMiddlewareFactory, IMiddleware

        @implementer(IMiddleware)
        class M:
            name = "hello"
            def handle(self, request, next):
                return next(request)

        @implementer(IMiddlewareFactory)
        class F:
            name = "hello"
            description = "says hello"
            def build(self, settings, context):
                return M()

        factory = F()
    """)
    factories = discover(pkg)
    assert "hello" in factories and "stamp" in factories
    assert [m.name for m in build_middlewares([("hello", {})], factories, None)] == ["hello"]


def test_an_interface_mismatch_is_refused(tmp_path):
    pkg = _dropin_package(tmp_path, "dropins_bad", """
        from zope.interface import implementer
        from bnproxy.chain.interfaces import IMiddlewareFactory

        @implementer(IMiddlewareFactory)
        class F:
            name = "broken"
            description = "claims the interface, lacks build"

        factory = F()
    """)
    with pytest.raises(ConfigError, match="does not provide IMiddlewareFactory"):
        discover(pkg)


def test_duplicate_names_are_refused(tmp_path):
    pkg = _dropin_package(tmp_path, "dropins_dup", """
        from zope.interface import implementer
        from bnproxy.chain.interfaces import IMiddlewareFactory

        @implementer(IMiddlewareFactory)
        class Another:
            name = "stamp"
            description = "a second plugin named stamp"
            def build(self, settings, context):
                raise NotImplementedError

        factory = Another()
    """)
    with pytest.raises(ConfigError, match="two middleware plugins are named 'stamp'"):
        discover(pkg)


def test_a_built_object_that_is_not_a_middleware_is_refused(tmp_path):
    pkg = _dropin_package(tmp_path, "dropins_junk", """
        from zope.interface import implementer
        from bnproxy.chain.interfaces import IMiddlewareFactory

        @implementer(IMiddlewareFactory)
        class F:
            name = "junk"
            description = "builds junk"
            def build(self, settings, context):
                return object()

        factory = F()
    """)
    with pytest.raises(ConfigError, match="does not provide IMiddleware"):
        build_middlewares([("junk", {})], discover(pkg), None)
