"""Shared helpers for benchmarks: processes on loopback and latency stats."""

from __future__ import annotations

import contextlib
import http.client
import statistics
import subprocess
import time

from bnproxy.testing.processes import TWISTD, free_port, stop, wait_listening

__all__ = ["TWISTD", "free_port", "percentile", "process", "summary", "timed_gets"]


@contextlib.contextmanager
def process(*args: str, port: int, cpu: int | None = None):
    """Run ``args`` until the block ends; optionally pinned to one CPU."""
    cmd = list(args)
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc)
        yield proc
    finally:
        stop(proc)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(values: list[float]) -> dict[str, float]:
    return {"median_ms": statistics.median(values) * 1000,
            "p99_ms": percentile(values, 99) * 1000, "n": len(values)}


def timed_gets(port: int, path: str, n: int) -> list[float]:
    """``n`` sequential GETs over one keep-alive connection; seconds each."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        out.append(time.perf_counter() - t)
        assert r.status == 200, (r.status, path)
    conn.close()
    return out
