"""``python -m bnproxy status URL``: the proxy's verdict and summary in a
terminal, and a monitoring check.

Reads ``URL/dashboard/state`` (the proxy's base URL, or its ``/dashboard``
page's; admin-only, so run it from an address the admin allowlist admits, e.g.
over SSH on the host) and prints the verdict with its problems, weight per
pool, bans, asked vs spent, bots, cache and streams, latency and the last
errors. ``--json`` prints the document (as JSON, every control character
escaped); ``--watch N`` repeats every N seconds until interrupted, riding
through restarts (a failed read is one line, and the next try follows).

Exit codes (the Nagios plugin convention): 0 ok, 1 degraded, 2 banned, not
ready or unreachable, 3 an answer that is not a state document. With
``--watch``: the last check's.

What it reads is untrusted: the answer is read up to ``MAX_BYTES`` within
one total deadline (``--timeout``: connecting, headers and body together),
parsed strictly (no NaN or infinities; nesting bounded by the parser), and every string
printed has its control characters escaped (no terminal escape sequence
from a bot's name or an upstream message reaches the terminal).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from io import StringIO
from typing import Any, TextIO

DESCRIPTION = ("Print a running proxy's verdict and summary (its /dashboard/state); "
               "exit 0 ok, 1 degraded, 2 banned, not ready or unreachable, 3 unknown.")

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
EXIT_CODES = {"ok": OK, "degraded": WARNING, "banned": CRITICAL, "not ready": CRITICAL}
MAX_BYTES = 8 * 1024 * 1024  # a state document is a few hundred kB at most
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]}
_CONTROL.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"})
# Bidirectional overrides and isolates reorder what the terminal shows.
_CONTROL.update({c: f"\\u{c:04x}" for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]})


class UnreadableError(Exception):
    """No answer (connection refused, deadline passed): exit 2."""


class MalformedError(Exception):
    """An answer that is not a state document: exit 3."""


def _positive(kind: Callable[[str], Any], low: float, high: float, zero: bool = False):
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (isinstance(value, int) or math.isfinite(value)) or not (
                low <= value <= high) or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(
                f"{text} is out of range ({'0 or ' if zero else ''}{low:g} to {high:g})")
        return value
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", metavar="URL", nargs="?", default="http://127.0.0.1:8080",
                        help="the proxy's base URL, or its /dashboard page's "
                             "(default: http://127.0.0.1:8080)")
    parser.add_argument("--timeout", type=_positive(float, 0.1, 600), default=5.0,
                        help="seconds for the whole read: connecting, headers and body "
                             "(default: 5)")
    parser.add_argument("--json", action="store_true", help="print the state document as JSON")
    parser.add_argument("--watch", type=_positive(float, 0.5, 86400, zero=True), default=0.0,
                        metavar="SECONDS",
                        help="repeat every SECONDS (0.5 or more) until interrupted")
    parser.add_argument("--bots", type=_positive(int, 0, 100000, zero=True), default=10,
                        help="how many bots to list, busiest first (default: 10)")


def clean(value: Any, limit: int = 300) -> str:
    """``value`` as text safe for a terminal: control characters (C0, DEL,
    C1, bidirectional overrides) escaped, at most ``limit`` characters."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    return text.translate(_CONTROL)


def state_url(url: str) -> str:
    """``URL/dashboard/state`` for a base URL or a dashboard URL."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnreadableError(f"not an http(s) URL: {clean(url)}")
    path = parts.path.rstrip("/")
    for tail in ("/dashboard/state", "/dashboard"):
        if path.endswith(tail):
            path = path[:-len(tail)]
            break
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path + "/dashboard/state",
                                    "", ""))


def fetch(url: str, timeout: float, max_bytes: int = MAX_BYTES) -> bytes:
    """The body of ``GET url``, read within ``timeout`` seconds in all (a
    watchdog closes the socket at the deadline: a server sending one byte a
    second does not hold it longer) and at most ``max_bytes`` long."""
    parts = urllib.parse.urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    try:
        conn = kind(parts.hostname or "", parts.port, timeout=timeout)
    except ValueError as e:  # a port that is not a number
        raise UnreadableError(str(e)) from None
    expired = threading.Event()

    def cut() -> None:
        expired.set()
        sock = conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
    watchdog = threading.Timer(timeout, cut)
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.request("GET", parts.path or "/", headers={"Accept": "application/json",
                                                        "Accept-Encoding": "identity"})
        answer = conn.getresponse()
        if answer.status != 200:
            raise UnreadableError(_refusal(answer.status, url))
        length = answer.getheader("content-length")
        if length and length.isdigit() and int(length) > max_bytes:
            raise MalformedError(f"an answer of {int(length)} bytes (more than {max_bytes})")
        chunks, size = [], 0
        while True:
            chunk = answer.read1(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise MalformedError(f"an answer larger than {max_bytes} bytes")
            chunks.append(chunk)
        if expired.is_set():
            raise UnreadableError(f"no complete answer within {timeout:g} s")
        return b"".join(chunks)
    except (OSError, http.client.HTTPException) as e:
        if expired.is_set():
            raise UnreadableError(f"no complete answer within {timeout:g} s") from None
        reason = e.strerror if isinstance(e, OSError) and e.strerror else (
            type(e).__name__ + (f": {e}" if str(e) else ""))
        raise UnreadableError(clean(reason)) from None
    finally:
        watchdog.cancel()
        conn.close()


def _refusal(code: int, url: str) -> str:
    if code == 403:
        return ("answered 403 (the dashboard is admin-only: ask from an address "
                "--admin-allow admits)")
    if code == 404:
        return f"answered 404 for {clean(url)} (is this a bnproxy, and its base URL?)"
    return f"answered HTTP {code}"


def parse(body: bytes) -> dict[str, Any]:
    """The state document in ``body``; ``MalformedError`` for anything else."""
    def reject(constant: str) -> Any:
        raise MalformedError(f"a non-finite number ({constant})")

    def number(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise MalformedError(f"a non-finite number ({clean(text, 40)})")
        return value
    try:
        doc = json.loads(body, parse_constant=reject, parse_float=number)
    except (ValueError, RecursionError) as e:
        if isinstance(e, MalformedError):
            raise
        raise MalformedError(f"not JSON ({clean(e, 80)})") from None
    if not isinstance(doc, dict):
        raise MalformedError(f"a JSON {type(doc).__name__}, not a state document")
    if doc.get("status") not in EXIT_CODES:
        raise MalformedError("no verdict (a status of ok, degraded, banned or not ready)")
    return doc


# -- reading fields defensively --------------------------------------------------------
def _list(doc: Any, key: str) -> list[dict]:
    value = doc.get(key) if isinstance(doc, dict) else None
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _dict(doc: Any, key: str) -> dict:
    value = doc.get(key) if isinstance(doc, dict) else None
    return value if isinstance(value, dict) else {}


def _num(value: Any, default: float | None = 0.0) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return float(value) if math.isfinite(value) else default


def _int(value: Any) -> str:
    n = _num(value, None)
    return "-" if n is None else f"{n:.0f}"


def _duration(seconds: Any) -> str:
    s = max(0, int(min(_num(seconds) or 0.0, 1e9) + 0.999))
    h, m, s = s // 3600, s % 3600 // 60, s % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _clock(t: Any) -> str:
    n = _num(t, None)
    if n is None or not 0 <= n < 1e11:
        return "?"
    return time.strftime("%H:%M:%S", time.gmtime(n))


def _pct(x: Any) -> str:
    n = _num(x, None)
    return "-" if n is None else f"{100 * n:.1f} %"


def _ms(x: Any) -> str:
    n = _num(x, None)
    return "-" if n is None else f"{1000 * n:.1f} ms"


def _table(rows: list[list[str]], out: TextIO, indent: str = "  ") -> None:
    if len(rows) < 2:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        out.write(indent + "  ".join(cells).rstrip() + "\n")


def render(state: dict[str, Any], out: TextIO, bots: int = 10) -> None:
    """The summary of one state document (every string cleaned)."""
    now = _num(state.get("time"), None) or time.time()
    status = clean(state.get("status"))
    out.write(f"bnproxy {clean(state.get('version', '?'), 40)}, up "
              f"{_duration(state.get('uptime_seconds'))} "
              f"({time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(now))} UTC): {status.upper()}\n")
    for issue in _list(state, "issues"):
        out.write(f"  {clean(issue.get('severity'), 20)} since {_clock(issue.get('since'))} UTC:"
                  f" {clean(issue.get('text'))}\n")
    for ban in _list(state, "bans"):
        egress = f" from {clean(ban['egress'], 60)}" if ban.get("egress") else ""
        out.write(f"BANNED: {clean(ban.get('pool'), 80)}{egress} for "
                  f"{_duration(ban.get('seconds_left'))} (until {_clock(ban.get('until'))} UTC):"
                  f" {clean(ban.get('cause') or '')}\n")
    out.write("\nWeight this minute\n")
    rows = [["pool", "used", "budget", "limit", "use", "queued"]]
    for p in _list(state, "pools"):
        used, budget = _num(p.get("used")) or 0.0, _num(p.get("budget"), None)
        if not (p.get("limit") or used or _num(p.get("banned_for"))):
            continue
        name = clean(p.get("pool"), 80) + (f"@{clean(p['egress'], 60)}" if p.get("egress") else "")
        rows.append([name, _int(used), _int(budget), _int(p.get("limit")),
                     _pct(used / budget) if budget else "-", _int(p.get("queued", 0))])
    _table(rows, out)
    w = _dict(state, "weight_15m")
    out.write("\nAsked by the bots vs spent upstream, last 15 min\n")
    rows = [["market", "asked", "spent", "saving", "refused"]]
    spent_by, saving_by = _dict(w, "spent"), _dict(w, "saving_percent")
    refused_by = _dict(w, "refused")
    for m, asked in _dict(w, "asked").items():
        spent, refused = spent_by.get(m, 0), refused_by.get(m, 0)
        if _num(asked) or _num(spent) or _num(refused):
            saving = _num(saving_by.get(m), None)
            rows.append([clean(m, 40), _int(asked), _int(spent),
                         "-" if saving is None else f"{saving:.1f} %", _int(refused)])
    total = _dict(w, "total")
    saving = _num(total.get("saving_percent"), None)
    rows.append(["total", _int(total.get("asked", 0)), _int(total.get("spent", 0)),
                 "-" if saving is None else f"{saving:.1f} %", _int(total.get("refused", 0))])
    _table(rows, out)
    clients = _list(state, "clients")
    out.write(f"\nBots ({len(clients)})\n")
    rows = [["bot", "req/min", "asked/min", "spent/min", "req 15 min", "streams", "cache",
             "upstream", "refused", "last seen"]]
    for c in clients[:bots]:
        seen = _num(c.get("last_seen"), None)
        minute, quarter = _dict(c, "last_minute"), _dict(c, "last_15m")
        answered, refused = _dict(quarter, "answered"), _dict(quarter, "refused")
        rows.append([clean(c.get("client"), 64), _int(minute.get("requests")),
                     _int(minute.get("asked")), _int(minute.get("spent")),
                     _int(quarter.get("requests")),
                     *(_int(answered.get(k)) for k in ("stream", "cache", "upstream")),
                     _int(sum(_num(v) or 0.0 for v in refused.values())),
                     "-" if seen is None else f"{max(0.0, now - seen):.0f} s ago"])
    _table(rows, out)
    hits = _dict(state, "hit_ratio_15m")
    answers = _dict(_dict(state, "answers"), "last_15m")
    out.write("\nAnswers, last 15 min: " + ", ".join(
        f"{s} {_int(answers.get(s, 0))}" for s in ("stream", "cache", "upstream", "local"))
        + f"; cache {_pct(hits.get('cache'))}, streams {_pct(hits.get('stream'))}\n")
    cache = _dict(state, "cache")
    if cache:
        out.write(f"Cache: {_int(cache.get('entries', 0))} entries, "
                  f"{_int(cache.get('bytes', 0))} bytes\n")
    markets = _dict(_dict(state, "streams"), "markets")
    rows = [["streams", "connections", "open", "subscriptions", "stale", "reconnects"]]
    for m, s in markets.items():
        if isinstance(s, dict):
            rows.append([clean(m, 40), *(_int(s.get(k)) for k in (
                "connections", "open", "streams", "stale", "reconnects"))])
    _table(rows, out)
    latency = _dict(state, "latency")
    out.write(f"Upstream latency (last 10 s): p50 {_ms(latency.get('p50'))}, "
              f"p99 {_ms(latency.get('p99'))}\n")
    if state.get("instances"):
        out.write(f"\nInstances: {clean(json.dumps(state['instances']), 2000)}\n")
    errors = _list(state, "errors")
    if errors:
        out.write(f"\nLast errors ({len(errors)})\n")
        for e in errors[:10]:
            q = f"?{clean(e['query'], 200)}" if e.get("query") else ""
            out.write(f"  {_clock(e.get('time'))} {clean(e.get('client'), 64)} "
                      f"{clean(e.get('method'), 10)} /{clean(e.get('market'), 20)}"
                      f"{clean(e.get('path'), 200)}{q} {_int(e.get('status'))} "
                      f"{clean(e.get('source'), 20)} {clean(e.get('msg', ''))}\n")


def shown(url: str) -> str:
    """``url`` as printed: without a ``user:password@`` part."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return clean(url)
    return clean(urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])))


def check(args: argparse.Namespace, out: TextIO) -> int:
    """One read and print; the exit code."""
    try:
        url = state_url(args.url)
        state = parse(fetch(url, args.timeout))
        text = StringIO()  # the whole summary first: a malformed field prints nothing
        if args.json:
            text.write(json.dumps(state, indent=2, ensure_ascii=True) + "\n")
        else:
            render(state, text, args.bots)
    except UnreadableError as e:
        print(f"bnproxy status: CRITICAL: cannot read {shown(args.url)}: {e}", file=sys.stderr)
        return CRITICAL
    except MalformedError as e:
        print(f"bnproxy status: UNKNOWN: {shown(args.url)} sent {e}", file=sys.stderr)
        return UNKNOWN
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError,
            OverflowError) as e:
        print(f"bnproxy status: UNKNOWN: {shown(args.url)} sent a malformed state document "
              f"({type(e).__name__})", file=sys.stderr)
        return UNKNOWN
    out.write(text.getvalue())
    return EXIT_CODES[state["status"]]


def run(args: argparse.Namespace, parser: argparse.ArgumentParser, out: TextIO = sys.stdout
        ) -> int:
    code = UNKNOWN
    try:
        while True:
            code = check(args, out)
            if not args.watch:
                return code
            out.write("\n")
            out.flush()
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return code
    except BrokenPipeError:  # piped into head: the reader has gone, quietly
        try:  # and no "Exception ignored" when the interpreter flushes at exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return code
