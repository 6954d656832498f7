"""A fleet of real Freqtrade dry-run bots through bnproxy, in front of the
fake exchange as a separate process, measured at the fake (issue 18).

    python bench/freqtrade_fleet.py [--minutes 5] [--restart-at 3] [--spot 3] [--futures 3]
                                    [--proxy-pythonpath OTHER_CHECKOUT]

Processes (all on loopback): ``twistd bnproxy-exchange``; ``twistd bnproxy``
(default chain, JSON access log to a file) restarted at ``--restart-at``
minutes with nothing held, on the same port; the bots: ``freqtrade trade``
in dry-run, 1m timeframe, 4 pairs each (spot bots BTC, ETH, BNB, SOL /USDT;
USD-M bots the same perpetuals), configured by ``python -m bnproxy
freqtrade-config``, an always-in strategy that trades from the start.

Figures, per minute of the run:
- ``asked``: the weight of every request the bots sent, priced by the
  endpoint table (from the proxy's access lines; the proxy's own calls,
  client ``bnproxy``, are not the bots');
- ``upstream``: the weight the fake exchange counted (its own limiter,
  sampled every second, per market);
- ``own``: the weight of the proxy's own requests (``/health`` of each proxy
  process: snapshots, backfills, refreshes, pings), in two parts: those
  whose answer also answered at least one waiting bot request (a new book's
  snapshot its first requests waited on, a seed: bot requests coalesced,
  ``answering_bots``), and the rest, sent while no bot was waiting (the
  proxy's own spending: resyncs, symbol lists, refreshes, pings);
the upstream requests of each minute by kind (``upstream_requests``: "bot"
or "own", market, path and limit -> [requests, weight], from the proxy's
access lines); and the warnings and errors each bot logged, outside the
restart's seconds and the bots' own shutdown.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from urllib.parse import parse_qsl

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bnproxy.binance.endpoints import load_endpoints  # noqa: E402
from bnproxy.testing.freqtrade import ALWAYS_IN  # noqa: E402
from bnproxy.testing.processes import TWISTD, free_port, wait_listening  # noqa: E402

BIN = os.path.dirname(sys.executable)
PAIRS = ("BTC", "ETH", "BNB", "SOL")


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def bot_config(proxy: str, futures: bool, name: str) -> dict:
    block = json.loads(subprocess.run(
        [sys.executable, "-m", "bnproxy", "freqtrade-config", "--url", proxy]
        + (["--futures"] if futures else []), capture_output=True, text=True, check=True,
        timeout=60).stdout)["exchange"]
    suffix = ":USDT" if futures else ""
    block["pair_whitelist"] = [f"{p}/USDT{suffix}" for p in PAIRS]
    block["pair_blacklist"] = []
    config = {
        "max_open_trades": 4, "stake_currency": "USDT", "stake_amount": 100,
        "tradable_balance_ratio": 0.99, "fiat_display_currency": "", "dry_run": True,
        "dry_run_wallet": 1000, "cancel_open_orders_on_exit": False,
        "trading_mode": "futures" if futures else "spot",
        "unfilledtimeout": {"entry": 10, "exit": 10, "exit_timeout_count": 0,
                            "unit": "minutes"},
        "entry_pricing": {"price_side": "same", "use_order_book": True, "order_book_top": 1,
                          "price_last_balance": 0.0,
                          "check_depth_of_market": {"enabled": False, "bids_to_ask_delta": 1}},
        "exit_pricing": {"price_side": "same", "use_order_book": True, "order_book_top": 1},
        "exchange": block, "pairlists": [{"method": "StaticPairList"}],
        "telegram": {"enabled": False, "token": "", "chat_id": ""},
        "bot_name": name, "initial_state": "running",
        "internals": {"process_throttle_secs": 5},
    }
    if futures:
        config["margin_mode"] = "isolated"
    return config


class Proxy:
    def __init__(self, tmp: str, port: int, exchange: str, n: int,
                 pythonpath: str | None = None) -> None:
        self.log_path = os.path.join(tmp, f"proxy-{n}.log")
        upstreams = []
        for m in ("spot", "usdm", "coinm"):
            upstreams += ["--upstream", f"{m}={exchange}/{m}", "--stream-upstream",
                          f"{m}={exchange.replace('http', 'ws', 1)}/{m}"]
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "bnproxy", "--port",
             f"tcp:{port}:interface=127.0.0.1", *upstreams, "--log-format", "json",
             "--state-dir", tmp], cwd=tmp, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": pythonpath} if pythonpath else None)
        wait_listening(port, self.proc)
        self.url = f"http://127.0.0.1:{port}"
        self.health: dict = {}

    def stop(self) -> None:
        try:
            self.health = get_json(self.url + "/health")
        except OSError:
            pass
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def access_records(path: str):
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if "status" in record and "path" in record:
                record["time"] = datetime.fromisoformat(
                    record["time"].replace("Z", "+00:00")).timestamp()
                yield record


def market_of(path: str) -> str:
    return "spot" if path.startswith("/api") else "usdm" if path.startswith(
        ("/fapi", "/futures")) else "coinm"


def sample(xurl: str) -> tuple[int, dict, dict]:
    """(the fake's minute, its used weight by market, its requests by market)."""
    fake = get_json(xurl + "/_fake/")
    counts: dict[str, int] = collections.Counter()
    for row in fake["requests"]:
        counts[market_of(row["path"])] += row["count"]
    return (fake["server_time"] // 60_000,
            {m: sum(ips.values()) for m, ips in fake["weight"].items()}, dict(counts))


def upstream_by_minute(samples: list[tuple[int, dict, dict]]) -> dict[int, int]:
    """Upstream weight per minute at the fake: its limiter's count for the
    minute, the last sample of each fake minute, for each market that had
    requests in that minute (the counter of a market without any still shows
    its last minute's figure). Up to a second of traffic at each minute's end
    may fall to the next."""
    upstream: dict[int, int] = collections.Counter()
    final: dict[int, tuple[dict, dict]] = {}
    for minute, used, counts in samples:
        final[minute] = (used, counts)
    before_counts: dict[str, int] = {}
    for minute in sorted(final):
        used, counts = final[minute]
        for m, w in used.items():
            if counts.get(m, 0) > before_counts.get(m, 0):
                upstream[minute] += w
        before_counts = counts
    return upstream


def upstream_kind(r: dict) -> str:
    """One upstream request as "who market path [limit=N]" (who: ``bot``, a
    bot's request forwarded, or ``own``, the proxy's), for the per-minute
    breakdown."""
    who = "own" if r.get("client") == "bnproxy" or r.get("bot") == "bnproxy" else "bot"
    limit = dict(parse_qsl(r["query"])).get("limit")
    return f"{who} {r['market']} {r['path']}" + (f" limit={limit}" if limit else "")


def asked_by_minute(logs: list[str]) -> tuple[dict[int, int], dict[int, int], dict, dict]:
    """From the proxies' access lines: the weight the bots asked per minute
    (priced by the endpoint table), the upstream weight the proxy logged per
    minute (bots' and its own), the bots' answers by source, and per minute
    the upstream requests by kind: [count, weight]."""
    endpoints = load_endpoints()
    asked: dict[int, int] = collections.Counter()
    logged_up: dict[int, int] = collections.Counter()
    sources: collections.Counter = collections.Counter()
    kinds: dict[int, dict[str, list[int]]] = collections.defaultdict(dict)
    for path in logs:
        for r in access_records(path):
            if r["source"] == "upstream":
                minute = int(r["time"] // 60)
                logged_up[minute] += r.get("weight") or 0
                entry = kinds[minute].setdefault(upstream_kind(r), [0, 0])
                entry[0] += 1
                entry[1] += r.get("weight") or 0
            if r.get("client") == "bnproxy" or r.get("bot") == "bnproxy":
                continue
            ep = endpoints.lookup(r["market"], r["method"], r["path"])
            asked[int(r["time"] // 60)] += ep.weight(dict(parse_qsl(r["query"]))) if ep else 1
            sources[r["source"]] += 1
    return asked, logged_up, dict(sources), kinds


def find_section(health: dict, name: str) -> dict:
    """The named middleware's section of /health, wherever it sits."""
    if name in health and isinstance(health[name], dict):
        return health[name]
    for value in health.values():
        if isinstance(value, dict):
            found = find_section(value, name)
            if found:
                return found
    return {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--restart-at", type=float, default=3.0)
    parser.add_argument("--spot", type=int, default=3)
    parser.add_argument("--futures", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the run's directory")
    parser.add_argument("--proxy-pythonpath", help="PYTHONPATH of the proxy processes only "
                        "(another checkout of bnproxy, for a before/after comparison)")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="freqtrade-fleet-")
    xport, pport = free_port(), free_port()
    xlog = open(os.path.join(tmp, "exchange.log"), "w")
    exchange = subprocess.Popen([TWISTD, "-n", "--pidfile=", "bnproxy-exchange", "--port",
                                 f"tcp:{xport}:interface=127.0.0.1"], cwd=tmp, stdout=xlog,
                                stderr=subprocess.STDOUT)
    bots: list[tuple[str, subprocess.Popen, str]] = []
    proxies: list[Proxy] = []
    # (fake's minute, its used weight by market, its request count by market)
    samples: list[tuple[int, dict, dict]] = []
    try:
        wait_listening(xport, exchange)
        xurl = f"http://127.0.0.1:{xport}"
        proxies.append(Proxy(tmp, pport, xurl, 0, args.proxy_pythonpath))
        with open(os.path.join(tmp, "AlwaysIn.py"), "w") as f:
            f.write(ALWAYS_IN)
        # The fake counts weight per clock minute: the bots start a second into
        # one, so minute 0 is the cold start's minute, and the restart falls
        # a second into minute ``--restart-at``.
        time.sleep(61 - time.time() % 60)
        start = time.time()
        for i in range(args.spot + args.futures):
            futures = i >= args.spot
            name = f"{'usdm' if futures else 'spot'}-{i}"
            home = os.path.join(tmp, name)
            os.makedirs(os.path.join(home, "user_data"))
            path = os.path.join(home, "config.json")
            with open(path, "w") as f:
                json.dump(bot_config(proxies[0].url, futures, name), f)
            log = os.path.join(home, "bot.log")
            proc = subprocess.Popen(
                [os.path.join(BIN, "freqtrade"), "trade", "-c", path, "--strategy", "AlwaysIn",
                 "--strategy-path", tmp, "--userdir", os.path.join(home, "user_data"),
                 "--db-url", f"sqlite:///{home}/trades.sqlite", "--logfile", log],
                cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            bots.append((name, proc, log))
        restarted_at = None
        while time.time() - start < args.minutes * 60:
            samples.append(sample(xurl))
            if restarted_at is None and time.time() - start >= args.restart_at * 60:
                proxies[-1].stop()
                restarted_at = time.time()
                proxies.append(Proxy(tmp, pport, xurl, len(proxies), args.proxy_pythonpath))
            time.sleep(1.0)
        restart_done = time.time() if restarted_at is None else restarted_at
    finally:
        stopping = time.time()  # what bots log from here on is their own shutdown
        for _, proc, _ in bots:
            proc.send_signal(signal.SIGINT)
        for _, proc, _ in bots:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for proxy in proxies:
            if proxy.proc.poll() is None:
                proxy.stop()
        exchange.send_signal(signal.SIGTERM)
        exchange.wait(30)
        xlog.close()

    upstream = upstream_by_minute(samples)
    asked, logged_up, sources, kinds = asked_by_minute([p.log_path for p in proxies])
    first = int(start // 60)
    minutes = sorted(set(upstream) | set(asked))
    restart_minute = int(restart_done // 60)
    by_minute = [{"minute": m - first, "asked": asked[m], "upstream": upstream[m],
                  "upstream_in_proxy_log": logged_up[m],
                  "upstream_requests": dict(sorted(kinds[m].items()))} for m in minutes]
    total_asked, total_up = sum(asked.values()), sum(upstream.values())
    own = [own_weight_of(p.health) for p in proxies]
    coalesced = [own_weight_of(p.health, "answering_bots") for p in proxies]
    own_only = sum(own) - sum(coalesced)
    warnings = {}
    for name, _, log in bots:
        bad = []
        if os.path.exists(log):
            with open(log) as f:
                for line in f:
                    if " - WARNING - " in line or " - ERROR - " in line:
                        stamp = line[:19]
                        try:
                            t = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").timestamp()
                        except ValueError:
                            t = None
                        near = t is not None and (abs(t - restart_done) < 20
                                                  or t >= int(stopping))
                        if not near:
                            bad.append(line.strip()[:200])
        warnings[name] = bad
    steady = [m for m in minutes if m not in (first, restart_minute)
              and m - first < int(args.minutes)]  # (the last, partial minute is not)
    st_asked = sum(asked[m] for m in steady)
    st_up = sum(upstream[m] for m in steady)
    report = {
        "bots": {"spot": args.spot, "usdm": args.futures}, "minutes": args.minutes,
        "restart_minute": restart_minute - first, "by_minute": by_minute,
        "whole_run_upstream_vs_asked": round(total_up / total_asked, 4) if total_asked else None,
        "first_minute": round(upstream[first] / asked[first], 4) if asked[first] else None,
        "minute_after_restart": round(upstream[restart_minute] / asked[restart_minute], 4)
        if asked[restart_minute] else None,
        "steady_saving": round(1 - st_up / st_asked, 4) if st_asked else None,
        "own_requests_weight_by_proxy": own,
        "own_requests_share_of_upstream": round(sum(own) / total_up, 4) if total_up else None,
        "own_requests_answering_bots_weight": coalesced,
        "own_only_weight": own_only,  # sent while no bot request waited on it
        "own_only_share_of_upstream": round(own_only / total_up, 4) if total_up else None,
        "bot_answers_by_source": dict(sources),
        "bot_warnings_outside_restart": {k: len(v) for k, v in warnings.items()},
        "first_warnings": {k: v[:3] for k, v in warnings.items() if v},
        "dir": tmp if args.keep else None,
    }
    print(json.dumps(report, indent=2))


def own_weight_of(health: dict, part: str = "by_purpose") -> int:
    """The weight of the proxy's own requests in ``/health`` (``by_purpose``:
    all of them; ``answering_bots``: those that answered waiting bots too)."""
    section = find_section(health, "own_weight")
    by = section.get(part) or {}
    return sum(w for purposes in by.values() for w in purposes.values())


if __name__ == "__main__":
    main()
