"""The proxy's one verdict: ``ok``, ``degraded``, ``banned`` or ``not ready``.

Computed in one place (``bnproxy.readiness.Readiness.verdict``) from named
problems, each with the time it was first seen, and used by ``/ready``
(503 only for ``not ready``: a banned proxy still answers every bot
correctly, with a local 418/429 and Retry-After, from streams and cache),
``/health`` and ``/dashboard/state`` (a top-level ``status``), the dashboard's
header and banner, ``python -m bnproxy status`` (its exit code) and the
``bnproxy_status`` metric.

Severity, worst first: ``not ready`` (the proxy cannot serve: draining, an
upstream unreachable, a stream manager down), ``banned`` (Binance refuses
this address: bots get local refusals until it ends), ``degraded`` (serving,
less well: stale streams, shared state lost, the access log failing, a ban
on some of several egress addresses).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

OK = "ok"
DEGRADED = "degraded"
BANNED = "banned"
NOT_READY = "not ready"
STATUSES = (OK, DEGRADED, BANNED, NOT_READY)  # best first
_RANK = {s: i for i, s in enumerate(STATUSES)}
TEXT = 300  # characters of a problem's text kept
EXIT_CODES = {OK: 0, DEGRADED: 1, BANNED: 2, NOT_READY: 2}  # Nagios: OK, WARNING, CRITICAL


@attrs.frozen
class Problem:
    """One named problem: ``key`` stable while it lasts, ``severity`` one of
    ``degraded``, ``banned``, ``not ready``, ``since`` the proxy's clock when
    it was first seen (epoch seconds)."""

    key: str
    severity: str
    text: str
    since: float

    def document(self) -> dict[str, Any]:
        return {"name": self.key, "severity": self.severity, "text": self.text,
                "since": round(self.since, 3)}


@attrs.frozen
class Verdict:
    status: str
    problems: tuple[Problem, ...]

    @property
    def ready(self) -> bool:
        """Can the proxy answer bots at all (``/ready`` 200)?"""
        return self.status != NOT_READY

    def texts(self) -> list[str]:
        return [p.text for p in self.problems]

    def document(self) -> dict[str, Any]:
        """``{"status", "problems": [text…], "issues": [{name, severity, text, since}…]}``."""
        return {"status": self.status, "problems": self.texts(),
                "issues": [p.document() for p in self.problems]}


def worst(severities: Iterable[str]) -> str:
    return max(severities, key=_RANK.__getitem__, default=OK)


class Since:
    """Remembers when each problem key was first seen, forgetting the keys
    that are gone (a problem that ends and comes back starts again)."""

    def __init__(self) -> None:
        self._first: dict[str, float] = {}

    def verdict(self, now: float, found: Iterable[tuple[str, str, str]]) -> Verdict:
        problems: list[Problem] = []
        seen: dict[str, float] = {}
        for key, severity, text in found:
            if severity not in _RANK or severity == OK:
                severity = DEGRADED  # an unknown severity is not ignored
            since = seen.get(key) or self._first.get(key, now)
            seen[key] = since
            if len(text) > TEXT:
                text = text[:TEXT] + "…"
            problems.append(Problem(key[:100], severity, text, since))
        self._first = seen
        problems.sort(key=lambda p: (-_RANK[p.severity], p.since, p.key))
        return Verdict(worst(p.severity for p in problems), tuple(problems))
