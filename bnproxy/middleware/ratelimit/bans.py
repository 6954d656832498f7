"""The ban store: which (egress address, scope) Binance silenced, until when,
kept in a durable state file.

A scope is a weight pool (``spot``, ``sapi:/sapi/v1/…``: a 429 silences the
pool it came from) or a whole host (``host:api.binance.com``: a 418 bans the
IP on that host, every pool of it). The file is written atomically
(temporary file, fsync, rename, fsync of the directory). At start a state
file that cannot be read as ban state stops start-up with one line naming the
file and the way out: a ban is never silently forgotten.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from collections.abc import Callable, Iterable

import attrs
from twisted.logger import Logger

from bnproxy.binance.limits import (
    BANNED_UNTIL,
    FIRST_IP_BAN,
    IP_BANNED,
    LONGEST_BAN,
    LONGEST_BAN_HEARD,
    RATE_LIMITED,
    REPEAT_BAN_MEMORY,
    WEIGHT_WINDOW,
)
from bnproxy.config.reader import ConfigError
from bnproxy.statefile import write_atomically

_log = Logger(namespace="bnproxy.ratelimit")

FORMAT = "bnproxy-bans"
VERSION = 2
HOST = "host:"
WAY_OUT = ("set discard_ban_state = true in [middleware.ratelimit] "
           "(--discard-ban-state) to start without it, or repair or remove the file")


@attrs.frozen
class Ban:
    """Nothing reaches ``scope`` from ``egress`` until ``until`` (clock
    seconds). ``strikes`` counts 418s in a row (the default doubles)."""

    egress: str
    scope: str
    until: float
    status: int
    strikes: int = 1

    @property
    def host_wide(self) -> bool:
        return self.scope.startswith(HOST)


def _retry_after(value: bytes | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0 or seconds > LONGEST_BAN:
        return None
    return seconds


def ban_until(status: int, retry_after: bytes | None, body: bytes, now: float, wall: float,
              strikes: int) -> float:
    """When a ban signalled by a 429/418 ends (clock seconds, ``now`` based).

    ``Retry-After`` if usable (a finite number of seconds, 0 to 3 days); else
    the body's "banned until <epoch ms>" (``wall`` is the wall time at
    ``now``); else 429: the end of the current minute window plus a second,
    418: 2 minutes doubling with each 418 in a row (``strikes`` counts this
    one). Never shorter than a second, never longer than 3 days.
    """
    seconds = _retry_after(retry_after)
    if seconds is None:
        m = BANNED_UNTIL.search(body)
        if m:
            left = int(m.group(1)) / 1000 - wall
            if 0 < left <= LONGEST_BAN:
                seconds = left
    if seconds is None:
        if status == RATE_LIMITED:
            seconds = (math.floor(now / WEIGHT_WINDOW) + 1) * WEIGHT_WINDOW + 1 - now
        else:
            seconds = FIRST_IP_BAN * 2 ** min(max(0, strikes - 1), 20)
    return now + min(LONGEST_BAN, max(1.0, seconds))


class BanStore:
    """The bans known to this process, optionally mirrored to ``path``.

    ``start`` records a ban (keeping the later end) and writes the file;
    ``in_force`` answers which ban, if any, silences a request. Ended bans
    are remembered a day for counting repeat 418s.
    """

    def __init__(self, clock, path: str | None = None) -> None:
        self._clock = clock
        self.path = path
        self._bans: dict[tuple[str, str], Ban] = {}

    # -- queries --------------------------------------------------------------------
    def all(self) -> list[Ban]:
        return list(self._bans.values())

    def in_force(self, egress: str, scopes: Iterable[str], now: float) -> Ban | None:
        """The ban that ends last among those on ``scopes`` from ``egress``."""
        if not self._bans:  # none ever (the common case): no lookups per request
            return None
        found = None
        for scope in scopes:
            ban = self._bans.get((egress, scope))
            if ban is not None and ban.until > now and (found is None or ban.until > found.until):
                found = ban
        return found

    def strikes(self, egress: str, scope: str, status: int, now: float) -> int:
        """The strike number a ban with ``status`` on ``scope`` would be: a
        418 after the previous 418 ban ended (within a day) is the next
        strike; more 418s while it is in force (requests that were in flight
        when it began) are the same ban."""
        previous = self._bans.get((egress, scope))
        if status != IP_BANNED or previous is None or previous.status != IP_BANNED:
            return 1
        if previous.until > now:
            return previous.strikes
        return previous.strikes + 1 if previous.until + REPEAT_BAN_MEMORY > now else 1

    # -- changes --------------------------------------------------------------------
    def start(self, ban: Ban, save: bool = True) -> Ban:
        """Record ``ban``; a ban already in force that ends later wins the
        end time. Returns the ban now recorded. ``save=False``: the caller
        calls ``save()`` itself (after telling the fleet: the file's fsync
        can take milliseconds)."""
        key = (ban.egress, ban.scope)
        previous = self._bans.get(key)
        if not math.isfinite(ban.until):  # never Binance's: the longest it gives
            ban = attrs.evolve(ban, until=self._clock.seconds() + LONGEST_BAN_HEARD)
        if previous is not None and previous.until > ban.until:
            ban = attrs.evolve(ban, until=previous.until,
                               status=max(previous.status, ban.status))
        self._bans[key] = ban
        if save:
            self.save()
        return ban

    # -- the file -----------------------------------------------------------------
    def check_writable(self) -> None:
        """Raise ``ConfigError`` unless the state file's directory takes a file."""
        if self.path is None:
            return
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".bans-check-")
            os.close(fd)
            os.unlink(tmp)
        except OSError as e:
            raise ConfigError(f"ban state directory {directory} is not writable "
                              f"({e.strerror or e}); a Binance ban could not be kept "
                              "across restarts: fix the directory or set "
                              "[middleware.ratelimit] state_file") from None

    def save(self) -> None:
        """Write the bans worth remembering, atomically; log (never raise) on
        failure: the bans stay in force in memory."""
        if self.path is None:
            return
        now = self._clock.seconds()
        keep = [attrs.asdict(b) for b in self._bans.values()
                if math.isfinite(b.until) and b.until + REPEAT_BAN_MEMORY > now]
        data = json.dumps({"format": FORMAT, "version": VERSION, "bans": keep},
                          allow_nan=False).encode()
        try:
            write_atomically(self.path, data)
        except OSError as e:
            _log.error("cannot write ban state {path}: {e}; the bans stay in force in "
                       "memory only", path=self.path, e=e)

    def load(self, discard: bool = False,
             upgrade: Callable[[str, int], str] = lambda pool, status: pool) -> None:
        """Read the state file, if there is one.

        Raises ``ConfigError`` (one line: the file, what is wrong, the way
        out) when it cannot be read as ban state, unless ``discard``: then
        its bans are dropped, loudly. ``upgrade(pool, status)`` maps the
        scope of a version-1 file's entries (``{pool: {until, status}}``).
        """
        if self.path is None or not os.path.lexists(self.path):
            return
        try:
            bans = self._read(upgrade)
        except _UnreadableError as e:
            if not discard:
                raise ConfigError(f"ban state file {self.path} is {e}: it may hold a Binance "
                                  f"ban; {WAY_OUT}") from None
            _log.warn("discarding unreadable ban state {path} ({e}) as discard_ban_state "
                      "says", path=self.path, e=str(e))
            self._discard()
            return
        if discard:
            if bans:
                _log.warn("discarding {n} ban(s) in {path} as discard_ban_state says",
                          n=len(bans), path=self.path)
            self._discard()
            return
        now = self._clock.seconds()
        for ban in bans:
            if ban.until > now + LONGEST_BAN_HEARD:  # never Binance's: its longest
                _log.warn("a ban on {scope} ({egress}) in {path} ends later than any "
                          "Binance gives; kept for {seconds:.0f} s", scope=ban.scope,
                          egress=ban.egress, path=self.path, seconds=LONGEST_BAN)
                ban = attrs.evolve(ban, until=now + LONGEST_BAN)
            self._bans[(ban.egress, ban.scope)] = ban
            if ban.until > now:
                _log.warn("Binance ban on {scope} ({egress}) restored from {path}: "
                          "{seconds:.0f} s left", scope=ban.scope, egress=ban.egress,
                          path=self.path, seconds=ban.until - now)

    def _discard(self) -> None:
        self._bans.clear()
        self.save()

    def _read(self, upgrade: Callable[[str, int], str]) -> list[Ban]:
        raw = _read_bounded(self.path)  # type: ignore[arg-type]
        if not raw.strip():
            raise _UnreadableError("empty")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise _UnreadableError("truncated or garbled (not JSON)") from None
        if not isinstance(data, dict):
            raise _UnreadableError(f"mis-shaped (a JSON {type(data).__name__}, not an object)")
        if "format" not in data:
            return [_checked(upgrade(pool, _status(entry)), "default", entry)
                    for pool, entry in data.items()]
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise _UnreadableError(f"of an unknown format ({data.get('format')!r} version "
                              f"{data.get('version')!r})")
        entries = data.get("bans")
        if not isinstance(entries, list):
            raise _UnreadableError("mis-shaped (no list of bans)")
        out = []
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("scope"), str) \
                    or not isinstance(entry.get("egress"), str):
                raise _UnreadableError("mis-shaped (a ban without scope or egress)")
            out.append(_checked(entry["scope"], entry["egress"], entry))
        return out


class _UnreadableError(Exception):
    pass


MAX_STATE_BYTES = 1 << 20  # a state file holds a few bans: far less than this


def _read_bounded(path: str) -> bytes:
    """The file's bytes, if it is a regular file of at most MAX_STATE_BYTES
    (opened without blocking: a FIFO in its place must not hang start-up)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise _UnreadableError(f"unreadable ({e.strerror or e})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                    else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                    else "a socket" if stat.S_ISSOCK(mode) else "not a file")
            raise _UnreadableError(f"unreadable (not a regular file: {kind})")
        chunks, size = [], 0
        while size <= MAX_STATE_BYTES:
            chunk = os.read(fd, MAX_STATE_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise _UnreadableError(f"unreadable ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if size > MAX_STATE_BYTES:
        raise _UnreadableError(f"too large (over {MAX_STATE_BYTES} bytes)")
    return b"".join(chunks)


def _status(entry: object) -> int:
    status = entry.get("status", IP_BANNED) if isinstance(entry, dict) else None
    if not isinstance(status, int) or status not in (IP_BANNED, RATE_LIMITED):
        raise _UnreadableError("mis-shaped (a ban status that is not 418 or 429)")
    return status


def _checked(scope: str, egress: str, entry: object) -> Ban:
    if not isinstance(entry, dict):
        raise _UnreadableError("mis-shaped (a ban that is not an object)")
    until = entry.get("until")
    if isinstance(until, bool) or not isinstance(until, int | float) \
            or not math.isfinite(until):
        raise _UnreadableError("mis-shaped (a ban without a finite 'until')")
    strikes = entry.get("strikes", 1)
    if isinstance(strikes, bool) or not isinstance(strikes, int) or strikes < 1:
        raise _UnreadableError("mis-shaped (a ban whose 'strikes' is not a positive integer)")
    return Ban(egress, scope, float(until), _status(entry), strikes)
