"""deploy/docker-compose.scale.yml's topology on loopback: Debian's HAProxy
running the shipped deploy/haproxy-scale.cfg (Docker's DNS and port replaced
by loopback addresses, nothing else changed), real bnproxy replicas sharing a
real Redis, the fake exchange. A Binance ban must reach the bots as Binance's
418 with Retry-After from every replica, never as HAProxy's HTML 503; a
replica killed under load must cost the bots nothing."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest
import pytest_twisted
from test_scale import EGRESS, Fleet, exchange, get, sleep  # noqa: F401 (exchange: a fixture)
from twisted.internet import defer

from bnproxy.testing.processes import free_port, stop, wait_listening

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
SHIPPED = os.path.join(os.path.dirname(__file__), "..", "deploy", "haproxy-scale.cfg")
PING = "/api/v3/ping"


def loopback_config(text: str, front: int, replicas: list[int], stats: str) -> str:
    """The shipped configuration with Docker's parts replaced: the frontend
    binds 127.0.0.1:``front``; the ``server-template`` (Docker's DNS) becomes
    one ``server`` line per replica port with the same options; the
    ``resolvers`` section goes; a stats socket is added for the test to read.
    Fails if the shipped file no longer has the shape replaced here."""
    sections = re.split(r"\n(?=\S)", text)
    out = []
    replaced = {"bind": 0, "template": 0}
    for section in sections:
        if section.startswith("resolvers "):
            continue
        if section.startswith("global"):
            section += f"\n    stats socket {stats} level admin"
        lines = []
        for line in section.split("\n"):
            m = re.match(r"(\s+)bind :\d+$", line)
            if m:
                line, replaced["bind"] = f"{m.group(1)}bind 127.0.0.1:{front}", 1
            m = re.match(r"(\s+)server-template (\S+) \d+ \S+:\d+(.*)$", line)
            if m:
                indent, name, options = m.groups()
                options = re.sub(r" (resolvers|init-addr) \S+", "", options)
                lines += [f"{indent}server {name}{i} 127.0.0.1:{port}{options}"
                          for i, port in enumerate(replicas)]
                replaced["template"] = 1
                continue
            lines.append(line)
        out.append("\n".join(lines))
    assert replaced == {"bind": 1, "template": 1}, replaced
    return "\n".join(out) + "\n"


def test_the_shipped_haproxy_file_is_valid_and_keeps_bots_answered():
    if not os.path.exists(HAPROXY):
        pytest.fail("haproxy is not installed (apt-get install haproxy); .ci/run installs it")
    check = subprocess.run([HAPROXY, "-c", "-f", SHIPPED], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    text = open(SHIPPED).read()
    assert re.search(r"option httpchk GET /ready\n", text)
    assert re.search(r"option redispatch\b", text)
    assert re.search(r"retry-on conn-failure empty-response\n", text)
    assert re.search(r"\n    retries [1-9]", text)
    # only the safe methods are resent after a replica died mid-request
    assert "http-request disable-l7-retry unless METH_GET" in text


class HAProxy:
    def __init__(self, tmp_path, replicas: list[int]) -> None:
        self.port = free_port()
        self.stats_path = str(tmp_path / "haproxy.sock")
        path = tmp_path / "haproxy.cfg"
        path.write_text(loopback_config(open(SHIPPED).read(), self.port, replicas,
                                        self.stats_path))
        self.log = open(tmp_path / "haproxy.log", "w")
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(path)], cwd=str(tmp_path),
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_listening(self.port, self.proc)
        deadline = time.monotonic() + 10  # the stats socket may come a moment later
        while True:
            try:
                self.stats()
                break
            except OSError:
                assert self.proc.poll() is None and time.monotonic() < deadline, "no stats"
                time.sleep(0.02)

    def stats(self) -> dict[str, dict[str, str]]:
        """``show stat`` by server name (BACKEND and FRONTEND too)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(self.stats_path)
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
        return {r["svname"]: r for r in rows if r["pxname"] in ("bnproxy", "bots")}

    async def until_up(self, names: list[str], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if all(stats[n]["status"] == "UP" for n in names):
                return
            assert time.monotonic() < deadline, {n: stats[n]["status"] for n in names}
            await sleep(0.2)

    def stop(self) -> None:
        stop(self.proc)
        self.log.close()


def haproxy_installed() -> None:
    if not os.path.exists(HAPROXY):
        pytest.fail("haproxy is not installed (apt-get install haproxy); .ci/run installs it")


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_ban_reaches_bots_as_418_from_every_replica_never_as_haproxy_503(
        tmp_path, redis_server, exchange):  # noqa: F811 (the fixture)
    haproxy_installed()
    fleet = Fleet(tmp_path, redis_server.url, exchange.rest("spot"))
    front = None
    try:
        ports = [await fleet.start("--egress", EGRESS) for _ in range(2)]
        front = HAProxy(tmp_path, ports)
        await front.until_up(["bnproxy0", "bnproxy1"])
        exchange.exchange.ban(EGRESS, 120, "spot")
        # longer than HAProxy needs to take a failing server out (fall 3 x
        # inter 2 s): with /ready 503 during a ban, every server would be DOWN
        answers = []
        deadline = time.monotonic() + 9
        while time.monotonic() < deadline:
            response = await treq_get(front.port, PING)
            answers.append(response)
            await sleep(0.2)
        statuses = {status for status, _, _ in answers}
        assert statuses == {418}, [a for a in answers if a[0] != 418][:3]
        for _, headers, body in answers:
            assert int(headers[b"Retry-After"][0]) >= 1
            assert json.loads(body)["code"] == -1003  # Binance's body, not an HTML page
        stats = front.stats()
        for name in ("bnproxy0", "bnproxy1"):  # both answered, both still in rotation
            assert stats[name]["status"] == "UP", stats[name]["status"]
            assert int(stats[name]["hrsp_4xx"]) > 0
        assert int(stats["FRONTEND"]["hrsp_5xx"]) == 0
        for port in ports:
            code, body = await get(port, "/ready")
            assert code == 200 and "banned" in body.decode()
    finally:
        if front is not None:
            front.stop()
        fleet.stop()


async def treq_get(port: int, path: str) -> tuple[int, dict, bytes]:
    import treq
    from twisted.internet import reactor
    response = await treq.get(f"http://127.0.0.1:{port}{path}", reactor=reactor, timeout=15,
                              persistent=False)
    return (response.code, dict(response.headers.getAllRawHeaders()),
            await response.content())


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_replica_killed_under_load_costs_the_bots_nothing(
        tmp_path, redis_server, exchange):  # noqa: F811 (the fixture)
    haproxy_installed()
    fleet = Fleet(tmp_path, redis_server.url, exchange.rest("spot"))
    front = None
    try:
        ports = [await fleet.start("--egress", EGRESS) for _ in range(3)]
        front = HAProxy(tmp_path, ports)
        await front.until_up(["bnproxy0", "bnproxy1", "bnproxy2"])
        exchange.exchange.faults.latency = 0.2  # requests are in flight when it dies
        answers: list[tuple[int, bytes]] = []
        killed = defer.Deferred()

        async def bot() -> None:
            for _ in range(12):
                answers.append(await get(front.port, PING))
                if len(answers) == 18 and not killed.called:
                    fleet.procs[0].send_signal(signal.SIGKILL)
                    killed.callback(None)

        await defer.gatherResults([defer.ensureDeferred(bot()) for _ in range(6)])
        assert killed.called and fleet.procs[0].wait(5) == -signal.SIGKILL
        assert [a for a in answers if a[0] != 200] == []
        assert len(answers) == 72
        stats = front.stats()
        assert int(stats["BACKEND"]["wredis"]) > 0  # the dead replica was chosen, and left
        assert int(stats["FRONTEND"]["hrsp_5xx"]) == 0
    finally:
        if front is not None:
            front.stop()
        fleet.stop()
