"""Shared helpers for benchmarks: processes on loopback and latency stats."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import statistics
import subprocess
import time

import attrs

from bnproxy.testing.processes import TWISTD, free_port, stop, wait_listening

__all__ = ["TWISTD", "Load", "counted", "free_port", "loaded", "percentile", "process", "summary",
           "timed_gets"]


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


@attrs.frozen
class Load:
    """One wrk run against one server: its throughput, and the CPU time the
    server process spent per answer (user + system, from /proc). On a VM
    whose hypervisor steals a varying share of the core, CPU per answer is
    the steadier figure: stolen time is not charged to the process."""

    req_per_s: float
    cpu_us_per_request: float


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loaded(url: str, seconds: int, pid: int, connections: int = 32) -> Load:
    """``wrk -t2 -cN`` on core 1 against ``url`` served by process ``pid``."""
    before = _cpu_seconds(pid)
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t2", f"-c{connections}",
                          f"-d{seconds}s", url], capture_output=True, text=True,
                         timeout=seconds + 30, check=True).stdout
    cpu = _cpu_seconds(pid) - before
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return Load(rate, cpu / max(requests, 1) * 1e6)


@contextlib.contextmanager
def counted(*args: str, port: int):
    """Run a server under valgrind's callgrind with instrumentation off;
    yields a function ``measure(url, n)`` that turns counting on, sends ``n``
    GETs over one keep-alive connection and returns the instructions the
    server executed per answer (user space: reactor, parsing, the chain,
    writing; the kernel's socket work is not counted). Deterministic to a
    fraction of a percent, where wall-clock figures on a VM are not."""
    out = f"/tmp/bnproxy-callgrind.{port}.%p"
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts every run
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                             f"--callgrind-out-file={out}", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_listening(port, proc, timeout=180)

        def control(*opts: str) -> str:
            return subprocess.run(["callgrind_control", *opts, str(proc.pid)],
                                  capture_output=True, text=True, timeout=60).stdout

        def instructions() -> int:
            return int(re.search(r"Th 1\s+([\d,]+)", control("-e", "Ir")).group(1)
                       .replace(",", ""))

        def measure(url: str, n: int, idle: float = 0) -> float:
            """Instructions per answer. With ``idle`` seconds, net of the
            server's per-second background work (timers: samplers, flushers),
            counted that long with no request and subtracted pro rata of the
            time the answers took: under valgrind (~50 times slower) that work
            is charged to each answer 50 times over, and more so when the VM is
            loaded; ``measure.raw`` keeps the figure before the subtraction."""
            host, _, rest = url.split("://", 1)[1].partition("/")
            conn = http.client.HTTPConnection(host, timeout=60)
            for _ in range(50):  # warm: code paths, caches, the keep-alive connection
                conn.request("GET", "/" + rest)
                conn.getresponse().read()
            control("-i", "on")
            control("-z")
            started = time.monotonic()
            for _ in range(n):
                conn.request("GET", "/" + rest)
                r = conn.getresponse()
                r.read()
                assert r.status == 200, r.status
            total = instructions()
            busy = time.monotonic() - started
            background = 0.0
            if idle:
                control("-z")
                started = time.monotonic()
                time.sleep(idle)
                background = instructions() / (time.monotonic() - started) * busy
            control("-i", "off")
            conn.close()
            measure.raw = total / n  # type: ignore[attr-defined]
            return (total - background) / n

        yield measure
    finally:
        stop(proc)
        for name in os.listdir("/tmp"):
            if name.startswith(f"bnproxy-callgrind.{port}."):
                os.unlink(os.path.join("/tmp", name))
