"""Bounded label values: at most N distinct names, the rest as ``other``.

Prometheus keeps one series per label value for ever, and ``/health``'s
per-client table is read by people: a client label taken from what bots send
(an address, ``X-Bnproxy-Client``) must not grow without bound. The first
``limit`` distinct values keep their own name; every later one is reported
as ``other``. Shared by ``/metrics`` and ``/health`` so that both name the
same clients.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

OTHER = "other"
DEFAULT_LIMIT = 64
# The header a bot sends to be named (access log, governor ledger, dashboard).
CLIENT_HEADER = "X-Bnproxy-Client"


class BoundedLabels:
    """``labels(value)`` is ``value`` for the first ``limit`` distinct values
    seen, ``other`` afterwards (a value once admitted stays admitted)."""

    def __init__(self, limit: int = DEFAULT_LIMIT, other: str = OTHER) -> None:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        self.limit = limit
        self.other = other
        self._admitted: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._admitted:
            return value
        if len(self._admitted) < self.limit and value != self.other:
            self._admitted.add(value)
            return value
        return self.other

    def __len__(self) -> int:
        return len(self._admitted)

    def fold(self, table: Mapping[str, Any]) -> dict[str, Any]:
        """A per-client table with at most ``limit`` names plus ``other``:
        the rows of clients beyond the bound are merged into one (numbers
        summed, nested mappings merged the same way, anything else dropped)."""
        out: dict[str, Any] = {}
        for name, row in table.items():
            label = self(str(name))
            out[label] = row if label not in out else merge(out[label], row)
        return out

    def fold_samples(self, samples: Iterable[tuple[dict[str, str], float]],
                     label: str = "client") -> list[tuple[dict[str, str], float]]:
        """(labels, value) pairs with ``label`` bounded; values of pairs that
        end up with equal labels are summed (counters and gauges)."""
        summed: dict[tuple, float] = {}
        names: dict[tuple, dict[str, str]] = {}
        for labels, value in samples:
            if label in labels:
                labels = {**labels, label: self(labels[label])}
            key = tuple(sorted(labels.items()))
            summed[key] = summed.get(key, 0.0) + value
            names[key] = labels
        return [(names[key], value) for key, value in summed.items()]


def merge(a: Any, b: Any) -> Any:
    """``a`` and ``b`` merged: numbers added, mappings merged key by key;
    other values are not summable and give None (dropped from mappings)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return None
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a + b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = {}
        for key in {**a, **b}:
            if key in a and key in b:
                value = merge(a[key], b[key])
            else:
                value = a[key] if key in a else b[key]
                value = merge(value, {} if isinstance(value, Mapping) else 0)
            if value is not None:
                out[key] = value
        return out
    return None
