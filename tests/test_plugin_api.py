"""The public plugin API is pinned: bnproxy.plugin's surface changes only on
purpose (update this list, the README and the changelog in the same change)."""

import bnproxy.plugin

PINNED = {
    "INTERNAL": "bnproxy.chain.messages",
    "Answer": "bnproxy.chain.compose",
    "ConfigError": "bnproxy.settings",
    "IAccessLog": "bnproxy.chain.interfaces",
    "IAdmission": "bnproxy.chain.interfaces",
    "IFastPathSafe": "bnproxy.chain.interfaces",
    "IHealthReporter": "bnproxy.chain.interfaces",
    "IMetricsSource": "bnproxy.chain.interfaces",
    "IMiddleware": "bnproxy.chain.interfaces",
    "IMiddlewareFactory": "bnproxy.chain.interfaces",
    "IProblemReporter": "bnproxy.chain.interfaces",
    "IReadinessCheck": "bnproxy.chain.interfaces",
    "ISharedState": "bnproxy.chain.interfaces",
    "IWeightGovernor": "bnproxy.chain.interfaces",
    "MiddlewareContext": "bnproxy.chain.context",
    "Option": "bnproxy.chain.options",
    "ProxyRequest": "bnproxy.chain.messages",
    "ProxyResponse": "bnproxy.chain.messages",
    "Send": "bnproxy.chain.context",
    "SettingsReader": "bnproxy.settings",
    "as_deferred": "bnproxy.chain.compose",
    "header_value": "bnproxy.chain.messages",
    "local_error": "bnproxy.chain.messages",
    "then": "bnproxy.chain.compose",
    "without_headers": "bnproxy.chain.messages",
}

INTERFACE_METHODS = {
    "IMiddleware": {"name", "handle"},
    "IMiddlewareFactory": {"name", "description", "build"},
    "IHealthReporter": {"health"},
    "IMetricsSource": {"collect_metrics"},
    "IReadinessCheck": {"readiness_problems"},
    "IProblemReporter": {"health_problems"},
    "IWeightGovernor": {"pool_of", "reserve", "usage", "banned_for", "set_client_share"},
    "IAccessLog": {"write"},
    "IAdmission": {"admits"},
    "IFastPathSafe": {"fast_handle"},
    "ISharedState": {"status", "reserve", "reconcile", "used", "set_ban", "bans",
                     "banned_until", "on_ban", "add", "clients", "live_instances", "health"},
}


def test_the_public_surface_is_exactly_the_pinned_one():
    assert sorted(bnproxy.plugin.__all__) == sorted(PINNED)
    for name, origin in PINNED.items():
        obj = getattr(bnproxy.plugin, name)
        module = getattr(obj, "__module__", None) or origin
        if name not in ("INTERNAL", "Answer", "Send"):  # values, not definitions
            assert module == origin, f"{name} now comes from {module}, not {origin}"


def test_the_interfaces_keep_their_members():
    for name, members in INTERFACE_METHODS.items():
        interface = getattr(bnproxy.plugin, name)
        assert set(interface.names()) == members, name


def test_old_import_paths_still_work_for_one_release():
    from bnproxy.config.reader import ConfigError as ReaderConfigError
    from bnproxy.config.reader import SettingsReader as ReaderSettingsReader
    from bnproxy.interfaces import IMiddleware, IMiddlewareFactory
    from bnproxy.messages import ProxyRequest, ProxyResponse, local_error
    from bnproxy.settings import ConfigError, SettingsReader

    assert IMiddleware is bnproxy.plugin.IMiddleware
    assert IMiddlewareFactory is bnproxy.plugin.IMiddlewareFactory
    assert (ProxyRequest, ProxyResponse, local_error) == (
        bnproxy.plugin.ProxyRequest, bnproxy.plugin.ProxyResponse, bnproxy.plugin.local_error)
    assert (ConfigError, SettingsReader) == (bnproxy.plugin.ConfigError,
                                             bnproxy.plugin.SettingsReader)
    assert (ReaderConfigError, ReaderSettingsReader) == (ConfigError, SettingsReader)


def test_the_context_is_typed_and_finds_capabilities_by_interface():
    """A middleware asks the context for a capability, not for a name."""
    import typing

    import attrs
    from helpers import Harness, chain

    from bnproxy.plugin import IWeightGovernor, MiddlewareContext

    hints = typing.get_type_hints(MiddlewareContext)
    untyped = [f.name for f in attrs.fields(MiddlewareContext) if hints[f.name] is typing.Any]
    assert not untyped, f"MiddlewareContext fields typed Any: {untyped}"
    h = Harness(middleware=chain("logger", "ratelimit"))
    context = h.service.proxy.context
    assert context.find(IWeightGovernor) is context.lookup("ratelimit") is not None
    assert context.find(bnproxy.plugin.IAdmission) is None
