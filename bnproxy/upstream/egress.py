"""Several egress addresses: requests leave from source addresses this host
owns, each with its own budget and bans per weight pool.

- ``check_egress_address`` refuses at start-up what cannot be a source
  address here (not an IP address, or not assigned to this host).
- ``egress_agents`` builds one ``twisted.web`` Agent per address, each with
  its own connection pool, binding its connections to that address.
- ``EgressChooser`` picks, per request, the address with the most headroom
  in the request's pool that is not banned (pure logic: the caller passes
  how usage and bans are read).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping, Sequence

from bnproxy.upstream.client import Deadlines, LeanClient, make_agent

# (address, pool) -> (used this window, budget or None when the pool has none)
UsageFn = Callable[[str, str], tuple[int, int | None]]
# (address, pool) -> True while a Binance ban on that pool (or its host) is in force
BannedFn = Callable[[str, str], bool]


class EgressAddressError(ValueError):
    """An ``--egress`` value that cannot be used on this host."""


def check_egress_address(address: str) -> str:
    """The normalised address; ``EgressAddressError`` (one line) if it is
    not an IPv4/IPv6 address this host can bind to."""
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        raise EgressAddressError(f"--egress {address!r} is not an IP address") from None
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((str(ip), 0))
    except OSError as e:
        raise EgressAddressError(
            f"--egress {ip} is not an address of this host ({e.strerror})") from None
    return str(ip)


def egress_agents(reactor, addresses: Sequence[str], deadlines: Deadlines = Deadlines(),
                  max_per_host: int = 32, tls_policy=None) -> dict[str, LeanClient]:
    """One client per address (its own persistent pools, connections bound to
    the address), for ``Upstream(egress_agents=…, egress_of=…)``."""
    return {a: make_agent(reactor, deadlines, max_per_host, tls_policy=tls_policy,
                          bind_address=a)
            for a in addresses}


class EgressChooser:
    """Chooses the egress address for each request.

    ``choose(pool, weight)`` returns the address, among those not banned
    for ``pool``, with the most headroom (``budget - used``) that fits
    ``weight``; None when every address is banned or full. Addresses with no
    budget for the pool (None) count as unlimited. Ties go round-robin, so
    equal addresses share the traffic. A banned address is never chosen
    until its ban ends (``banned`` says so).

    ``choose_for_connection(pool, connections)`` spreads long-lived
    connections (websockets): the address not banned with the fewest
    connections (``connections``: address -> count).
    """

    def __init__(self, addresses: Sequence[str], usage: UsageFn, banned: BannedFn) -> None:
        if not addresses:
            raise ValueError("EgressChooser needs at least one address")
        if len(set(addresses)) != len(addresses):
            raise ValueError("egress addresses must be distinct")
        self.addresses = tuple(addresses)
        self._usage = usage
        self._banned = banned
        self._turn = 0

    def _rotated(self) -> tuple[str, ...]:
        n = len(self.addresses)
        start = self._turn % n
        self._turn = (self._turn + 1) % n
        return self.addresses[start:] + self.addresses[:start]

    def headroom(self, address: str, pool: str) -> float:
        used, budget = self._usage(address, pool)
        return float("inf") if budget is None else budget - used

    def choose(self, pool: str, weight: int = 0) -> str | None:
        best, best_room = None, None
        for address in self._rotated():
            if self._banned(address, pool):
                continue
            room = self.headroom(address, pool)
            if room < weight:
                continue
            if best_room is None or room > best_room:
                best, best_room = address, room
        return best

    def choose_for_connection(self, pool: str, connections: Mapping[str, int]) -> str | None:
        best, fewest = None, None
        for address in self._rotated():
            if self._banned(address, pool):
                continue
            n = connections.get(address, 0)
            if fewest is None or n < fewest:
                best, fewest = address, n
        return best
