"""Instructions per answer under callgrind for the small answers of issue 21:
depth ``limit=5`` and ``limit=20``, ``ticker/24hr?symbol=``, ``exchangeInfo``,
each answered by ``twistd bnproxy`` (default chain, access log to stdout
discarded, spot on the fake exchange with its streams) from its streams or
cache, and by a bare twisted.web resource serving the same bytes.

    python bench/hits_cost.py [--instructions 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request

from common import TWISTD, counted, free_port, process

HERE = os.path.dirname(os.path.abspath(__file__))
PATHS = ["/api/v3/depth?symbol=BTCUSDT&limit=5", "/api/v3/depth?symbol=BTCUSDT&limit=20",
         "/api/v3/ticker/24hr?symbol=BTCUSDT", "/api/v3/exchangeInfo"]


def warm(url: str) -> bytes:
    """Ask until the answer comes from a stream or the cache; its body."""
    deadline = time.monotonic() + 120
    while True:
        with urllib.request.urlopen(url) as r:
            body = r.read()
            if r.headers["X-Bnproxy-Source"] in ("stream", "cache"):
                return body
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} never came from a stream or the cache")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instructions", type=int, default=1000)
    args = parser.parse_args()
    xport, port = free_port(), free_port()
    out: dict[str, dict] = {}
    bodies: dict[str, bytes] = {}
    with process(TWISTD, "-n", "--pidfile=", "--logfile=/dev/null", "bnproxy-exchange",
                 "--port", f"tcp:{xport}:interface=127.0.0.1",
                 "--spot-weight-limit", "100000000", port=xport), \
         counted(sys.executable, TWISTD, "-n", "--pidfile=", "--logfile=/dev/null", "bnproxy",
                 "--port", f"tcp:{port}:interface=127.0.0.1", "--state-dir", tempfile.mkdtemp(),
                 "--upstream", f"spot=http://127.0.0.1:{xport}/spot",
                 "--stream-upstream", f"spot=ws://127.0.0.1:{xport}/spot",
                 port=port) as measure:
        for path in PATHS:
            url = f"http://127.0.0.1:{port}{path}"
            bodies[path] = warm(url)
            out[path] = {"proxy_net": round(measure(url, args.instructions, 5.0)),
                         "proxy_raw": round(measure.raw),  # type: ignore[attr-defined]
                         "body_bytes": len(bodies[path])}
    for path in PATHS:
        bport = free_port()
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            f.write(bodies[path])
            f.flush()
            with counted(sys.executable, os.path.join(HERE, "bare_server.py"), str(bport),
                         f.name, port=bport) as measure:
                out[path]["bare"] = round(measure(f"http://127.0.0.1:{bport}{path}",
                                                  args.instructions))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
