"""The dashboard in a real browser: Debian's chromium, headless, driven by
Playwright, against real ``twistd bnproxy`` and ``twistd bnproxy-exchange``
processes on loopback."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest
from processes import TWISTD, free_port, get_json, post_json, twistd, wait_listening

from bnproxy.testing.processes import stop

# A real browser against real processes: end to end (like the Freqtrade runs).
pytestmark = [pytest.mark.integration, pytest.mark.e2e]

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT_MS = 15000  # a deadline for every wait on the page; the 2 s figures are asserted apart

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def proxy_args(pport: int, xport: int) -> list[str]:
    upstreams = []
    for m in ("spot", "usdm", "coinm"):
        upstreams += ["--upstream", f"{m}=http://127.0.0.1:{xport}/{m}",
                      "--stream-upstream", f"{m}=ws://127.0.0.1:{xport}/{m}"]
    chain = ["logger", "allowlist", "streams", "cache",
             "ratelimit:client_header=X-Bnproxy-Client"]
    return ["bnproxy", "--port", f"tcp:{pport}:interface=127.0.0.1", "--state-dir", ".",
            *upstreams, *[a for m in chain for a in ("--middleware-chain", m)]]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    cwd = str(tmp_path_factory.mktemp("dashboard"))
    xport, pport = free_port(), free_port()
    with twistd("bnproxy-exchange", "--port", f"tcp:{xport}:interface=127.0.0.1",
                port=xport, cwd=cwd):
        stack = {"exchange": f"http://127.0.0.1:{xport}", "proxy": f"http://127.0.0.1:{pport}",
                 "cwd": cwd, "args": proxy_args(pport, xport), "port": pport}
        with twistd(*stack["args"], port=pport, cwd=cwd) as proc:
            stack["proc"] = proc
            try:
                yield stack
            finally:
                if stack["proc"] is not proc:  # restarted by a test
                    stop(stack["proc"])


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, stack):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"{m.type}: {m.text} ({m.location.get('url')})")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.problems = problems
    page.goto(stack["proxy"] + "/dashboard")
    page.wait_for_selector("body[data-updated]")
    yield page
    context.close()


def get(url: str, headers: dict | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def updated(page) -> float:
    return float(page.evaluate("document.body.dataset.updated"))


def wait_until(page, expression: str) -> None:
    """Poll ``expression`` in the page until true (``wait_for_function``
    evaluates strings, which the page's Content-Security-Policy forbids)."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false: {expression}"
        page.wait_for_timeout(50)


def wait_newer(page, than: float) -> None:
    wait_until(page, f"Number(document.body.dataset.updated) > {than}")


def test_the_page_loads_without_console_errors_and_agrees_with_health(page, stack):
    for _ in range(5):
        get(stack["proxy"] + "/api/v3/time", {"X-Bnproxy-Client": "agree"})
    deadline = time.monotonic() + 20
    while True:  # the proxy's own requests may move the figures between two reads
        start = updated(page)
        wait_newer(page, start)
        card = page.locator('.pool[data-pool="spot"]')
        shown = (int(card.locator(".used").inner_text()), int(card.locator(".budget").inner_text()))
        health = get_json(stack["proxy"] + "/health")["middleware"]["ratelimit"]["pools"]["spot"]
        if shown == (health["used"], health["budget"]) or time.monotonic() > deadline:
            break
    assert shown == (health["used"], health["budget"])
    gauge = card.locator(".gauge svg text").text_content()
    assert gauge == f"{100 * health['used'] / health['budget']:.0f} %"
    row = page.locator('#clients tr[data-client="agree"] td')
    clients = {c["client"]: c for c in get_json(stack["proxy"] + "/dashboard/state")["clients"]}
    assert row.nth(4).inner_text() == str(clients["agree"]["last_15m"]["requests"]) == "5"
    assert page.locator("#link").inner_text() == "live"
    text = page.locator("body").inner_text()  # a value a patch removed shows as "–"
    assert "undefined" not in text and "NaN" not in text
    page.click('#clients th[data-key="client"]')  # sortable: by name, A to Z
    names = page.locator("#clients tbody tr td:first-child").all_inner_texts()
    assert names == sorted(names) and len(names) >= 2
    page.click('#clients th[data-key="client"]')  # and back
    names = page.locator("#clients tbody tr td:first-child").all_inner_texts()
    assert names == sorted(names, reverse=True)
    assert page.problems == []


def test_a_new_bot_appears_within_two_seconds(page, stack):
    bot = f"bot-{uuid.uuid4().hex[:8]}"
    sent = time.time()
    assert get(stack["proxy"] + "/api/v3/time", {"X-Bnproxy-Client": bot}) == 200
    page.wait_for_selector(f'#clients tr[data-client="{bot}"]')
    # the proxy's clock is the wall clock: the update that first showed it
    assert updated(page) - sent <= 2.0
    assert page.problems == []


def test_a_ban_shows_a_countdown_and_goes_when_it_ends(page, stack):
    post_json(stack["exchange"] + "/_fake/ban", {"ip": "127.0.0.1", "seconds": 3,
                                                 "market": "spot"})
    sent = time.time()
    assert get(stack["proxy"] + "/api/v3/time") == 418
    banner = page.wait_for_selector('.ban[data-pool="spot"]')
    assert updated(page) - sent <= 2.0
    text = banner.inner_text()
    assert "418" in text and "spot" in text
    first = page.locator(".ban .countdown").inner_text()
    assert first in ("0:03", "0:02")
    wait_until(page, "document.querySelector('.ban .countdown') &&"
                     f" document.querySelector('.ban .countdown').textContent !== '{first}'")
    page.wait_for_selector(".ban", state="detached")
    deadline = time.monotonic() + 5
    while get_json(stack["proxy"] + "/dashboard/state")["bans"]:  # the last fraction of a second
        assert time.monotonic() < deadline
        time.sleep(0.1)
    wait_newer(page, time.time())  # an update after the ban ended shows no banner
    assert page.locator(".ban").count() == 0
    assert page.problems == []


def test_the_page_keeps_updating_across_a_proxy_restart(page, stack):
    before = updated(page)
    stop(stack["proc"])
    page.wait_for_selector("#link.down")
    log = os.path.join(stack["cwd"], "restarted.log")
    with open(log, "w") as out:
        proc = subprocess.Popen([TWISTD, "-n", "--pidfile=", *stack["args"]], cwd=stack["cwd"],
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            # the stopped proxy's last numbers are greyed, and say since when
            page.wait_for_selector("body.stale")
            assert page.locator("#link").inner_text().startswith("no data since ")
            wait_listening(stack["port"], proc)
            page.wait_for_selector("#link.up")
            wait_until(page, "!document.body.classList.contains('stale')")
            after = updated(page)
            wait_newer(page, after)
            assert updated(page) > before
            uptime = get_json(stack["proxy"] + "/dashboard/state")["uptime_seconds"]
            assert uptime < 30  # the new process answers
        finally:
            stack["proc"] = proc  # the fixture stops whichever runs
    # only the event stream's own connection failures while the proxy was away
    assert [p for p in page.problems if not p.endswith("/dashboard/events)")] == []


def test_no_horizontal_scroll_on_a_phone(browser, stack):
    # a long signed request in the errors table, a long bot name
    long = "&".join(f"p{i}={'x' * 20}" for i in range(30))
    get(stack["proxy"] + f"/api/v3/order?{long}&signature={'a' * 64}",
        {"X-Bnproxy-Client": "a-bot-with-a-rather-long-name-" + "y" * 30})
    for width in (390, 360):
        context = browser.new_context(viewport={"width": width, "height": 800})
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(stack["proxy"] + "/dashboard")
        page.wait_for_selector("body[data-updated]")
        wait_newer(page, updated(page))
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{overflow} px of horizontal scroll at {width} px"
        context.close()


def test_without_javascript_the_page_shows_the_verdict_pools_and_bans(browser, stack):
    post_json(stack["exchange"] + "/_fake/ban", {"ip": "127.0.0.1", "seconds": 4,
                                                 "market": "spot"})
    assert get(stack["proxy"] + "/api/v3/time") == 418
    deadline = time.monotonic() + 5
    while not get_json(stack["proxy"] + "/dashboard/state")["bans"]:  # the next tick
        assert time.monotonic() < deadline
        time.sleep(0.1)
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1400,
                                                                        "height": 1000})
    page = context.new_page()
    page.goto(stack["proxy"] + "/dashboard")
    assert page.locator("#verdict").inner_text() == "banned"
    assert "Binance ban in force for spot" in page.locator("#problems").inner_text()
    ban = page.locator('.ban[data-pool="spot"]').inner_text()
    assert "left (until " in ban and " UTC)" in ban and "418" in ban
    assert page.locator('.pool[data-pool="spot"] .budget').inner_text().isdigit()
    assert page.locator("#link").inner_text().startswith("as of ")
    context.close()
    time.sleep(4)  # the ban ends before the next test


@pytest.fixture
def own_stack(tmp_path):
    """An exchange and a proxy of this test's own (it kills the exchange)."""
    cwd = str(tmp_path)
    xport, pport = free_port(), free_port()
    with twistd("bnproxy-exchange", "--port", f"tcp:{xport}:interface=127.0.0.1",
                port=xport, cwd=cwd) as exchange, twistd(*proxy_args(pport, xport),
                                                         port=pport, cwd=cwd):
        yield {"exchange": exchange, "proxy": f"http://127.0.0.1:{pport}",
               "exchange_url": f"http://127.0.0.1:{xport}"}


def test_an_upstream_killed_shows_a_banner_and_not_ready(browser, own_stack):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(own_stack["proxy"] + "/dashboard")
    page.wait_for_selector("body[data-updated]")
    wait_until(page, "document.body.dataset.status === 'ok'")
    stop(own_stack["exchange"])
    killed = time.time()
    assert get(own_stack["proxy"] + "/api/v3/time") >= 500  # a bot finds it gone
    banner = page.wait_for_selector('.problem.not-ready[data-name="upstream:spot"]')
    assert updated(page) - killed <= 3.0  # the first update after it shows it
    assert "upstream spot unreachable" in banner.inner_text()
    assert page.locator("#verdict").inner_text() == "not ready"
    context.close()


def test_legends_show_the_newest_values_and_times_say_utc(page, stack):
    get(stack["proxy"] + "/api/v3/time")
    wait_newer(page, updated(page))
    wait_newer(page, updated(page))
    legend = page.locator("#answers-chart .u-legend").inner_text()
    assert " UTC" in legend  # the time of the newest point, labelled
    values = page.locator("#answers-chart .u-legend .u-value").all_inner_texts()
    assert values and all(v not in ("--", "–", "") for v in values), values
    assert "UTC" in page.locator("#answers-chart .u-axis").first.inner_text() or \
        page.locator("#answers-chart").inner_text().count("UTC") >= 2
    assert page.locator("#errors th").first.inner_text() == "time (UTC)"
    assert page.problems == []


def test_streams_silenced_show_a_degraded_banner(browser, own_stack):
    proxy = own_stack["proxy"]
    exchange = own_stack["exchange_url"]
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(proxy + "/dashboard")
    page.wait_for_selector("body[data-updated]")
    deadline = time.monotonic() + 20
    while True:  # demand subscribes the book's stream
        get(proxy + "/api/v3/depth?symbol=BTCUSDT&limit=5", {"X-Bnproxy-Client": "depth-bot"})
        streams = get_json(proxy + "/dashboard/state")["streams"]
        if streams and streams["markets"]["spot"]["streams"] > 0:
            break
        assert time.monotonic() < deadline, streams
        time.sleep(0.5)
    wait_until(page, "document.body.dataset.status === 'ok'")
    post_json(exchange + "/_fake/ws-silence", {"market": "spot"})
    banner = page.wait_for_selector('.problem.degraded[data-name="streams-stale:spot"]')
    assert "spot streams stale" in banner.inner_text() and "since " in banner.inner_text()
    assert page.locator("#verdict").inner_text() == "degraded"
    row = page.locator('#clients tr[data-client="depth-bot"] td')
    assert int(row.nth(4).inner_text()) > 0  # every request of the bot counted
    context.close()


class StreamBot:
    """A websocket bot through the proxy (a plain socket: the upgrade, then
    every frame read and dropped, as a bot that keeps up)."""

    def __init__(self, port: int, path: str, name: str) -> None:
        import socket
        import threading

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nX-Bnproxy-Client: {name}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 101 "), head
        self.received = len(head.partition(b"\r\n\r\n")[2])
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        try:
            while chunk := self.sock.recv(65536):
                self.received += len(chunk)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()


def test_websocket_bots_and_their_streams_are_shown_live(page, stack):
    streams = [f"{s}@{k}" for s in ("btcusdt", "ethusdt")
               for k in ("trade", "aggTrade", "ticker", "bookTicker", "kline_1m")]
    name = f"ws-{uuid.uuid4().hex[:8]}"
    bot = StreamBot(stack["port"], "/stream?streams=" + "/".join(streams), name)
    try:
        row = page.wait_for_selector(f'#ws-bots tr[data-client="{name}"]')
        cells = row.query_selector_all("td")
        assert [c.inner_text() for c in cells[:4]] == [name, "1", "spot", "10"]
        names = cells[4].inner_text()  # the first eight named, the rest counted
        assert names.startswith("btcusdt@trade, btcusdt@aggTrade") and names.endswith("+2 more")
        assert name in get_json(stack["proxy"] + "/dashboard/state")["websocket"]["bots"][0][
            "client"]
        page.wait_for_selector('#ws-upstream tr[data-market="spot"]')
        # one upstream connection, once it is open (the row shows as it is opened)
        wait_until(page, "document.querySelector('#ws-upstream tr[data-market=\"spot\"]')"
                         ".querySelectorAll('td')[2].textContent.trim() === '1'")
        wait_until(page, "Number(document.querySelector("
                         "'#ws-figures dd[data-key=\"frames to bots (since start)\"]')"
                         ".textContent) > 0")
        assert bot.received > 0
        assert page.locator("#ws-chart .u-legend").count() == 1
    finally:
        bot.close()
    page.wait_for_selector(f'#ws-bots tr[data-client="{name}"]', state="detached")
    assert "no bot uses websockets" in page.locator("#ws-bots").inner_text()
    assert page.problems == []


def test_without_the_streams_middleware_the_websocket_panel_says_so(browser, tmp_path):
    pport = free_port()
    with twistd("bnproxy", "--port", f"tcp:{pport}:interface=127.0.0.1", "--state-dir", ".",
                "--upstream", "spot=http://127.0.0.1:9", "--middleware-chain", "logger",
                "--middleware-chain", "cache", port=pport, cwd=str(tmp_path)):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(f"http://127.0.0.1:{pport}/dashboard")
        page.wait_for_selector("body[data-updated]")
        wait_newer(page, updated(page))
        assert "no websocket gateway" in page.locator("#ws-bots").inner_text()
        assert page.locator("#ws-figures dd").count() == 0
        assert problems == []
        context.close()
