"""``python -m bnproxy status URL`` against a running proxy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from processes import free_port, twistd

pytestmark = pytest.mark.integration


def status(*args: str, cwd: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bnproxy", "status", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ})


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    cwd = str(tmp_path_factory.mktemp("status"))
    port = free_port()
    with twistd("bnproxy", "--port", f"tcp:{port}:interface=127.0.0.1", "--state-dir", ".",
                "--simulated-exchange", "--middleware-chain", "logger", "--middleware-chain",
                "cache", "--middleware-chain",
                "ratelimit:client_header=X-Bnproxy-Client", port=port, cwd=cwd):
        yield {"url": f"http://127.0.0.1:{port}", "cwd": cwd}


def test_status_prints_the_summary_of_a_running_proxy(proxy):
    for _ in range(3):
        request = urllib.request.Request(proxy["url"] + "/api/v3/time",
                                         headers={"X-Bnproxy-Client": "status-bot"})
        urllib.request.urlopen(request, timeout=10).read()
    try:
        urllib.request.urlopen(proxy["url"] + "/api/v3/order?symbol=X&signature=s3cr3t",
                               timeout=10).read()
    except urllib.error.HTTPError as e:
        assert e.code >= 400
    state = json.loads(status(proxy["url"], "--json", cwd=proxy["cwd"]).stdout)
    deadline = time.monotonic() + 10
    while not any(c["client"] == "status-bot" for c in state["clients"]):  # the next second
        assert time.monotonic() < deadline
        state = json.loads(status(proxy["url"], "--json", cwd=proxy["cwd"]).stdout)
    done = status(proxy["url"], cwd=proxy["cwd"])
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("bnproxy ")
    spot = next(p for p in state["pools"] if p["pool"] == "spot")
    assert any(line.split()[:1] == ["spot"] and line.split()[2:4] == [
        str(spot["budget"]), str(spot["limit"])] for line in out.splitlines())
    assert any(line.split()[:3] == ["status-bot", "3", "3"] for line in out.splitlines())
    assert "Asked by the bots vs spent upstream" in out
    assert "/spot/api/v3/order?symbol=X&signature=[redacted]" in out
    assert "s3cr3t" not in out


def test_status_says_why_when_it_cannot_read(tmp_path):
    done = status(f"http://127.0.0.1:{free_port()}", "--timeout", "2", cwd=str(tmp_path))
    assert done.returncode == 2  # CRITICAL: a monitoring check's unreachable
    assert "cannot read" in done.stderr and done.stdout == ""
