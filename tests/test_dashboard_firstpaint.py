"""The page's first paint: rendered by the proxy from the state document,
readable without JavaScript, every value escaped."""

from __future__ import annotations

import html
import re

from helpers import Harness, RecordingUpstream, chain

from bnproxy.dashboard.firstpaint import first_paint, readable_times


def banned(tmp_path) -> Harness:
    statuses = iter([200, 418])

    def respond(request, seen):
        request.setResponseCode(next(statuses, 200))
        request.setHeader(b"retry-after", b"120")
        return b'{"code":-1003,"msg":"Way too much request weight used; <img src=x> IP banned until 1764300120000."}'
    h = Harness(RecordingUpstream(respond), state_dir=str(tmp_path),
                middleware=chain("logger", "cache", "ratelimit"))
    h.request("GET", "/api/v3/ping")
    h.request("GET", "/api/v3/time", headers={b"X-Bnproxy-Client": b"bot-a"})
    h.clock.advance(1)
    h.service.dashboard.tick()
    return h


def text_of(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def test_the_page_says_the_verdict_the_ban_its_cause_and_the_pools_before_any_script(tmp_path):
    h = banned(tmp_path)
    answer = h.request("GET", "/dashboard")
    assert answer.status == 200
    assert b"default-src 'self'" in answer.header(b"content-security-policy")
    page = answer.body.decode()
    assert '<span id="verdict" class="verdict banned">banned</span>' in page
    text = " ".join(text_of(page).split())
    assert "banned: Binance ban in force for spot" in text  # the problem, since when
    assert re.search(r"since \d\d:\d\d:\d\d UTC", text)
    assert re.search(r"Binance ban on spot: 1:59 left \(until \d\d:\d\d:\d\d UTC\)", text)
    assert "IP banned until 2025-11-28 03:22:00 UTC" in text  # no epoch milliseconds
    assert '<div class="pool banned" data-pool="spot">' in page
    # what came from outside is escaped, never markup
    assert "<img" not in page and "&lt;img src=x&gt;" in page
    assert "<!--pools-->" not in page and "connecting" not in page


def test_an_empty_state_renders_the_empty_page():
    template = open("bnproxy/dashboard/index.html").read()
    page = first_paint(template, {}).decode()
    assert "no weight pool yet" in page and "no bot yet" in page


def test_epoch_milliseconds_become_readable():
    assert readable_times("until 1764300120000; 42") == "until 2025-11-28 03:22:00 UTC; 42"
