"""Redis key names, and hashing for labels that must not be stored raw."""

from __future__ import annotations

import hashlib

SEP = "|"


def hashed_label(secret: str) -> str:
    """A stable, non-reversible ledger label for something secret (an API
    key): ``key:`` and 16 hex digits of its SHA-256."""
    return "key:" + hashlib.sha256(secret.encode("utf-8")).hexdigest()[:16]


class Keys:
    """The names under ``prefix`` (default ``bnproxy``); all keys of one
    fleet share the prefix, so one Redis database can hold several fleets."""

    def __init__(self, prefix: str = "bnproxy") -> None:
        self.prefix = prefix
        self.bans = f"{prefix}:bans"              # hash egress|scope -> json
        self.ban_channel = f"{prefix}:bans"       # pub/sub channel
        self.ledger = f"{prefix}:ledger"          # hash client|metric -> int
        self.instances = f"{prefix}:instances"    # zset id -> last heartbeat (ms)

    def window(self, egress: str, pool: str, window_start: int) -> str:
        return f"{self.prefix}:w:{egress}{SEP}{pool}{SEP}{int(window_start)}"

    @staticmethod
    def field(egress: str, scope: str) -> str:
        return f"{egress}{SEP}{scope}"

    @staticmethod
    def split(field: str) -> tuple[str, str]:
        egress, _, scope = field.partition(SEP)
        return egress, scope
