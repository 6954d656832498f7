"""Throughput of small answers (from streams and cache) with --workers 2
against one worker, both with --shared-state on a loopback Redis, in front of
one fake exchange process (twistd bnproxy-exchange).

    python bench/scale_workers.py [SECONDS]

wrk -t2 -c64 per URL; prints requests per second for each."""

import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from redis_server import RedisServer

from bnproxy.testing.processes import TWISTD, free_port, stop, wait_listening

SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
PATHS = ("/api/v3/depth?symbol=BTCUSDT&limit=5", "/api/v3/ticker/24hr?symbol=BTCUSDT")


def wrk(port: int, path: str) -> float:
    out = subprocess.run(["wrk", "-t2", "-c64", f"-d{SECONDS}s",
                          f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, check=True).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        print(f"  ({non2xx.group(1)} non-2xx answers)")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def run(workers: int, redis_url: str, tmp: str, xport: int) -> dict[str, float]:
    port = free_port()
    state = os.path.join(tmp, f"state{workers}")
    os.makedirs(state)
    proc = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "bnproxy", "--port", f"tcp:{port}:interface=127.0.0.1",
         "--upstream", f"spot=http://127.0.0.1:{xport}/spot",
         "--stream-upstream", f"spot=ws://127.0.0.1:{xport}/spot",
         "--shared-state", redis_url, "--workers", str(workers),
         "--state-dir", state, "--access-log", "none"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc)
        time.sleep(3)
        for path in PATHS:  # warm: streams subscribed, cache filled, in every worker
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10).read()
            subprocess.run(["wrk", "-t2", "-c64", "-d3s", f"http://127.0.0.1:{port}{path}"],
                           capture_output=True, check=True)
        time.sleep(2)
        return {path: wrk(port, path) for path in PATHS}
    finally:
        stop(proc, 40)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(os.path.join(tmp, "redis"))
        server.start()
        xport = free_port()
        exchange = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "bnproxy-exchange", "--port",
             f"tcp:{xport}:interface=127.0.0.1"], cwd=tmp,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_listening(xport, exchange)
            one = run(1, server.url, tmp, xport)
            two = run(2, server.url, tmp, xport)
        finally:
            stop(exchange)
            server.stop()
    for path in PATHS:
        print(f"{path:45} 1 worker {one[path]:8.0f} req/s   2 workers {two[path]:8.0f} req/s"
              f"   x{two[path] / one[path]:.2f}")


if __name__ == "__main__":
    main()
