"""Everything bnproxy knows about Binance lives in this package: markets,
endpoints, weights and error shapes. Middlewares ask it; none keeps its own
table."""
