"""Real processes: ``twistd bnproxy --workers 2 --shared-state redis://…`` in
front of ``twistd bnproxy-exchange``; 100 bots open USD-M user-data streams
at once (one upstream connection each). Both workers together open at most
the user-data share of the pace (40 of the 50 upstream connections per clock
minute: 10 stay for the market data's own reconnects); the bots over it are
refused at once with 429."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.request

import pytest
from processes import free_port, twistd

from bnproxy.middleware.streams.pace import USER_DATA_LIMIT
from bnproxy.testing.rawws import upgrade

pytestmark = pytest.mark.integration
BOTS = 100


def upstream_connections(xport: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{xport}/_fake/", timeout=10) as r:
        return json.loads(r.read())["ws"]["connections_total"]


def open_user_stream(port: int, n: int, results: list) -> None:
    """One bot's upgrade: ``relayed``, ``refused`` (429), ``closed`` (a close
    frame follows the 101) or what else came."""
    key = hashlib.sha256(f"bot{n}".encode()).hexdigest()
    try:
        s, head, rest = upgrade(port, f"/usdm/ws/{key}")
        with s:
            s.settimeout(2.0)
            try:
                rest += s.recv(4096)
            except OSError:
                pass
            if head.startswith(b"HTTP/1.1 429"):
                results.append("refused")
            elif not head.startswith(b"HTTP/1.1 101"):
                results.append(head[:40])
            elif rest[:1] == b"\x88":
                results.append(("closed", int.from_bytes(rest[2:4], "big")))
            else:
                results.append("relayed")
                time.sleep(1)
    except OSError as e:
        results.append(repr(e))


def test_two_workers_open_the_pace_s_connections_together(tmp_path, redis_server):
    cwd = str(tmp_path)
    xport, pport = free_port(), free_port()
    with twistd("bnproxy-exchange", "--port", f"tcp:{xport}:interface=127.0.0.1",
                port=xport, cwd=cwd), \
            twistd("bnproxy", "--port", f"tcp:{pport}:interface=127.0.0.1",
                   "--upstream", f"usdm=http://127.0.0.1:{xport}/usdm",
                   "--stream-upstream", f"usdm=ws://127.0.0.1:{xport}/usdm",
                   "--shared-state", redis_server.url, "--workers", "2",
                   # Redis decides every grant (the guarantee while the state is ok): on
                   # this shared test host, 100 handshakes at once can delay its answers
                   # past the default 50 ms, and grants decided locally meanwhile follow
                   # the shared state's degraded rule (a balanced fleet's share)
                   "--shared-state-deadline", "1",
                   "--state-dir", cwd, "--access-log", "none", port=pport, cwd=cwd):
        time.sleep(2)  # both workers serving
        if time.time() % 60 > 40:  # the run (about 12 s) within one clock minute
            time.sleep(61 - time.time() % 60)
        base = upstream_connections(xport)
        start = time.time()
        results: list = []
        bots = [threading.Thread(target=open_user_stream, args=(pport, n, results))
                for n in range(BOTS)]
        for b in bots:
            b.start()
        for b in bots:
            b.join(60)
        end = time.time()
        opened = upstream_connections(xport) - base
    windows = int(end // 60) - int(start // 60) + 1  # clock minutes the run touched
    relayed = results.count("relayed")
    assert len(results) == BOTS and set(results) <= {"relayed", "refused"}
    assert opened == relayed
    # one minute's user-data share for both workers (each alone would open 40: 83
    # of the 100 opened when the pace was counted per process)
    assert windows == 1 and relayed == USER_DATA_LIMIT
