"""Test keys and Binance's request authentication: HMAC-SHA256 signatures
and the timestamp/recvWindow rule of SIGNED endpoints."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

DEFAULT_KEYS = {"bnproxy-test-key": "bnproxy-test-secret"}


class AuthError(Exception):
    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def split_signature(raw: bytes) -> tuple[bytes, bytes | None]:
    """(payload without the signature parameter, signature)."""
    if not raw:
        return raw, None
    parts = raw.split(b"&")
    kept, sig = [], None
    for part in parts:
        if part.startswith(b"signature="):
            sig = part[len(b"signature="):]
        else:
            kept.append(part)
    return b"&".join(kept), sig


def verify_signature(secret: str, query: bytes, body: bytes) -> None:
    """Binance's rule: HMAC-SHA256 (hex, case-insensitive) over the query
    string concatenated with the body, without the ``signature`` parameter."""
    q, sig_q = split_signature(query)
    b, sig_b = split_signature(body)
    sig = sig_q or sig_b
    if sig is None:
        raise AuthError(400, -1102, "Mandatory parameter 'signature' was not sent, "
                                    "was empty/null, or malformed.")
    expected = hmac.new(secret.encode(), q + b, hashlib.sha256).hexdigest().encode()
    if not hmac.compare_digest(expected, sig.lower()):
        raise AuthError(400, -1022, "Signature for this request is not valid.")


def check_timestamp(params: Mapping[str, str], server_ms: int) -> None:
    raw = params.get("timestamp")
    try:
        ts = int(raw) if raw is not None else None
    except ValueError:
        ts = None
    if ts is None:
        raise AuthError(400, -1102, "Mandatory parameter 'timestamp' was not sent, "
                                    "was empty/null, or malformed.")
    if ts > 10 ** 14:  # microseconds
        ts //= 1000
    try:
        window = int(float(params.get("recvWindow", "5000")))
    except ValueError:
        window = -1
    if not 0 < window <= 60000:
        raise AuthError(400, -1131, "recvWindow must be less than 60000")
    if ts >= server_ms + 1000 or server_ms - ts > window:
        raise AuthError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
