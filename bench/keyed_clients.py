"""Bots written with python-binance and binance-connector, holding API keys
as their READMEs show, through bnproxy in front of the fake exchange process
(issue 18): their public calls carry X-MBX-APIKEY; measured at the fake.

    python bench/keyed_clients.py [--minutes 3] [--restart-at 2] [--proxy-pythonpath OTHER_CHECKOUT]

Six bots, one thread each: 2 python-binance ``Client(key, secret)`` on spot,
2 binance-connector ``Spot(api_key=…, api_secret=…)`` on spot, 2 python-binance
on USD-M (``futures_*``). Each polls 3 pairs every 5 s: klines (1m, 100),
the book (``limit=5``) and the 24 h ticker, as a simple trading loop does.
Reports the weight asked and the weight at the fake per minute, the first
minute, the minute of the proxy's restart (``--restart-at``: SIGTERM, a
new process, a second into that minute; 0: none), the steady state (the
other minutes), the answers by source, and the proxy's own
requests (all, those that answered waiting bots too, and the share of
upstream sent while no bot waited: see ``freqtrade_fleet``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import tempfile
import threading
import time

from freqtrade_fleet import (
    Proxy,
    asked_by_minute,
    find_section,
    own_weight_of,
    sample,
    upstream_by_minute,
)

from bnproxy.testing.processes import TWISTD, free_port, wait_listening

KEY, SECRET = "bnproxy-test-key", "bnproxy-test-secret"
PAIRS = ("BTCUSDT", "ETHUSDT", "BNBUSDT")


def python_binance_spot(url: str):
    from binance.client import Client

    client = Client(KEY, SECRET, ping=False)
    client.API_URL = url + "/api"
    client.ping()
    return lambda pair: (client.get_klines(symbol=pair, interval="1m", limit=100),
                         client.get_order_book(symbol=pair, limit=5),
                         client.get_ticker(symbol=pair))


def python_binance_usdm(url: str):
    from binance.client import Client

    client = Client(KEY, SECRET, ping=False)
    client.FUTURES_URL = url + "/fapi"
    client.futures_ping()
    return lambda pair: (client.futures_klines(symbol=pair, interval="1m", limit=100),
                         client.futures_order_book(symbol=pair, limit=5),
                         client.futures_ticker(symbol=pair))


def connector_spot(url: str):
    from binance.spot import Spot

    spot = Spot(api_key=KEY, api_secret=SECRET, base_url=url)
    spot.time()
    return lambda pair: (spot.klines(pair, "1m", limit=100), spot.depth(pair, limit=5),
                         spot.ticker_24hr(pair))


def run_bot(make, url: str, until: float, errors: list[str]) -> None:
    try:
        step = make(url)
        while time.time() < until:
            began = time.time()
            for pair in PAIRS:
                step(pair)
            time.sleep(max(0.0, 5.0 - (time.time() - began)))
    except Exception as e:  # reported, not raised: the other bots go on
        errors.append(f"{make.__name__}: {type(e).__name__}: {e}"[:300])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--restart-at", type=float, default=0.0,
                        help="minute of the proxy's restart (0: none)")
    parser.add_argument("--proxy-pythonpath")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="keyed-clients-")
    xport, pport = free_port(), free_port()
    xlog = open(os.path.join(tmp, "exchange.log"), "w")
    exchange = subprocess.Popen([TWISTD, "-n", "--pidfile=", "bnproxy-exchange", "--port",
                                 f"tcp:{xport}:interface=127.0.0.1"], cwd=tmp, stdout=xlog,
                                stderr=subprocess.STDOUT)
    samples = []
    errors: list[str] = []
    try:
        wait_listening(xport, exchange)
        xurl = f"http://127.0.0.1:{xport}"
        proxies = [Proxy(tmp, pport, xurl, 0, args.proxy_pythonpath)]
        time.sleep(61 - time.time() % 60)  # minute 0 is the cold start's (see freqtrade_fleet)
        start = time.time()
        until = start + args.minutes * 60
        makers = [python_binance_spot, python_binance_spot, connector_spot, connector_spot,
                  python_binance_usdm, python_binance_usdm]
        threads = [threading.Thread(target=run_bot, args=(m, proxies[0].url, until, errors))
                   for m in makers]
        for t in threads:
            t.start()
        restarted_at = None
        while time.time() < until:
            samples.append(sample(xurl))
            if args.restart_at and restarted_at is None \
                    and time.time() - start >= args.restart_at * 60:
                proxies[-1].stop()  # the bots' requests meanwhile fail and are retried
                restarted_at = time.time()
                proxies.append(Proxy(tmp, pport, xurl, len(proxies), args.proxy_pythonpath))
            time.sleep(1.0)
        for t in threads:
            t.join(30)
        proxies[-1].stop()
    finally:
        exchange.send_signal(signal.SIGTERM)
        exchange.wait(30)
        xlog.close()
    upstream = upstream_by_minute(samples)
    asked, _, sources, _ = asked_by_minute([p.log_path for p in proxies])
    first = int(start // 60)
    restart = int(restarted_at // 60) if restarted_at is not None else None
    minutes = [m for m in sorted(set(upstream) | set(asked)) if m - first < int(args.minutes)]
    steady = [m for m in minutes if m not in (first, restart)]
    st_asked, st_up = sum(asked[m] for m in steady), sum(upstream[m] for m in steady)
    total_asked, total_up = sum(asked[m] for m in minutes), sum(upstream[m] for m in minutes)
    own = sum(own_weight_of(p.health) for p in proxies)
    answering = sum(own_weight_of(p.health, "answering_bots") for p in proxies)
    print(json.dumps({
        "bots": [m.__name__ for m in makers], "minutes": args.minutes,
        "by_minute": [{"minute": m - first, "asked": asked[m], "upstream": upstream[m]}
                      for m in minutes],
        "whole_run_upstream_vs_asked": round(total_up / total_asked, 4) if total_asked else None,
        "first_minute": round(upstream[first] / asked[first], 4) if asked[first] else None,
        "restart_minute": None if restart is None else restart - first,
        "minute_of_restart": round(upstream[restart] / asked[restart], 4)
        if restart is not None and asked[restart] else None,
        "steady_saving": round(1 - st_up / st_asked, 4) if st_asked else None,
        "own_requests_weight": own,
        "own_requests_answering_bots_weight": answering,
        "own_only_share_of_upstream": round((own - answering) / total_up, 4)
        if total_up else None,
        "own_weight_by_proxy": [find_section(p.health, "own_weight") for p in proxies],
        "bot_answers_by_source": sources, "bot_errors": errors,
    }, indent=2))


if __name__ == "__main__":
    main()
