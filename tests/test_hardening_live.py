"""Hardening against real sockets, and slowhttptest (Debian's package)."""

import shutil
import socket
import subprocess
import time
import urllib.request

import pytest
from processes import free_port, twistd

pytestmark = pytest.mark.integration

HEADER_DEADLINE = "1"  # seconds: short, so that the slow attacks end soon


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    cwd = str(tmp_path_factory.mktemp("hardened"))
    port = free_port()
    with twistd("bnproxy", "--port", f"tcp:{port}:interface=127.0.0.1", "--simulated-exchange",
                "--header-timeout", HEADER_DEADLINE, "--client-body-timeout", "1", "--max-body", "1000",
                "--max-connections-per-client", "400", port=port, cwd=cwd) as proc:
        yield port, proc


def exchange(port, data: bytes, wait: float = 3.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=wait + 2) as s:
        s.sendall(data)
        s.settimeout(wait + 2)
        chunks = []
        deadline = time.monotonic() + wait + 2
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def test_a_slowloris_connection_is_closed_at_the_header_deadline(proxy):
    port, _ = proxy
    t = time.monotonic()
    reply = exchange(port, b"GET /api/v3/ping HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
    deadline = float(HEADER_DEADLINE)
    assert reply.startswith(b"HTTP/1.1 408") and 0.9 * deadline < time.monotonic() - t < 4


def test_an_oversized_body_is_refused_before_it_is_sent(proxy):
    port, _ = proxy
    reply = exchange(port, b"POST /api/v3/order HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n"
                           b"Expect: 100-continue\r\n\r\n", wait=1)
    assert reply.startswith(b"HTTP/1.1 413")


def test_te_on_http10_is_refused(proxy):
    port, _ = proxy
    reply = exchange(port, b"POST /api/v3/order HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"0\r\n\r\n", wait=1)
    assert reply.startswith(b"HTTP/1.1 400")


@pytest.mark.skipif(shutil.which("slowhttptest") is None, reason="slowhttptest not installed")
def test_slowhttptest_slowloris_cannot_starve_the_proxy(proxy, tmp_path):
    port, _ = proxy
    attack = subprocess.Popen(
        ["slowhttptest", "-H", "-c", "200", "-r", "200", "-i", "1", "-l", "4", "-x", "8",
         "-p", "3", "-u", f"http://127.0.0.1:{port}/api/v3/ping", "-g", "-o",
         str(tmp_path / "slow")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.2)  # the attack is at full strength: its 200 connections are open
        t = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v3/time", timeout=5) as r:
            assert r.status == 200
        assert time.monotonic() - t < 2.0
        out, _ = attack.communicate(timeout=30)
    finally:
        if attack.poll() is None:
            attack.kill()
    csv = (tmp_path / "slow.csv").read_text().strip().splitlines()
    header = [h.strip().lower() for h in csv[0].split(",")]
    last = dict(zip(header, csv[-1].split(",")))
    assert int(last["closed"]) >= 100  # the proxy closed the slow connections at its deadline
    del out
