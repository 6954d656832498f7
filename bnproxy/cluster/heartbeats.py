"""Heartbeats: every ``heartbeat_interval`` seconds each instance puts its
id in the sorted set ``PREFIX:instances`` scored by Redis's own clock; live
instances are the ids seen within ``heartbeat_ttl`` (at least
``min_instances``: what the fallback divides the budget by)."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from bnproxy.cluster import validate
from bnproxy.cluster.connection import Connection
from bnproxy.cluster.keys import Keys


class Heartbeats:
    def __init__(self, conn: Connection, keys: Keys, instance_id: str, ttl: float,
                 min_instances: int) -> None:
        self._conn = conn
        self.keys = keys
        self.instance_id = instance_id
        self._ttl_ms = int(ttl * 1000)
        self.min_instances = max(1, min_instances)
        self.live = self.min_instances

    def beat(self) -> Deferred:
        """Heartbeat; fires with the live instances."""
        def seen(count) -> int:
            self.live = max(self.min_instances, validate.count(count) or 1)
            return self.live

        return self._conn.script("heartbeat", [self.keys.instances],
                                 [self.instance_id, self._ttl_ms],
                                 self._conn.background_deadline).addCallback(seen)

    def leave(self) -> Deferred:
        """Leave the set (at stop)."""
        return self._conn.call(lambda p: p.execute_command(
            "ZREM", self.keys.instances, self.instance_id), self._conn.background_deadline)
