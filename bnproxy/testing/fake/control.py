"""What tests control and read on the fake exchange: faults on demand and
counters. Both are reset in place, so every part holding them stays current."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

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

    def update(self, args: Mapping[str, Any]) -> None:
        """Set the faults named in ``args`` (JSON values or query-string
        text), each checked against its field's type; ``refuse`` is left to
        the caller (it closes the port). AdminError on an unknown name or a
        bad value, before anything changes."""
        kinds = {f.name: type(f.default) for f in attrs.fields(Faults)
                 if not f.name.startswith("_")}
        values = {}
        for key, value in args.items():
            if key not in kinds or key == "refuse":
                raise AdminError(f"unknown fault {key} (faults: {', '.join(sorted(kinds))})")
            values[key] = typed(key, value, kinds[key])
        for key, value in values.items():
            setattr(self, key, value)


class AdminError(ValueError):
    """A request to the fake's admin API it cannot do: answered 400 with the
    message."""


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def typed(key: str, value: Any, kind: type) -> Any:
    """``value`` (a JSON value, or text from a query string) as ``kind``
    (bool, int, float or str), or AdminError naming ``key``."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).strip().lower() in _TRUE + _FALSE:
            return str(value).strip().lower() in _TRUE
    elif kind is str:
        if isinstance(value, str):
            return value
    elif not isinstance(value, bool):
        try:
            number = kind(value)
            if number == number and abs(number) != float("inf"):
                return number
        except (TypeError, ValueError):
            pass
    raise AdminError(f"{key}: expected {kind.__name__}, got {value!r}")


def required(args: Mapping[str, Any], key: str, kind: type, action: str) -> Any:
    """``args[key]`` as ``kind``; AdminError when it is missing."""
    if key not in args:
        raise AdminError(f"{action} needs {key} (as JSON {{\"{key}\": ...}} or ?{key}=...)")
    return typed(key, args[key], kind)


def optional(args: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    return typed(key, args[key], kind) if key in args else default


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
