"""Moved to :mod:`bnproxy.plugin` (and ``bnproxy.chain.messages``); this path
re-exports for one release."""

from bnproxy.chain.messages import (
    INTERNAL,
    JSON,
    ProxyRequest,
    ProxyResponse,
    header_value,
    local_error,
    without_headers,
)

__all__ = ["INTERNAL", "JSON", "ProxyRequest", "ProxyResponse", "header_value", "local_error",
           "without_headers"]
