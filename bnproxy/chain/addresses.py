"""Client addresses as the chain carries them: normalised (scope id
dropped, IPv4-mapped IPv6 as IPv4) and compared against parsed networks.
Used by the server's client resolution and by the allowlist middleware."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: The client of a connection on a unix socket (no IP address): treated like
#: loopback, since only processes of this host reach the socket.
UNIX_PEER = "unix"
_LOOPBACK = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))


@lru_cache(maxsize=8192)
def parse_address(text: str) -> Address | None:
    """An IP address, normalised: scope id dropped, IPv4-mapped IPv6 → IPv4,
    brackets and a port (``[::1]:80``, ``1.2.3.4:80``) removed. None if
    ``text`` is not an address."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    text = text.split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@lru_cache(maxsize=8192)
def normalise(text: str) -> str:
    """The canonical text of an address, or ``text`` unchanged if it is none."""
    addr = parse_address(text)
    return str(addr) if addr is not None else text


def parse_networks(items: Iterable[str]) -> list[Network]:
    """Parse CIDRs (or single addresses); ``ValueError`` names the bad one."""
    out: list[Network] = []
    for item in items:
        try:
            net = ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP network") from None
        if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and \
                net.network_address.ipv4_mapped is not None:
            net = ipaddress.ip_network(
                f"{net.network_address.ipv4_mapped}/{net.prefixlen - 96}")
        out.append(net)
    return out


def in_networks(text: str, networks: Sequence[Network]) -> bool:
    """Whether the client ``text`` is in one of ``networks``; a unix-socket
    peer (:data:`UNIX_PEER`) is in them when loopback is."""
    if text == UNIX_PEER:
        return any(a in n for a in _LOOPBACK for n in networks)
    addr = parse_address(text)
    return addr is not None and any(addr in n for n in networks)
