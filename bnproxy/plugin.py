"""The public plugin API: everything a middleware author imports, from one
module. A test pins this surface (``__all__`` and each name's origin): a
change to it is a change to the contract and must be deliberate.

    from bnproxy.plugin import IMiddleware, IMiddlewareFactory, Option, ProxyResponse

See README.md, "Writing a middleware plugin", and ``tests/plugin_pkg``.
"""

from bnproxy.chain.compose import Answer, as_deferred, then
from bnproxy.chain.context import MiddlewareContext, Send
from bnproxy.chain.interfaces import (
    IAccessLog,
    IAdmission,
    IFastPathSafe,
    IHealthReporter,
    IMetricsSource,
    IMiddleware,
    IMiddlewareFactory,
    IProblemReporter,
    IReadinessCheck,
    ISharedState,
    IWeightGovernor,
)
from bnproxy.chain.messages import (
    INTERNAL,
    ProxyRequest,
    ProxyResponse,
    header_value,
    local_error,
    without_headers,
)
from bnproxy.chain.options import Option
from bnproxy.settings import ConfigError, SettingsReader

__all__ = [
    "INTERNAL",
    "Answer",
    "ConfigError",
    "IAccessLog",
    "IAdmission",
    "IFastPathSafe",
    "IHealthReporter",
    "IMetricsSource",
    "IMiddleware",
    "IMiddlewareFactory",
    "IProblemReporter",
    "IReadinessCheck",
    "ISharedState",
    "IWeightGovernor",
    "MiddlewareContext",
    "Option",
    "ProxyRequest",
    "ProxyResponse",
    "Send",
    "SettingsReader",
    "as_deferred",
    "header_value",
    "local_error",
    "then",
    "without_headers",
]
