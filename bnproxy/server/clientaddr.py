"""Client addresses: normalisation and trusted-proxy resolution."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


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
    addr = parse_address(text)
    return addr is not None and any(addr in n for n in networks)


def _forwarded_for(values: list[bytes]) -> list[str]:
    hops: list[str] = []
    for value in values:
        for element in value.decode("latin-1").split(","):
            for pair in element.split(";"):
                k, sep, v = pair.strip().partition("=")
                if sep and k.strip().lower() == "for":
                    hops.append(v.strip())
    return hops


def _x_forwarded_for(values: list[bytes]) -> list[str]:
    return [h.strip() for v in values for h in v.decode("latin-1").split(",") if h.strip()]


class ClientResolver:
    """Who the client is.

    The socket peer, unless the peer is a trusted proxy: then the forwarding
    header (``X-Forwarded-For`` or ``Forwarded``) is walked right to left to
    the first hop that is not itself trusted. A hop that is not an address
    ends the walk and becomes the client (which no allowlist admits).
    """

    def __init__(self, trusted: Sequence[Network] = (), header: str = "x-forwarded-for") -> None:
        if header not in ("x-forwarded-for", "forwarded"):
            raise ValueError(
                f"forwarded header must be x-forwarded-for or forwarded, not {header!r}")
        self.trusted = list(trusted)
        self.header = header.encode()

    def __call__(self, peer: str, headers: Sequence[tuple[bytes, bytes]]) -> str:
        client = normalise(peer)
        if not self.trusted or not in_networks(client, self.trusted):
            return client
        values = [v for k, v in headers if k == self.header]
        hops = _forwarded_for(values) if self.header == b"forwarded" else _x_forwarded_for(values)
        for hop in reversed(hops):
            addr = parse_address(hop)
            if addr is None:
                return hop
            client = str(addr)
            if not any(addr in n for n in self.trusted):
                return client
        return client
