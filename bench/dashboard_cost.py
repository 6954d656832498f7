"""What the dashboard costs cache hits: the proxy with the dashboard feed
switched off (bench/dashboard_off.py) against the proxy with one page open
(one client reading /dashboard/events, as a browser's EventSource does).

Two measures, as bench/cache_hit.py:
- callgrind (deterministic): instructions the server executes per cache-hit
  answer (``--instructions`` answers on one keep-alive connection), and, with
  the page open, the instructions of the feed's once-a-second work (sample,
  encode, send the event) counted over ``--idle`` seconds without requests.
  The cost at a throughput R is then
  ``(answer_on - answer_off) / answer_off + tick / (R * answer_off)``, given
  for R = the answers per second one core makes (1e6 / cpu_us_per_request of
  cache_hit.py's figure, or of the wrk run here);
- wrk: throughput and server CPU per answer, server pinned to core 0, wrk to
  core 1, interleaved rounds, medians of the per-round ratios (noisy on a
  shared machine: the instruction counts are the figure to trust).

    python bench/dashboard_cost.py [--rounds 5] [--seconds 4] [--instructions 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from common import TWISTD, free_port, loaded, process

from bnproxy.testing.processes import stop, wait_listening

HERE = os.path.dirname(os.path.abspath(__file__))
OFF = [sys.executable, os.path.join(HERE, "dashboard_off.py")]
ON = [TWISTD]


class Page:
    """One open dashboard: reads /dashboard/events until closed."""

    def __init__(self, port: int) -> None:
        self.events = 0
        self.bytes = 0
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        self._conn.request("GET", "/dashboard/events")
        self._response = self._conn.getresponse()
        assert self._response.status == 200
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                line = self._response.fp.readline()
                if not line:
                    return
                self.bytes += len(line)
                if line.startswith((b"event: state", b"event: patch")):
                    self.events += 1

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.sock.shutdown(2)
        self._conn.close()


def args_for(port: int, xport: int, tmp: str) -> list[str]:
    chain = ["logger", "allowlist", "streams", "cache:ttl.klines=3600", "ratelimit"]
    return ["-n", "--pidfile=", "--logfile=/dev/null", "bnproxy", "--port",
            f"tcp:{port}:interface=127.0.0.1", "--state-dir", tmp, "--upstream",
            f"spot=http://127.0.0.1:{xport}/spot", *[a for m in chain for a in ("--middleware-chain", m)]]


@contextlib.contextmanager
def callgrind(*cmd: str, port: int):
    """The server under callgrind, instrumentation off; yields
    ``count(fn)``: the instructions the server runs while ``fn()`` runs."""
    out = f"/tmp/bnproxy-callgrind.{port}.%p"
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                             f"--callgrind-out-file={out}", *cmd], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONHASHSEED": "0"})
    try:
        wait_listening(port, proc, timeout=180)

        def control(*opts: str) -> str:
            return subprocess.run(["callgrind_control", *opts, str(proc.pid)],
                                  capture_output=True, text=True, timeout=60).stdout

        def count(fn) -> int:
            control("-i", "on")
            control("-z")
            fn()
            total = control("-e", "Ir")
            control("-i", "off")
            return int(re.search(r"Th 1\s+([\d,]+)", total).group(1).replace(",", ""))

        yield count
    finally:
        stop(proc)
        for name in os.listdir("/tmp"):
            if name.startswith(f"bnproxy-callgrind.{port}."):
                os.unlink(os.path.join("/tmp", name))


def gets(port: int, path: str, n: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(n):
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        assert r.status == 200 and r.headers["X-Cache"] == "HIT", (r.status, r.headers)
    conn.close()


def in_process(bots: int = 50, endpoints: int = 40) -> dict:
    """The feed's work in this process, with a busy proxy's state: the
    default chain, ``bots`` bots, answers on ``endpoints`` endpoints from
    every source, 20 errors, a full 15-minute ring. Microseconds per tick
    (sample, encode, send to one page) and nanoseconds the error observer
    adds to a successful answer."""
    import timeit

    from twisted.internet import task

    from bnproxy.chain.messages import ProxyRequest, ProxyResponse
    from bnproxy.config.model import ProxyConfig
    from bnproxy.service import ProxyService

    clock = task.Clock()
    service = ProxyService(clock, ProxyConfig(listen=(), state_dir=tempfile.mkdtemp()))
    feed = service.dashboard
    logger = next(m for m in service.middlewares if m.name == "logger")  # the bot ledger
    paths = [e.path for e in service.endpoints if e.market == "spot"][:endpoints]
    feed.subscribe(lambda event: None)  # one open page
    request = ProxyRequest("GET", "spot", "/api/v3/klines", b"symbol=BTCUSDT", (), b"",
                           "127.0.0.1", 0.0, None)
    ok = ProxyResponse(200, (), b"[]", "cache")
    bad = ProxyResponse(400, (), b'{"code":-1102,"msg":"Mandatory parameter"}', "upstream")
    observe = feed.observer(service.metrics.answered)
    for _ in range(20):
        observe(request, bad)
    ticks: list[float] = []
    for i in range(960):
        for n, path in enumerate(paths):
            for source in ("cache", "stream", "upstream", "local"):
                service.metrics.answers[("spot", path, 200, source)] += n % 3
        for b in range(bots):
            for _ in range(b % 4):
                logger.ledger.count(f"bot-{b}", request, ok)
        clock.advance(1)
        start = time.perf_counter()
        feed.tick()
        if i >= 900:
            ticks.append(time.perf_counter() - start)
    state = len(feed.state_bytes())
    direct = min(timeit.repeat(lambda: service.metrics.answered(request, ok), number=100000,
                               repeat=5)) / 100000
    wrapped = min(timeit.repeat(lambda: observe(request, ok), number=100000,
                                repeat=5)) / 100000
    tick_us = statistics.median(ticks) * 1e6
    return {"tick_us": round(tick_us, 1), "tick_share_of_one_core_percent":
            round(tick_us / 1e4, 4), "event_bytes": len(feed.event), "state_bytes": state,
            "observer_ns_per_answer": round((wrapped - direct) * 1e9, 1)}


def warm(url: str) -> None:
    for _ in range(2):
        urllib.request.urlopen(url, timeout=10).read()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--instructions", type=int, default=2000)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--path", default="/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=100")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    out: dict = {"in_process": in_process()}
    xport = free_port()
    with process(TWISTD, "-n", "--pidfile=", "--logfile=/dev/null", "bnproxy-exchange",
                 "--port", f"tcp:{xport}:interface=127.0.0.1", port=xport, cpu=1):
        if args.instructions:
            for name, cmd in (("dashboard_off", OFF), ("one_page_open", ON)):
                port = free_port()
                with callgrind(sys.executable, cmd[-1], *args_for(port, xport, tmp),
                               port=port) as count:
                    warm(f"http://127.0.0.1:{port}{args.path}")
                    gets(port, args.path, 50)  # code paths, caches
                    page = Page(port) if name == "one_page_open" else None
                    result: dict = {}
                    if page:  # the feed alone: no request, only its ticks
                        before = page.events
                        idle = count(lambda: time.sleep(args.idle))
                        ticks = page.events - before
                        result["tick_instructions"] = round(idle / max(ticks, 1))
                        result["ticks_counted"] = ticks
                        before = page.events
                    answers = count(lambda p=port: gets(p, args.path, args.instructions))
                    if page:
                        ticks = page.events - before
                        answers -= ticks * result["tick_instructions"]
                        result["ticks_during_answers"] = ticks
                        page.close()
                    result["instructions_per_answer"] = round(answers / args.instructions)
                    out[name] = result
            off = out["dashboard_off"]["instructions_per_answer"]
            on = out["one_page_open"]
            out["answer_overhead_percent"] = round(
                100 * (on["instructions_per_answer"] - off) / off, 3)
            out["tick_instructions_in_answers"] = round(on["tick_instructions"] / off, 2)
        if args.rounds:
            with contextlib.ExitStack() as stack:
                urls, pids, pages = {}, {}, []
                for name, cmd in (("dashboard_off", OFF), ("one_page_open", ON)):
                    port = free_port()
                    proc = stack.enter_context(process(*cmd, *args_for(port, xport, tmp),
                                                       port=port, cpu=0))
                    urls[name], pids[name] = f"http://127.0.0.1:{port}{args.path}", proc.pid
                    warm(urls[name])
                    if name == "one_page_open":
                        pages.append(Page(port))
                        stack.callback(pages[0].close)
                runs: dict[str, list] = {name: [] for name in urls}
                for _ in range(args.rounds):
                    for name, url in urls.items():
                        runs[name].append(loaded(url, args.seconds, pids[name]))
                for name in urls:
                    out.setdefault(name, {}).update(
                        req_per_s=[round(r.req_per_s) for r in runs[name]],
                        cpu_us_per_request=[round(r.cpu_us_per_request, 1) for r in runs[name]])
                out["throughput_ratio"] = round(statistics.median(
                    o.req_per_s / f.req_per_s
                    for o, f in zip(runs["one_page_open"], runs["dashboard_off"])), 4)
                out["cpu_ratio"] = round(statistics.median(
                    f.cpu_us_per_request / o.cpu_us_per_request
                    for o, f in zip(runs["one_page_open"], runs["dashboard_off"])), 4)
                out["events_received"] = pages[0].events
                cpu = statistics.median(r.cpu_us_per_request for r in runs["dashboard_off"])
                out["answers_per_core_second"] = round(1e6 / cpu)
        if "tick_instructions_in_answers" in out:
            for rate in (1000, 5000, out.get("answers_per_core_second", 5000)):
                out[f"cost_percent_at_{rate}_per_s"] = round(
                    out["answer_overhead_percent"] + 100 * out["tick_instructions_in_answers"] /
                    rate, 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
