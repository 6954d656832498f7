"""The page's first paint, rendered by the proxy from the state document.

``/dashboard`` is served with the verdict, its problems, the bans, the pools,
the saving table, the bots and the last errors already in the HTML (readable
with JavaScript off, and at once before the live feed connects); the page's
script then takes over the same elements. Every value is HTML-escaped.

The template (``index.html``) marks where each part goes with a comment
(``<!--pools-->``; ``<!--verdict-->…<!--/verdict-->`` for a part replaced
whole); served as it is, it is the empty page.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

_EPOCH_MS = re.compile(r"\b1\d{12}\b")  # epoch milliseconds in a Binance message


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def clock(t: Any) -> str:
    """``HH:MM:SS UTC`` of epoch seconds ``t``."""
    try:
        return time.strftime("%H:%M:%S", time.gmtime(float(t))) + " UTC"
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def readable_times(text: str) -> str:
    """Epoch milliseconds in ``text`` (``banned until 1764300088200``) as
    ``YYYY-MM-DD HH:MM:SS UTC``."""
    return _EPOCH_MS.sub(lambda m: time.strftime(
        "%Y-%m-%d %H:%M:%S UTC", time.gmtime(int(m.group()) / 1000)), text)


def duration(seconds: Any) -> str:
    s = max(0, int(float(seconds or 0) + 0.999))
    h, m, s = s // 3600, s % 3600 // 60, s % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _num(n: Any) -> str:
    if n is None:
        return "–"
    if isinstance(n, float) and not n.is_integer():
        return f"{n:.1f}"
    return str(int(n)) if isinstance(n, (int, float)) else _e(n)


def _status_class(status: Any) -> str:
    return re.sub(r"[^a-z]+", "-", str(status or ""))


def _verdict(doc: Mapping[str, Any]) -> str:
    status = doc.get("status") or "?"
    return f'<span id="verdict" class="verdict {_status_class(status)}">{_e(status)}</span>'


def _link(doc: Mapping[str, Any]) -> str:
    return f'<span id="link" class="link down">as of {_e(clock(doc.get("time")))}</span>'


def _problems(doc: Mapping[str, Any]) -> str:
    return "".join(
        f'<div class="problem {_status_class(p.get("severity"))}" data-name="{_e(p.get("name"))}">'
        f'{_e(p.get("severity"))}: {_e(p.get("text"))}'
        f'<span class="since">since {_e(clock(p.get("since")))}</span></div>'
        for p in doc.get("issues") or ())


def _bans(doc: Mapping[str, Any]) -> str:
    return "".join(
        f'<div class="ban" data-pool="{_e(b.get("pool"))}" data-until="{_e(b.get("until"))}">'
        f'Binance ban on {_e(b.get("pool"))}'
        + (f' from {_e(b["egress"])}' if b.get("egress") else "")
        + f': <span class="countdown">{duration(b.get("seconds_left"))}</span> left '
        f'(until {_e(clock(b.get("until")))}) — '
        f'<span class="cause">{_e(readable_times(str(b.get("cause") or "")))}</span></div>'
        for b in doc.get("bans") or ())


def _pool_key(p: Mapping[str, Any]) -> str:
    return str(p.get("pool")) + (f"@{p['egress']}" if p.get("egress") else "")


def _pools(doc: Mapping[str, Any]) -> str:
    pools = [p for p in doc.get("pools") or ()
             if p.get("limit") or p.get("used") or (p.get("banned_for") or 0) > 0]
    if not pools:
        return '<p class="empty">no weight pool yet</p>'
    out = []
    for p in pools:
        key, budget, used = _pool_key(p), p.get("budget"), p.get("used") or 0
        share = f"{100 * used / budget:.0f} %" if budget else "–"
        banned = " banned" if (p.get("banned_for") or 0) > 0 else ""
        out.append(
            f'<div class="pool{banned}" data-pool="{_e(key)}"><div class="gauge">'
            f'<div class="svg"><div class="share">{share}</div></div>'
            f'<div class="name">{_e(key)}</div><div class="figures">'
            f'<span class="used">{_num(used)}</span> / '
            f'<span class="budget">{"∞" if budget is None else _num(budget)}</span><br>'
            + (f'limit {_num(p["limit"])}' if p.get("limit") else "no documented limit")
            + (f' · {_num(p["queued"])} queued' if p.get("queued") else "")
            + '</div></div><div class="chart"></div></div>')
    return "".join(out)


def _saving(doc: Mapping[str, Any]) -> str:
    w = doc.get("weight_15m") or {}
    asked, spent = w.get("asked") or {}, w.get("spent") or {}
    refused, saving = w.get("refused") or {}, w.get("saving_percent") or {}
    rows = []
    for m in asked:
        if asked.get(m) or spent.get(m) or refused.get(m):
            pct = saving.get(m)
            rows.append(f'<tr data-market="{_e(m)}"><td>{_e(m)}</td><td>{_num(asked.get(m))}</td>'
                        f'<td>{_num(spent.get(m))}</td><td class="saving">'
                        f'{"–" if pct is None else _e(pct) + " %"}</td>'
                        f'<td class="refused">{_num(refused.get(m, 0))}</td></tr>')
    t = w.get("total") or {}
    pct = t.get("saving_percent")
    rows.append(f'<tr data-market="total"><th>total</th><th>{_num(t.get("asked", 0))}</th>'
                f'<th>{_num(t.get("spent", 0))}</th><th class="saving">'
                f'{"–" if pct is None else _e(pct) + " %"}</th>'
                f'<th class="refused">{_num(t.get("refused", 0))}</th></tr>')
    return "".join(rows)


def _clients(doc: Mapping[str, Any]) -> str:
    rows = []
    for c in doc.get("clients") or ():
        m, q = c.get("last_minute") or {}, c.get("last_15m") or {}
        a, r = q.get("answered") or {}, q.get("refused") or {}
        reasons = ", ".join(f"{k} {n}" for k, n in r.items() if n)
        cells = [m.get("requests"), m.get("asked"), m.get("spent"), q.get("requests"),
                 a.get("stream"), a.get("cache"), a.get("upstream")]
        rows.append(f'<tr data-client="{_e(c.get("client"))}"><td class="wrap">'
                    f'{_e(c.get("client"))}</td>'
                    + "".join(f"<td>{_num(n or 0)}</td>" for n in cells)
                    + f'<td>{_num(sum(r.values()))}{" (" + _e(reasons) + ")" if reasons else ""}'
                    f'</td><td>{_e(clock(c.get("last_seen")))}</td></tr>')
    return "".join(rows) or '<tr><td class="empty" colspan="10">no bot yet</td></tr>'


def _errors(doc: Mapping[str, Any]) -> str:
    rows = []
    for e in doc.get("errors") or ():
        request = (f'{e.get("method")} /{e.get("market")}{e.get("path")}'
                   + (f'?{e["query"]}' if e.get("query") else ""))
        count = f" ×{e['count']}" if (e.get("count") or 1) > 1 else ""
        status = e.get("status") or 0
        css = "status-5xx" if status >= 500 or status == 418 else "status-4xx"
        rows.append(f'<tr><td>{_e(clock(e.get("time")))}</td><td class="wrap">'
                    f'{_e(e.get("client"))}</td><td class="wrap" title="{_e(request)}">'
                    f'{_e(request)}{count}</td><td class="{css}">{_e(status)}</td>'
                    f'<td>{_e(e.get("source"))}</td><td class="msg">{_e(e.get("msg"))}</td></tr>')
    return "".join(rows) or '<tr><td class="empty" colspan="6">none</td></tr>'


WS_FIGURES = (("connections", "connections"), ("clients", "bots"),
              ("subscriptions", "subscriptions"), ("streams", "distinct streams relayed"),
              ("frames", "frames to bots (since start)"),
              ("relayed_frames", "frames from upstream"),
              ("relayed_bytes", "bytes from upstream"),
              ("control_messages", "control messages from bots"),
              ("slow_closes", "slow-client closes"), ("rate_closes", "closed for message rate"),
              ("upstream_closes", "closed, stream lost upstream"), ("refused", "upgrades refused"))


def _ws_figures(doc: Mapping[str, Any]) -> str:
    w = doc.get("websocket")
    if not w:
        return ""
    return "".join(f"<dt>{label}</dt><dd>{_num(w.get(key) or 0)}</dd>" for key, label in WS_FIGURES)


def _ws_bots(doc: Mapping[str, Any]) -> str:
    w = doc.get("websocket")
    if not w:
        return ('<tr><td class="empty" colspan="6">no websocket gateway (the streams '
                'middleware is not in the chain)</td></tr>')
    rows = []
    for b in w.get("bots") or ():
        names = list(b.get("streams") or ())
        total = b.get("distinct")
        total = b.get("subscriptions") or 0 if total is None else total
        more = max(0, total - len(names))
        rows.append(f'<tr data-client="{_e(b.get("client"))}"><td class="wrap">'
                    f'{_e(b.get("client"))}</td><td>{_num(b.get("connections"))}</td>'
                    f'<td>{_e(", ".join(b.get("markets") or ()))}</td>'
                    f'<td>{_num(b.get("subscriptions"))}</td><td class="names">'
                    f'{_e(", ".join(names))}'
                    + (f' <span class="more">+{more} more</span>' if more else "")
                    + f'</td><td title="since {_e(clock(b.get("since")))}">'
                    f'{duration((doc.get("time") or 0) - (b.get("since") or 0))}</td></tr>')
    return "".join(rows) or '<tr><td class="empty" colspan="6">no bot uses websockets</td></tr>'


def _ws_upstream(doc: Mapping[str, Any]) -> str:
    rows = []
    for market, u in ((doc.get("websocket") or {}).get("upstream") or {}).items():
        for e in u.get("egress") or ():
            if not (u.get("streams") or e.get("connections") or e.get("control_messages")):
                continue
            rows.append(f'<tr data-market="{_e(market)}"><td>{_e(market)}</td>'
                        f'<td>{_e(e.get("egress") or "default")}</td>'
                        f'<td>{_num(e.get("connections"))}</td>'
                        f'<td>{_num(e.get("control_messages"))}</td>'
                        f'<td>{_num(u.get("streams"))}</td><td>{_num(u.get("bot_streams"))}</td>'
                        f'<td>{_num(u.get("stale"))}</td></tr>')
    return "".join(rows) or ('<tr><td class="empty" colspan="7">no upstream stream '
                             'connection</td></tr>')


PARTS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "version": lambda d: "v" + _e(d.get("version")),
    "uptime": lambda d: "up " + duration(d.get("uptime_seconds")),
    "problems": _problems, "bans": _bans, "pools": _pools, "saving": _saving,
    "clients": _clients, "errors": _errors,
    "ws-figures": _ws_figures, "ws-bots": _ws_bots, "ws-upstream": _ws_upstream,
}
WHOLE: dict[str, Callable[[Mapping[str, Any]], str]] = {"verdict": _verdict, "link": _link}


def first_paint(template: str, doc: Mapping[str, Any]) -> bytes:
    """``template`` (``index.html``) with ``doc`` (the state document) in it."""
    page = template
    for name, render in WHOLE.items():
        start, end = f"<!--{name}-->", f"<!--/{name}-->"
        a, b = page.find(start), page.find(end)
        if a != -1 and b > a:
            page = page[:a] + render(doc) + page[b + len(end):]
    for name, render in PARTS.items():
        page = page.replace(f"<!--{name}-->", render(doc), 1)
    return page.encode("utf-8")
