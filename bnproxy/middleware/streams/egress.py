"""Stream connections over several egress addresses (``--egress``): each
market's connections spread over the addresses that are not banned, and a
ban on an address moves its connections to the others (a rotation: the new
connection subscribes, then the old one closes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bnproxy.chain.interfaces import IWeightGovernor
from bnproxy.middleware.streams.manager import StreamManager


def ban_reader(market: str, governor: Callable[[], Any]) -> Callable[[str], bool]:
    """``egress -> banned now`` for ``market``'s host, read from the
    ``IWeightGovernor`` ``governor()`` returns (never banned without one)."""
    def banned(egress: str) -> bool:
        g = governor()
        return bool(g is not None and IWeightGovernor.providedBy(g)
                    and g.banned_for(market, egress) > 0)
    return banned


def move_banned(manager: StreamManager) -> int:
    """Rotate every connection leaving from a banned address to an unbanned
    one (none is moved when every address is banned); how many moved."""
    if len(manager.egresses) < 2:
        return 0
    if all(manager.egress_banned(e) for e in manager.egresses):
        return 0
    moved = 0
    for conn in list(manager.connections):
        if not conn.retiring and conn.egress is not None and manager.egress_banned(conn.egress):
            manager.rotate(conn, f"egress {conn.egress} banned")
            moved += 1
    return moved
