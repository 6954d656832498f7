"""Per-client accounting: weight spent, requests, local refusals, the last
order counts Binance reported, and the weight spent this minute (for a
client's share of a pool's budget)."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from bnproxy.chain.messages import ProxyRequest

LABEL_MAX = 64


def client_of(request: ProxyRequest, header: bytes | None) -> str:
    """The client a request is counted under: the label in ``header`` (when
    configured and sent), else the client address."""
    if header is not None:
        label = request.header(header)
        if label:
            return label.decode("latin-1")[:LABEL_MAX]
    return request.client


@attrs.define
class ClientStats:
    weight: int = 0
    requests: int = 0
    rejected: int = 0
    order_counts: dict[str, str] = attrs.field(factory=dict)
    window: int = -1  # the minute ``window_weight`` belongs to
    window_weight: int = 0

    def public(self) -> dict:
        return {"weight": self.weight, "requests": self.requests, "rejected": self.rejected,
                "order_counts": dict(self.order_counts)}


class ClientLedger:
    """The in-process ledger."""

    def __init__(self) -> None:
        self._clients: dict[str, ClientStats] = {}

    def add(self, client: str, window: int, weight: int = 0, requests: int = 0,
            rejected: int = 0, order_counts: Mapping[str, str] | None = None) -> None:
        stats = self._clients.get(client)
        if stats is None:
            stats = self._clients[client] = ClientStats()
        stats.weight += weight
        stats.requests += requests
        stats.rejected += rejected
        if window != stats.window:
            stats.window, stats.window_weight = window, 0
        stats.window_weight += weight
        if order_counts:
            stats.order_counts.update(order_counts)

    def window_weight(self, client: str, window: int) -> int:
        stats = self._clients.get(client)
        return stats.window_weight if stats is not None and stats.window == window else 0

    def read(self) -> dict[str, dict]:
        return {client: stats.public() for client, stats in self._clients.items()}
