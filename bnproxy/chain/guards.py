"""The two guards a proxy of trading bots keeps unless told otherwise: who
may use it (``IAdmission``, the ``allowlist``) and the weight budget
(``IWeightGovernor``, the ``ratelimit`` middleware). A chain without one is
allowed, since the operator removed it, but never silent: start-up warns and
``/health`` shows it under ``middleware.guards``."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.logger import Logger
from zope.interface import Interface, implementer

from bnproxy.chain.interfaces import IAdmission, IHealthReporter, IWeightGovernor

#: What each guard keeps away, by the interface that provides it.
GUARDS: tuple[tuple[str, type[Interface], str], ...] = (
    ("allowlist", IAdmission, "every address that reaches the port may send through it"),
    ("ratelimit", IWeightGovernor, "nothing keeps the bots inside Binance's weight limits"),
)

_log = Logger(namespace="bnproxy.chain")


def missing_guards(middlewares: Sequence[object]) -> list[str]:
    """The names of the guards no middleware of the chain provides."""
    return [name for name, interface, _ in GUARDS
            if not any(interface.providedBy(m) for m in middlewares)]


@implementer(IHealthReporter)
class ChainGuards:
    """``/health``'s ``middleware.guards``: ``{"missing": [...]}``, and a
    ``warning`` when the list is not empty."""

    name = "guards"

    def __init__(self, middlewares: Sequence[object]) -> None:
        self.missing = missing_guards(middlewares)

    def warning(self) -> str:
        why = "; ".join(f"no {name}: {risk}" for name, _, risk in GUARDS if name in self.missing)
        return f"the middleware chain has {why} (--middleware-chain or -NAME removed it)"

    def warn(self) -> None:
        """Log the warning at start-up, once, when a guard is missing."""
        if self.missing:
            _log.warn("{warning}", warning=self.warning())

    def health(self) -> dict[str, object]:
        if not self.missing:
            return {"missing": []}
        return {"missing": self.missing, "warning": self.warning()}
