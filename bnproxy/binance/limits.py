"""Binance's request-weight limits and ban signals, once (FACTS.md §1.6-1.7
and the status table of §1).

The per-market ``/api``-style limits (6,000 on spot, 2,400 on the futures
hosts) are ``Market.weight_limit`` in ``markets.py``; ``/sapi`` is governed
per endpoint, by the numbers below.
"""

from __future__ import annotations

import re

WEIGHT_WINDOW = 60.0  # seconds: every weight limit the proxy governs is per minute

# /api, /fapi, /dapi, ...: one pool per IP, reported in this header.
USED_WEIGHT_HEADER = b"x-mbx-used-weight-1m"
ORDER_COUNT_PREFIX = b"x-mbx-order-count-"

# /sapi: each endpoint is its own pool. IP-limited endpoints: 12,000 per
# minute each; UID-limited ones: 180,000 per minute each (per account). Each
# answer reports the endpoint's use in one of these headers. Over the limit
# is always 429: "the 418 IP-ban escalation does not apply".
SAPI_PREFIX = "/sapi/"
SAPI_MARKET = "spot"  # /sapi exists on the spot host only (api.binance.com)
SAPI_IP_LIMIT = 12_000
SAPI_UID_LIMIT = 180_000
SAPI_IP_WEIGHT_HEADER = b"x-sapi-used-ip-weight-1m"
SAPI_UID_WEIGHT_HEADER = b"x-sapi-used-uid-weight-1m"
# Every header that reports the IP's (or account's) use right now: a stored
# answer replayed later must not carry one (it would be stale).
USAGE_HEADER_PREFIXES = (b"x-mbx-used-weight", b"x-sapi-used-")

# Ban signals. 429: a limit was crossed (that pool); 418: the IP is banned
# (the whole host). Both carry Retry-After in seconds; the body of a 418 says
# "IP banned until <epoch ms>". Repeat bans grow from 2 minutes to 3 days.
RATE_LIMITED = 429
IP_BANNED = 418
BAN_STATUSES = (RATE_LIMITED, IP_BANNED)
FIRST_IP_BAN = 120.0
LONGEST_BAN = 3 * 86_400.0
# A ban heard from another instance (Redis) ending later than this after now
# cannot be Binance's: it is refused as malformed (the margin covers clock
# skew between hosts and a ban's time in flight).
LONGEST_BAN_HEARD = LONGEST_BAN + 600.0
# Binance counts a 418 as a repeat of an earlier IP ban for a while after
# that one ended (the bans grow from 2 minutes to 3 days); a day is kept.
REPEAT_BAN_MEMORY = 86_400.0
BANNED_UNTIL = re.compile(rb"banned until (\d+)")
