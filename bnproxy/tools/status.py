"""``python -m bnproxy status URL``: the dashboard's summary in a terminal.

Reads ``URL/dashboard/state`` (the proxy's base URL; admin-only, so run it
from an address the admin allowlist admits, e.g. over SSH on the host) and
prints weight per pool, bans, asked vs spent, bots, cache and streams,
latency and the last errors. ``--json`` prints the document as it came;
``--watch N`` repeats every N seconds until interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any, TextIO

DESCRIPTION = "Print what a running proxy is doing (its /dashboard/state) in a terminal."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", metavar="URL", nargs="?", default="http://127.0.0.1:8080",
                        help="the proxy's base URL (default: http://127.0.0.1:8080)")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="seconds to wait for the answer (default: 5)")
    parser.add_argument("--json", action="store_true", help="print the state document as JSON")
    parser.add_argument("--watch", type=float, default=0.0, metavar="SECONDS",
                        help="repeat every SECONDS until interrupted")
    parser.add_argument("--bots", type=int, default=10,
                        help="how many bots to list, busiest first (default: 10)")


def fetch_state(url: str, timeout: float) -> dict[str, Any]:
    """The state document of the proxy at ``url`` (its base URL)."""
    target = url.rstrip("/")
    if not target.endswith("/dashboard/state"):
        target += "/dashboard/state"
    with urllib.request.urlopen(target, timeout=timeout) as answer:
        return json.loads(answer.read())


def _duration(seconds: float) -> str:
    s = max(0, int(seconds + 0.999))
    h, m, s = s // 3600, s % 3600 // 60, s % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{1000 * x:.1f} ms"


def _table(rows: list[list[str]], out: TextIO, indent: str = "  ") -> None:
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        out.write(indent + "  ".join(cells).rstrip() + "\n")


def render(state: dict[str, Any], out: TextIO, bots: int = 10) -> None:
    """The summary of one state document."""
    now = state.get("time", time.time())
    out.write(f"bnproxy {state.get('version', '?')}, up {_duration(state.get('uptime_seconds', 0))}"
              f" ({time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(now))} UTC)\n")
    for ban in state.get("bans", []):
        egress = f" from {ban['egress']}" if ban.get("egress") else ""
        out.write(f"BANNED: {ban['pool']}{egress} for {_duration(ban['seconds_left'])}: "
                  f"{ban.get('cause') or ''}\n")
    out.write("\nWeight this minute\n")
    rows = [["pool", "used", "budget", "limit", "use", "queued"]]
    for p in state.get("pools", []):
        if not (p.get("limit") or p.get("used") or p.get("banned_for")):
            continue
        name = p["pool"] + (f"@{p['egress']}" if p.get("egress") else "")
        budget = p.get("budget")
        rows.append([name, str(p["used"]), "-" if budget is None else str(budget),
                     "-" if p.get("limit") is None else str(p["limit"]),
                     _pct(p["used"] / budget) if budget else "-", str(p.get("queued", 0))])
    _table(rows, out)
    w = state.get("weight_15m") or {}
    out.write("\nAsked by the bots vs spent upstream, last 15 min\n")
    rows = [["market", "asked", "spent", "saving"]]
    for m, asked in (w.get("asked") or {}).items():
        spent = w.get("spent", {}).get(m, 0)
        if asked or spent:
            saving = w.get("saving_percent", {}).get(m)
            rows.append([m, str(asked), str(spent), "-" if saving is None else f"{saving} %"])
    total = w.get("total") or {}
    saving = total.get("saving_percent")
    rows.append(["total", str(total.get("asked", 0)), str(total.get("spent", 0)),
                 "-" if saving is None else f"{saving} %"])
    _table(rows, out)
    clients = state.get("clients", [])
    out.write(f"\nBots ({len(clients)})\n")
    rows = [["bot", "requests", "weight", "local 429s", "last seen"]]
    for c in clients[:bots]:
        rows.append([c["client"], str(c["requests"]), str(c["weight"]), str(c["refused"]),
                     f"{max(0, now - c['last_seen']):.0f} s ago"])
    _table(rows, out)
    hits = state.get("hit_ratio_15m") or {}
    answers = (state.get("answers") or {}).get("last_15m") or {}
    out.write("\nAnswers, last 15 min: " + ", ".join(
        f"{s} {answers.get(s, 0)}" for s in ("stream", "cache", "upstream", "local"))
        + f"; cache {_pct(hits.get('cache'))}, streams {_pct(hits.get('stream'))}\n")
    cache = state.get("cache")
    if cache:
        out.write(f"Cache: {cache.get('entries', 0)} entries, {cache.get('bytes', 0)} bytes, "
                  f"hit ratio {_pct(cache.get('hit_ratio'))} since start\n")
    streams = state.get("streams")
    if streams:
        rows = [["streams", "connections", "open", "subscriptions", "stale", "reconnects"]]
        for m, s in streams.get("markets", {}).items():
            rows.append([m, str(s["connections"]), str(s["open"]), str(s["streams"]),
                         str(s["stale"]), str(s["reconnects"])])
        _table(rows, out)
    latency = state.get("latency") or {}
    out.write(f"Upstream latency (last 10 s): p50 {_ms(latency.get('p50'))}, "
              f"p99 {_ms(latency.get('p99'))}\n")
    if state.get("instances"):
        out.write(f"\nInstances: {json.dumps(state['instances'])}\n")
    errors = state.get("errors", [])
    if errors:
        out.write(f"\nLast errors ({len(errors)})\n")
        for e in errors[:10]:
            q = f"?{e['query']}" if e.get("query") else ""
            stamp = time.strftime("%H:%M:%S", time.gmtime(e["time"]))
            out.write(f"  {stamp} {e['client']} {e['method']} /{e['market']}{e['path']}{q} "
                      f"{e['status']} {e['source']} {e.get('msg', '')}\n")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser, out: TextIO = sys.stdout
        ) -> int:
    while True:
        try:
            state = fetch_state(args.url, args.timeout)
        except urllib.error.HTTPError as e:
            print(f"bnproxy status: {args.url} answered {e.code} "
                  f"(the dashboard is admin-only: ask from an allowed address)", file=sys.stderr)
            return 1
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            print(f"bnproxy status: cannot read {args.url}: {reason}", file=sys.stderr)
            return 1
        if args.json:
            out.write(json.dumps(state, indent=2) + "\n")
        else:
            render(state, out, args.bots)
        if not args.watch:
            return 0
        out.flush()
        try:
            time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0
        out.write("\n")
