"""How long the fake exchange's diff depth streams stay silent (issue 18):
subscribe to ``<pair>@depth@100ms`` of the fleet's pairs on spot and USD-M
and report, per stream, the events received and the longest gap between
two of them.

    python bench/depth_gaps.py WS_BASE [--seconds 120]

``WS_BASE`` is a running fake exchange's websocket base, e.g.
``ws://127.0.0.1:PORT`` (``twistd bnproxy-exchange``, or the one
``freqtrade_fleet.py`` starts: its port is in the process list), so the
gaps are measured under whatever load that exchange is serving.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import time

import websockets

PAIRS = ("btc", "eth", "bnb", "sol")


async def watch(market: str, url: str, names: list[str], seconds: float,
                gaps: dict) -> None:
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": names, "id": 1}))
        last: dict[str, float] = {}
        end = time.time() + seconds
        while time.time() < end:
            try:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
            except TimeoutError:
                continue
            if "stream" not in frame:
                continue
            now, name = time.time(), frame["stream"]
            if name in last:
                gaps[f"{market}:{name}"].append(now - last[name])
            last[name] = now


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("--seconds", type=float, default=120.0)
    args = parser.parse_args()
    gaps: dict[str, list[float]] = collections.defaultdict(list)
    names = [f"{p}usdt@depth@100ms" for p in PAIRS]
    await asyncio.gather(
        watch("spot", f"{args.base}/spot/stream", names, args.seconds, gaps),
        watch("usdm", f"{args.base}/usdm/public/stream", names, args.seconds, gaps))
    print(json.dumps({name: {"events": len(g) + 1, "longest_gap_s": round(max(g), 2),
                             "mean_gap_s": round(sum(g) / len(g), 3)}
                      for name, g in sorted(gaps.items()) if g}, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
