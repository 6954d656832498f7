"""What makes a request private: it then is never cached, coalesced,
retried, logged in full, or shown to another client."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from bnproxy.chain.messages import ProxyRequest

PRIVATE_HEADERS = (b"x-mbx-apikey", b"authorization", b"cookie")
PRIVATE_PARAMS = frozenset({"signature", "timestamp", "recvwindow", "listenkey", "apikey"})
SECRET_PARAMS = frozenset({"signature", "listenkey", "apikey"})


_PRIVATE_BYTES = tuple(name.encode() for name in PRIVATE_PARAMS)
# One search for every name, case-insensitive (ASCII, as bytes.lower()):
# ``name in raw`` per name would cost a formatted TypeError each in CPython.
_PRIVATE_NAME = re.compile(b"|".join(re.escape(n) for n in _PRIVATE_BYTES), re.IGNORECASE)


def _has_private_param(raw: bytes) -> bool:
    if not raw:
        return False
    # No name encoded: a private one would show as it is.
    if raw.find(b"%") == -1 and _PRIVATE_NAME.search(raw) is None:
        return False
    return any(k.lower() in PRIVATE_PARAMS
               for k, _ in parse_qsl(raw.decode("latin-1"), keep_blank_values=True))


def is_private(request: ProxyRequest) -> bool:
    """True if the request carries any private marker: an API key,
    Authorization or Cookie header, or a ``signature``, ``timestamp``,
    ``recvWindow``, ``listenKey`` or ``apiKey`` parameter (query or body),
    or is for an endpoint that is not public."""
    if request.endpoint is None or not request.endpoint.public:
        return True
    if any(k in PRIVATE_HEADERS for k, _ in request.headers):
        return True
    return _has_private_param(request.query) or _has_private_param(request.body)
