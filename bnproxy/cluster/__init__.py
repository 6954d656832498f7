"""State shared by bnproxy instances: weight budgets, bans, the client ledger
and heartbeats (``ISharedState``), in Redis or in-process."""
