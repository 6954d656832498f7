"""``python -m bnproxy status`` as a monitoring check: exit codes from the
verdict of ok, degraded, banned and unreachable proxies, and what a hostile or
broken server cannot do to it (escapes, malformed and huge answers, a drip)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest
from helpers import Harness, RecordingUpstream, chain
from zope.interface import implementer

from bnproxy.chain.interfaces import IProblemReporter
from bnproxy.testing.processes import free_port
from bnproxy.tools import status as status_tool


class Server:
    """A loopback HTTP server in a thread answering every request with
    ``handler(socket)`` (which writes whatever it likes)."""

    def __init__(self, handler: Callable[[socket.socket], None], port: int | None = None):
        self.handler = handler
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port or 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.paths: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(4096)
                if not data:
                    return
                head += data
            self.paths.append(head.split(b" ", 2)[1])
            self.handler(conn)

    def close(self) -> None:
        self.sock.close()


def answer(body: bytes, status: int = 200, length: int | None = None):
    def handle(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                     % (status, len(body) if length is None else length, body))
    return handle


@contextlib.contextmanager
def serving(handler):
    server = Server(handler)
    try:
        yield server
    finally:
        server.close()


def status(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bnproxy", "status", *args],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ})


# -- the verdict of real proxies (in-memory harnesses) as the exit code ---------------

def state_of(h: Harness) -> bytes:
    h.service.dashboard.tick()
    return h.request("GET", "/dashboard/state").body


def ok_proxy() -> Harness:
    h = Harness(RecordingUpstream(), middleware=chain("ratelimit"))
    h.service.readiness.probe()
    return h


def degraded_proxy() -> Harness:
    h = ok_proxy()

    @implementer(IProblemReporter)
    class Stale:
        name = "streams"

        def health_problems(self):
            return [("streams-stale:spot", "degraded", "47 of 47 spot streams stale")]
    h.service.middlewares.append(Stale())
    return h


def banned_proxy() -> Harness:
    statuses = iter([200, 418])

    def respond(request, seen):
        request.setResponseCode(next(statuses, 200))
        request.setHeader(b"retry-after", b"600")
        return b"{}"
    h = Harness(RecordingUpstream(respond), middleware=chain("ratelimit"))
    h.request("GET", "/api/v3/ping")
    h.request("GET", "/api/v3/time")
    return h


def not_ready_proxy() -> Harness:
    return Harness(RecordingUpstream())  # no upstream reached yet


@pytest.mark.parametrize(("make", "code", "word"), [
    (ok_proxy, 0, "OK"), (degraded_proxy, 1, "DEGRADED"), (banned_proxy, 2, "BANNED"),
    (not_ready_proxy, 2, "NOT READY")])
def test_the_exit_code_is_the_verdict(make, code, word):
    with serving(answer(state_of(make()))) as server:
        done = status(server.url + "/dashboard/")
    assert done.returncode == code, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("bnproxy ") and first.endswith(": " + word)
    assert server.paths == [b"/dashboard/state"]  # a /dashboard URL works
    if code:
        assert " since " in done.stdout.splitlines()[1]  # each problem, since when


def test_an_unreachable_proxy_is_critical_in_one_line():
    done = status(f"http://127.0.0.1:{free_port()}", "--timeout", "2")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "cannot read" in done.stderr


def test_admin_refusal_is_explained_and_a_404_is_not_blamed_on_it():
    with serving(answer(b'{"code":-1002}', status=403)) as server:
        done = status(server.url)
    assert done.returncode == 2 and "admin-only" in done.stderr
    with serving(answer(b"no", status=404)) as server:
        done = status(server.url)
    assert done.returncode == 2 and "404" in done.stderr and "admin" not in done.stderr


# -- hostile and broken servers --------------------------------------------------------

EVIL = "evil\x1b]0;OWNED\x07\x1b[2J\x1b]52;c;cm0gLXJmIH4=\x07\u202e\x9b31m"


def test_control_characters_in_names_and_messages_are_shown_escaped():
    h = banned_proxy()
    h.request("GET", "/api/v3/time", headers={b"X-Bnproxy-Client": EVIL.encode("utf-8")})
    doc = json.loads(state_of(h))
    doc["clients"] = [{"client": EVIL, "requests": 1, "weight": 1, "refused": 0,
                       "last_seen": doc["time"]}]
    doc["errors"] = [{"time": doc["time"], "client": EVIL, "method": "GET", "market": "spot",
                      "path": "/api/v3/" + EVIL, "query": EVIL, "status": 418,
                      "source": "upstream", "msg": EVIL}]
    doc["issues"][0]["text"] = EVIL
    for args in ((), ("--json",)):
        with serving(answer(json.dumps(doc).encode())) as server:
            done = status(server.url, *args)
        assert done.returncode == 2
        out = done.stdout
        assert not any(c in out for c in "\x1b\x07\x9b\u202e"), repr(out)
        if not args:
            assert "evil\\x1b]0;OWNED\\x07\\x1b[2J" in out


@pytest.mark.parametrize(("body", "what"), [
    (b"[1, 2, 3]", "a JSON list"),
    (b"[" * 100000 + b"]" * 100000, "not JSON"),
    (b'{"status": "ok", "pools": [{"pool": 1, "used": "x", "budget": {}}], "bans": 5,'
     b'"clients": [{"client": null, "last_seen": "yesterday"}], "weight_15m": [],'
     b'"errors": [{"time": "x"}], "issues": "none", "uptime_seconds": -1e308}', None),
    (b'{"status": "ok", "time": NaN}', "non-finite"),
    (b'{"status": "ok", "time": 1e999}', "non-finite"),
    (b'{"status": "fine"}', "no verdict"),
    (b"\xff\xfe not json", "not JSON"),
])
def test_a_malformed_answer_is_one_line_and_a_non_zero_exit(body, what):
    with serving(answer(body)) as server:
        done = status(server.url)
    if what is None:  # wrong types where a summary can be made: shown, no traceback
        assert done.returncode == 0 and done.stderr == "", done.stderr
        return
    assert done.returncode == 3 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and what in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_huge_answer_is_refused_without_reading_it_all():
    chunk = b" " * (1 << 20)

    def huge(conn: socket.socket) -> None:  # 200 MB, no Content-Length
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\n\r\n{\"status\": \"ok\", \"x\": \"")
        for _ in range(200):
            conn.sendall(chunk)
    with serving(huge) as server:
        done = status(server.url, "--timeout", "20")
    assert done.returncode == 3 and "larger than" in done.stderr
    with serving(answer(b"{}", length=200 << 20)) as server:
        done = status(server.url)
    assert done.returncode == 3 and "bytes (more than" in done.stderr


@pytest.mark.parametrize("where", ["head", "body"])
def test_a_drip_is_cut_at_the_total_deadline(where):
    stop = threading.Event()

    def drip(conn: socket.socket) -> None:
        data = (b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" if where == "body"
                else b"") + b"x" * 100000
        for byte in data:
            if stop.is_set():
                return
            conn.sendall(bytes([byte]))
            time.sleep(0.05)
    with serving(drip) as server:
        try:
            done = status(server.url, "--timeout", "1", timeout=20)
        finally:
            stop.set()
    assert done.returncode == 2 and "no complete answer within 1 s" in done.stderr


def test_options_are_validated():
    for args in (("--watch", "-1"), ("--watch", "nan"), ("--timeout", "0"),
                 ("--timeout", "inf"), ("--bots", "-3")):
        done = status(*args)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert "error: argument" in done.stderr


def test_a_bad_url_is_one_line():
    done = status("ftp://x/")
    assert done.returncode == 2 and "not an http(s) URL" in done.stderr


# -- watching ----------------------------------------------------------------------------

def test_watch_rides_through_a_restart_and_is_pipe_safe():
    body = state_of(ok_proxy())
    port = free_port()
    watch = subprocess.Popen([sys.executable, "-m", "bnproxy", "status", "--watch", "0.5",
                              "--timeout", "2", f"http://127.0.0.1:{port}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        errors = watch.stderr.readline()  # the proxy is not there yet: one line, going on
        assert "cannot read" in errors
        assert watch.poll() is None
        server = Server(answer(body), port=port)
        try:
            line = watch.stdout.readline()
            while not line.startswith("bnproxy "):
                line = watch.stdout.readline()
            assert line.rstrip().endswith(": OK")
        finally:
            server.close()
        assert watch.poll() is None
        watch.send_signal(signal.SIGINT)
        watch.wait(timeout=10)
        assert "Traceback" not in watch.stderr.read()
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    with serving(answer(body)) as server:
        piped = subprocess.run(
            f"{sys.executable} -m bnproxy status --watch 0.5 {server.url} | head -n 1",
            shell=True, capture_output=True, text=True, timeout=60)
    assert piped.stdout.startswith("bnproxy ")
    assert piped.stderr == ""


def test_clean_escapes_every_control_character():
    assert status_tool.clean("a\x00b\x1b[31m\x7f\x85\u202ec\td") == \
        "a\\x00b\\x1b[31m\\x7f\\x85\\u202ec\\td"
    assert status_tool.clean("x" * 500, 10) == "x" * 10 + "…"


def test_a_password_in_the_url_is_never_printed(capsys):
    from bnproxy.tools.status import shown

    assert shown("http://ops:s3cret@127.0.0.1:8080/dashboard") == \
        "http://127.0.0.1:8080/dashboard"
    assert shown("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
