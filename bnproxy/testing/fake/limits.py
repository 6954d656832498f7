"""Binance's per-IP request-weight limit and its escalating bans."""

from __future__ import annotations

import attrs

BAN_BASE_S = 120
BAN_MAX_S = 3 * 86400


@attrs.define
class IPState:
    window: int = -1  # minute number
    used: int = 0
    limited_in_window: bool = False
    ban_until_ms: int = 0
    bans: int = 0


class WeightLimiter:
    """One weight pool (a market) with fixed one-minute windows.

    Over the limit: 429 with Retry-After (seconds to the next window). A
    request in the same window after a 429 is banned: 418, first for 2
    minutes, doubling per ban up to 3 days (times ``ban_scale`` for tests).
    """

    def __init__(self, limit: int, ban_scale: float = 1.0) -> None:
        self.limit = limit
        self.ban_scale = ban_scale
        self.ips: dict[str, IPState] = {}

    def state(self, ip: str, now_ms: int) -> IPState:
        st = self.ips.setdefault(ip, IPState())
        window = now_ms // 60_000
        if st.window != window:
            st.window = window
            st.used = 0
            st.limited_in_window = False
        return st

    def used(self, ip: str, now_ms: int) -> int:
        return self.state(ip, now_ms).used

    def ban(self, ip: str, now_ms: int, seconds: float | None = None) -> int:
        st = self.state(ip, now_ms)
        if seconds is None:
            seconds = min(BAN_MAX_S, BAN_BASE_S * 2 ** st.bans) * self.ban_scale
        st.bans += 1
        st.ban_until_ms = now_ms + int(seconds * 1000)
        return st.ban_until_ms

    def check(self, ip: str, now_ms: int, weight: int) -> tuple[int, int]:
        """(status, retry_after_s or ban_until_ms). status 200 charges the weight."""
        st = self.state(ip, now_ms)
        if st.ban_until_ms > now_ms:
            return 418, st.ban_until_ms
        if st.limited_in_window:
            return 418, self.ban(ip, now_ms)
        if st.used + weight > self.limit:
            st.limited_in_window = True
            retry = (st.window + 1) * 60 - now_ms // 1000
            return 429, max(1, retry)
        st.used += weight
        return 200, 0
