"""``--workers``: processes sharing one listening socket, drained on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from bnproxy.server.workers import WorkersConfigError, check_workers, worker_fd_from_env

APP = os.path.join(os.path.dirname(__file__), "workers_app.py")


def test_workers_need_shared_state():
    check_workers(1, None)
    check_workers(2, "redis://127.0.0.1:6379/0")
    with pytest.raises(WorkersConfigError, match="--shared-state"):
        check_workers(2, None)
    with pytest.raises(WorkersConfigError):
        check_workers(0, None)
    assert worker_fd_from_env({"BNPROXY_WORKER_FD": "7"}) == 7
    assert worker_fd_from_env({}) is None


def get(port: int, path: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.read()


@pytest.mark.integration
@pytest.mark.e2e  # real Redis and several real proxy processes, minutes of the budget
def test_two_workers_answer_on_one_port_and_drain():
    proc = subprocess.Popen([sys.executable, APP, "2"], stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        line = b""
        deadline = time.monotonic() + 20
        while not line.startswith(b"PORT") and time.monotonic() < deadline:
            line = proc.stdout.readline()
        assert line.startswith(b"PORT"), "the parent did not start"
        port = int(line.split()[1])
        # each /pid blocks its process for 0.2 s: concurrent requests spread
        pids: set[bytes] = set()
        deadline = time.monotonic() + 30
        while len(pids) < 2 and time.monotonic() < deadline:
            results: list[bytes] = []

            def one(into: list[bytes] = results) -> None:
                into.append(get(port, "/pid"))

            threads = [threading.Thread(target=one) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(15)
            pids.update(results)
        assert len(pids) == 2, pids
        assert str(proc.pid).encode() in pids  # the parent serves too

        # SIGTERM to the parent: requests in flight in every worker finish
        slow: list[bytes] = []
        threads = [threading.Thread(target=lambda: slow.append(get(port, "/slow")))
                   for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.3)  # let them arrive (not a timing assertion)
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(15)
        assert proc.wait(20) == 0
        assert len(slow) == 6 and all(b.startswith(b"done") for b in slow)
        (child,) = {int(p) for p in pids} - {proc.pid}
        with pytest.raises(ProcessLookupError):  # the worker is gone too
            os.kill(child, 0)
        # nobody is left listening
        with pytest.raises(OSError):
            get(port, "/pid", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
