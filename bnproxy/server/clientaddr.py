"""Client addresses: normalisation and trusted-proxy resolution."""

from __future__ import annotations

from collections.abc import Sequence

from bnproxy.chain.addresses import (  # re-exported: the server's callers use them here
    Address,
    Network,
    in_networks,
    normalise,
    parse_address,
    parse_networks,
)
from bnproxy.config.schema import FORWARDED_HEADERS, default

__all__ = ["Address", "ClientResolver", "Network", "in_networks", "normalise", "parse_address",
           "parse_networks"]


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

    def __init__(self, trusted: Sequence[Network] = (),
                 header: str = default("forwarded_header")) -> None:
        if header not in FORWARDED_HEADERS:
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
