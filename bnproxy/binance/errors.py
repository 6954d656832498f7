"""Errors in Binance's body shape, for answers the proxy makes itself."""

from __future__ import annotations

import orjson

# Codes the proxy uses. Binance's own, where one fits.
UNKNOWN = -1000
DISCONNECTED = -1001
TOO_MANY_REQUESTS = -1003
TIMEOUT = -1007
UNAUTHORIZED = -1002
ILLEGAL_CHARS = -1100
# UNREAD_PARAMETERS ("not all sent parameters were read"): what a body over
# the proxy's size limit (413) answers, since it is not read.
UNREAD_PARAMETERS = -1104
# A 429 with this code is the account's unfilled-order count (per account,
# FACTS.md §1): not the IP's request weight.
TOO_MANY_ORDERS = -1015


def error_body(code: int, msg: str) -> bytes:
    """``{"code": code, "msg": msg}`` as Binance writes it."""
    return orjson.dumps({"code": code, "msg": msg})
