"""What tests control and read on the fake exchange: faults on demand and
counters. Both are reset in place, so every part holding them stays current."""

from __future__ import annotations

from collections import Counter

import attrs


@attrs.define
class Faults:
    """Faults on demand. ``path_prefix`` limits REST faults to matching paths."""

    latency: float = 0.0  # seconds added before answering
    error_status: int = 0  # answer this status ...
    error_rate: float = 0.0  # ... for this share of requests
    stall_headers: bool = False  # never answer
    stall_body: bool = False  # send headers and half a body, then nothing
    path_prefix: str = ""
    refuse: bool = False  # stop listening (connections refused)
    _errors_seen: int = attrs.field(default=0, repr=False, alias="_errors_seen")

    def inject_error(self) -> bool:
        """Whether this request gets ``error_status`` (a deterministic
        ``error_rate`` share of requests)."""
        if not (self.error_status and self.error_rate > 0):
            return False
        self._errors_seen += 1
        return (self._errors_seen * self.error_rate) % 1 < self.error_rate

    def reset(self) -> None:
        for f in attrs.fields(Faults):
            setattr(self, f.name, f.default)

    def public(self) -> dict:
        return {k: v for k, v in attrs.asdict(self).items() if not k.startswith("_")}


@attrs.define
class Counters:
    """What tests read: REST requests by (path, method, client IP), and
    websocket connections, subscriptions and messages."""

    requests: Counter = attrs.field(factory=Counter)
    statuses: Counter = attrs.field(factory=Counter)
    ws_connections: int = 0
    ws_connections_total: int = 0
    ws_subscriptions: int = 0
    ws_messages: int = 0
    ws_control_messages: int = 0
    ws_rate_disconnects: int = 0

    def rest_total(self, path_prefix: str = "") -> int:
        return sum(n for (path, _, _), n in self.requests.items() if path.startswith(path_prefix))

    def reset(self) -> None:
        """Zero the REST counts and the websocket message counts (open
        connections and subscriptions are still open: they stay counted)."""
        self.requests.clear()
        self.statuses.clear()
        self.ws_connections_total = self.ws_connections
        self.ws_messages = self.ws_control_messages = self.ws_rate_disconnects = 0
