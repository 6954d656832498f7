"""The client ledger in Redis: additions summed in memory and written once
a second (one script call with HINCRBYs on ``PREFIX:ledger``); the fleet's
table read back with every entry validated."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from bnproxy.cluster import validate
from bnproxy.cluster.connection import Connection
from bnproxy.cluster.errors import SharedStateUnavailableError
from bnproxy.cluster.keys import Keys

METRICS = ("weight", "requests", "rejected")


class LedgerBuffer:
    """Per-client counters not yet written to the store."""

    def __init__(self) -> None:
        self.pending: dict[str, list[int]] = {}

    def add(self, client: str, weight: int, requests: int, rejected: int) -> None:
        row = self.pending.setdefault(client, [0, 0, 0])
        row[0] += weight
        row[1] += requests
        row[2] += rejected

    def take(self) -> dict[str, list[int]]:
        pending, self.pending = self.pending, {}
        return pending

    def put_back(self, taken: dict[str, list[int]]) -> None:
        for client, (w, n, r) in taken.items():
            self.add(client, w, n, r)

    def merged_into(self, table: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        for client, row in self.pending.items():
            entry = table.setdefault(client, dict.fromkeys(METRICS, 0))
            for name, value in zip(METRICS, row):
                entry[name] = entry.get(name, 0) + value
        return table


class Ledger:
    """The ledger's calls of ``ISharedState`` (``add``, ``clients``) and
    ``flush`` (every ``ledger_interval``, and at stop)."""

    def __init__(self, conn: Connection, keys: Keys, rejected: validate.Rejected) -> None:
        self._conn = conn
        self.keys = keys
        self._rejected = rejected
        self.buffer = LedgerBuffer()

    def add(self, client: str, weight: int, requests: int, rejected: int) -> None:
        self.buffer.add(client, weight, requests, rejected)

    def flush(self) -> Deferred:
        if not self._conn.ok() or not self.buffer.pending:
            return succeed(None)
        taken = self.buffer.take()
        args: list = []
        for client, row in taken.items():
            for metric, value in zip(METRICS, row):
                if value:
                    args += [f"{client}|{metric}", int(value)]
        if not args:
            return succeed(None)

        def failed(f: Failure) -> None:
            f.trap(SharedStateUnavailableError)
            self.buffer.put_back(taken)

        return self._conn.script("ledger", [self.keys.ledger], args,
                                 self._conn.background_deadline).addCallbacks(
            lambda _: None, failed)

    def clients(self) -> Deferred:
        def table(flat) -> dict:
            out: dict[str, dict[str, int]] = {}
            for field, value in validate.pairs(flat):
                client, _, metric = str(field).rpartition("|")
                n = validate.count(value)
                if metric not in METRICS or not client or n is None:
                    self._rejected("ledger entry", f"{self.keys.ledger} {str(field)[:100]}")
                    continue
                out.setdefault(client, dict.fromkeys(METRICS, 0))[metric] = n
            return self.buffer.merged_into(out)

        if not self._conn.ok():
            return defer.fail(SharedStateUnavailableError(
                f"the fleet's ledger is in {self._conn.url}, which is not answering"))
        return self._conn.script("read_hash", [self.keys.ledger], [],
                                 self._conn.background_deadline).addCallback(table)
