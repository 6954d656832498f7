"""The live feed bounded, against a real proxy: 256 dashboard event streams
that never read, from several admin addresses, cost the proxy at most a few
MB and are closed."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from processes import free_port, twistd

pytestmark = pytest.mark.integration

ADDRESSES = [f"127.0.0.{i}" for i in range(1, 9)]
STREAMS = 256


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_stream(port: int, source: str) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # a tab that never reads
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET /dashboard/events HTTP/1.1\r\nHost: x\r\n\r\n")
    return s


def ask(port: int, i: int) -> None:
    """One bot's request (a long name, an error with a long path): what makes
    the dashboard's document big."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET /api/v3/{'p' * 150}{i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
              f"X-Bnproxy-Client: bot-{i:02d}-{'n' * 58}\r\n\r\n".encode())
    while s.recv(65536):
        pass
    s.close()


def seed_bots(port: int, count: int) -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: ask(port, i), range(count)))


def status_of(s: socket.socket) -> int | None:
    s.settimeout(10)
    head = s.recv(12, socket.MSG_PEEK)
    return int(head[9:12]) if head.startswith(b"HTTP/1.1 ") else None


def test_256_unread_event_streams_cost_a_few_mb_and_are_closed(tmp_path):
    port = free_port()
    # No exchange (nothing else grows the process while it is measured);
    # the send deadline out of the way.
    with twistd("bnproxy", "--port", f"tcp:{port}:interface=127.0.0.1", "--state-dir", ".",
                "--upstream", "spot=http://127.0.0.1:9", "--access-log", "none",
                "--send-timeout", "600",
                "--max-connections-per-client", "64", port=port, cwd=str(tmp_path)) as proc:
        seed_bots(port, 60)  # the events' size: the unread streams fill in seconds, not minutes
        time.sleep(2)  # a few ticks: the feed's own state is there before measuring
        before = rss_kib(proc.pid)
        streams = [open_stream(port, ADDRESSES[i % len(ADDRESSES)]) for i in range(STREAMS)]
        statuses = [status_of(s) for s in streams]
        accepted = [s for s, code in zip(streams, statuses) if code == 200]
        assert 0 < len(accepted) <= 32  # the cap in all
        assert statuses.count(429) == STREAMS - len(accepted)
        assert not any(_closed_by_peer(s) for s in accepted)
        peak = before
        deadline = time.monotonic() + 180
        open_now = list(accepted)
        while open_now:
            assert time.monotonic() < deadline, f"{len(open_now)} streams still open"
            peak = max(peak, rss_kib(proc.pid))
            ask(port, 0)  # a busy bots table: each tick's patch carries it (uncompressed)
            time.sleep(0.5)
            open_now = [s for s in open_now if not _closed_by_peer(s)]
        assert peak - before < 4 * 1024, f"the proxy grew by {peak - before} KiB"
        # closed for not reading, not by the send deadline (600 s): and a new
        # tab is served again
        for s in streams:
            s.close()
        fresh = open_stream(port, "127.0.0.1")
        assert status_of(fresh) == 200
        fresh.close()


def _closed_by_peer(s: socket.socket) -> bool:
    """Has the proxy closed it? Checked without reading what it sent (a
    reset shows as an error on the socket)."""
    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        return True
    try:
        s.setblocking(False)
        s.send(b"")
        return False
    except OSError:
        return True


def test_a_tab_without_gzip_reads_a_first_event_larger_than_the_unsent_bound(tmp_path):
    from bnproxy.dashboard.resource import UNSENT

    port = free_port()
    with twistd("bnproxy", "--port", f"tcp:{port}:interface=127.0.0.1", "--state-dir", ".",
                "--upstream", "spot=http://127.0.0.1:9", "--access-log", "none",
                port=port, cwd=str(tmp_path)):
        seed_bots(port, 60)  # 50 bots shown, 20 errors: a big first event
        time.sleep(2)  # a tick: every bot in the document
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /dashboard/events HTTP/1.1\r\nHost: x\r\n\r\n")  # no gzip
        s.settimeout(10)
        received = b""
        while received.count(b"\n\n") < 4:  # the head, retry:, the state, a patch
            chunk = s.recv(65536)
            assert chunk, f"closed after {len(received)} bytes"
            received += chunk
        s.close()
    state = received.split(b"event: state\ndata: ", 1)[1].split(b"\n\n", 1)[0]
    assert len(state) > UNSENT  # the case: more than the bound, at once
    assert b"event: patch\ndata: {" in received
