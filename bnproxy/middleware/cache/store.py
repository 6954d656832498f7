"""The cache's memory: entries by key, least recently used first, bounded
by bytes. An ``OrderedDict`` underneath, so a hit is one C-level lookup and
move."""

from __future__ import annotations

from collections import OrderedDict

import attrs

from bnproxy.binance.limits import USAGE_HEADER_PREFIXES
from bnproxy.chain.messages import ProxyResponse, header_value, shareable, without_headers


@attrs.define
class Entry:
    response: ProxyResponse
    stored: float
    ttl: float
    size: int
    endpoint: str
    gzipped: bytes | None = None
    plain_headers: tuple = ()
    gzip_headers: tuple = ()
    # The last answer served from this entry, by (status, gzipped, age): hits
    # within the same second get the same (immutable) value.
    served_as: tuple | None = None
    served: ProxyResponse | None = None

    def __attrs_post_init__(self) -> None:
        headers = self.response.headers
        vary = header_value(headers, b"vary")
        vary = b"Accept-Encoding" if not vary else vary + b", Accept-Encoding"
        base = without_headers(headers, b"vary")
        self.plain_headers = (*base, (b"vary", vary))
        self.gzip_headers = (*without_headers(base, b"content-encoding"), (b"vary", vary),
                             (b"content-encoding", b"gzip"))


def storable(response: ProxyResponse) -> bool:
    return response.source == "upstream" and shareable(response)


def stored_copy(response: ProxyResponse) -> ProxyResponse:
    headers = tuple((k, v) for k, v in response.headers
                    if k != b"set-cookie" and not k.startswith(USAGE_HEADER_PREFIXES))
    return attrs.evolve(response, headers=headers, weight=0)


class Store(OrderedDict[tuple, Entry]):
    """Entries by key; ``put`` evicts the least recently used past
    ``max_bytes``; ``move_to_end(key)`` on a hit keeps an entry young."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.bytes = 0

    def put(self, key: tuple, entry: Entry) -> None:
        old = self.pop(key, None)
        if old is not None:
            self.bytes -= old.size
        if entry.size > self.max_bytes:
            return
        self[key] = entry
        self.bytes += entry.size
        while self.bytes > self.max_bytes:
            _, evicted = self.popitem(last=False)
            self.bytes -= evicted.size

    def clear(self) -> None:
        super().clear()
        self.bytes = 0
