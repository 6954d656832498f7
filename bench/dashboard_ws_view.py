"""What the dashboard's websocket panel costs the proxy once a second:
``Gateway.gateway_view`` (one pass over the bots' connections, then the 50
busiest bots' rows) in process, for ``--connections`` connections of
``--streams`` streams each, spread over ``--bots`` bot names.

    python bench/dashboard_ws_view.py [--connections 1000] [--streams 40] [--bots 100]
"""

from __future__ import annotations

import argparse
import json
import timeit

from twisted.internet import task
from zope.interface import implementer

from bnproxy.chain.interfaces import IStreamHub
from bnproxy.server.websocket import Gateway


@implementer(IStreamHub)
class Hub:
    def stream_markets(self):
        return ("spot",)

    def subscribe(self, market, stream, listener, lost=None):
        raise NotImplementedError

    def upstream_view(self):
        return {}


class Bot:  # what gateway_view reads of a BotProtocol
    def __init__(self, label: str, streams: list[str]) -> None:
        self.label, self.market, self.since = label, "spot", 0.0
        self.streams = dict.fromkeys(streams)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=40)
    parser.add_argument("--bots", type=int, default=100)
    args = parser.parse_args()
    gateway = Gateway(task.Clock(), Hub())
    names = [f"sym{i}usdt@{k}" for i in range(100) for k in ("trade", "kline_1m", "depth")]
    for c in range(args.connections):
        gateway.bots.add(Bot(f"bot-{c % args.bots}",  # type: ignore[arg-type]
                             [names[(c + j) % len(names)] for j in range(args.streams)]))
    n, seconds = timeit.Timer(lambda: gateway.gateway_view(50, 8)).autorange()
    print(json.dumps({"connections": args.connections, "streams": args.streams,
                      "bots": args.bots, "microseconds_per_view": round(1e6 * seconds / n),
                      "share_of_a_core": f"{100 * seconds / n:.3f} %"}, indent=1))


if __name__ == "__main__":
    main()
