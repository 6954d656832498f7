"""Scale-out end to end: bnproxy processes sharing one Redis, sending from
127.0.0.2, against the fake exchange (in this process, counting weight per
client address)."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.internet.error import ConnectionRefusedError

from bnproxy.testing.fake.run import start_exchange
from bnproxy.testing.processes import TWISTD, free_port

EGRESS = "127.0.0.2"
LIMIT = 200
BUDGET = 180  # the governor's 10 % margin
DEPTH = "/api/v3/depth?symbol=BTCUSDT&limit=100"  # weight 5


def sleep(seconds: float) -> defer.Deferred:
    from twisted.internet import reactor
    return task.deferLater(reactor, seconds, lambda: None)


async def get(port: int, path: str) -> tuple[int, bytes]:
    import treq
    from twisted.internet import reactor
    response = await treq.get(f"http://127.0.0.1:{port}{path}", reactor=reactor, timeout=10,
                              persistent=False)
    return response.code, await response.content()


class Fleet:
    def __init__(self, tmp_path, redis_url: str, spot: str) -> None:
        self.tmp_path = tmp_path
        self.redis_url = redis_url
        self.spot = spot
        self.procs: list[subprocess.Popen] = []

    async def start(self, *extra: str) -> int:
        port = free_port()
        n = len(self.procs)
        state = self.tmp_path / f"state{n}"
        state.mkdir()
        log = open(self.tmp_path / f"proxy{n}.log", "w")
        proc = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "bnproxy", "--port", f"tcp:{port}:interface=127.0.0.1",
             "--upstream", f"spot={self.spot}", "--shared-state", self.redis_url,
             "--state-dir", str(state), "--access-log", "none",
             "--middleware-chain", f"ratelimit:limit.spot={LIMIT}", *extra],
            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        log.close()
        self.procs.append(proc)
        deadline = time.monotonic() + 30
        while True:
            try:
                code, _ = await get(port, "/live")
                if code == 200:
                    break
            except Exception:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(open(self.tmp_path / f"proxy{n}.log").read())
            await sleep(0.1)
        return port

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def exchange():
    from twisted.internet import reactor
    running = start_exchange(reactor, weight_limits={"spot": LIMIT})
    yield running
    running.exchange.stop()
    running.exchange.port.stopListening()


async def inside_one_minute() -> None:
    # Requests in flight across a minute boundary are reserved in one window
    # and counted by the exchange in the next: keep the test inside one.
    if time.time() % 60 > 40:
        await sleep(60.5 - time.time() % 60)


@pytest.mark.integration
@pytest.mark.e2e  # real Redis and several real proxy processes, minutes of the budget
@pytest_twisted.ensureDeferred
async def test_a_418_through_one_instance_silences_every_instance(tmp_path, redis_server,
                                                                 exchange):
    fleet = Fleet(tmp_path, redis_server.url, exchange.rest("spot"))
    try:
        ports = [await fleet.start("--egress", EGRESS) for _ in range(3)]
        exchange.exchange.ban(EGRESS, 30, "spot")
        code, body = await get(ports[0], DEPTH)
        assert code == 418  # Binance's, through the first instance
        seen = sum(exchange.exchange.counters.statuses.values())
        for port in ports[1:]:  # the ban reaches them through Redis (no fixed wait: loaded CI)
            deadline = time.monotonic() + 10
            while b'"banned"' not in (await get(port, "/ready"))[1]:
                assert time.monotonic() < deadline, f"the ban never reached {port}"
                await sleep(0.05)
        for port in ports[1:]:
            code, body = await get(port, DEPTH)
            assert code == 418 and b"was not sent" in body
        fourth = await fleet.start("--egress", EGRESS)
        code, body = await get(fourth, DEPTH)
        assert code == 418 and b"was not sent" in body
        assert sum(exchange.exchange.counters.statuses.values()) == seen
    finally:
        fleet.stop()


@pytest.mark.integration
@pytest.mark.e2e  # real Redis and several real proxy processes, minutes of the budget
@pytest_twisted.ensureDeferred
async def test_three_instances_twenty_bots_never_pass_the_budget(tmp_path, redis_server,
                                                                 exchange):
    fleet = Fleet(tmp_path, redis_server.url, exchange.rest("spot"))
    try:
        ports = [await fleet.start("--egress", EGRESS) for _ in range(3)]
        await inside_one_minute()
        answers: list[int] = []

        async def bot(n: int) -> None:
            for _ in range(5 * BUDGET // 5 // 20):
                code, _ = await get(ports[n % 3], DEPTH)
                answers.append(code)

        await defer.gatherResults([defer.ensureDeferred(bot(n)) for n in range(20)])
        statuses = exchange.exchange.counters.statuses
        used = exchange.exchange.limiters["spot"].used(EGRESS, exchange.exchange.market_ms())
        assert statuses[429] == 0 and statuses[418] == 0
        assert used <= BUDGET
        # every answer given was sent once (plus each instance's readiness ping)
        assert answers.count(200) * 5 <= used <= answers.count(200) * 5 + 3
        assert used >= BUDGET // 2  # the fleet did use its budget
        await until_live(ports[:1], 3)  # as its next heartbeat (every 2 s) sees it
        # the ledger is the fleet's: one instance shows every bot request
        deadline = time.monotonic() + 10
        while True:
            health = json.loads((await get(ports[0], "/health"))[1])
            clients = health["middleware"]["ratelimit"]["clients"]
            if clients.get("127.0.0.1", {}).get("requests") == len(answers):
                break
            assert time.monotonic() < deadline, clients
            await sleep(0.3)
    finally:
        fleet.stop()


@pytest.mark.integration
@pytest.mark.e2e  # real Redis and several real proxy processes, minutes of the budget
@pytest_twisted.ensureDeferred
async def test_two_workers_answer_and_share_one_budget(tmp_path, redis_server, exchange):
    fleet = Fleet(tmp_path, redis_server.url, exchange.rest("spot"))
    try:
        port = await fleet.start("--egress", EGRESS, "--workers", "2")
        await inside_one_minute()
        await sleep(2.5)  # the worker's heartbeat
        health = json.loads((await get(port, "/health"))[1])
        assert health["middleware"]["shared-state"]["live_instances"] == 2
        codes = [(await get(port, DEPTH))[0] for _ in range(60)]
        used = exchange.exchange.limiters["spot"].used(EGRESS, exchange.exchange.market_ms())
        assert used <= BUDGET and exchange.exchange.counters.statuses[429] == 0
        assert codes.count(200) * 5 <= used <= codes.count(200) * 5 + 2
        parent = fleet.procs[0]
        parent.terminate()
        assert parent.wait(20) == 0
        # the worker drained and went with it: nothing accepts any more
        await sleep(0.5)
        with pytest.raises(ConnectionRefusedError):
            await get(port, "/live")
    finally:
        fleet.stop()


def test_workers_without_shared_state_are_refused_in_one_line(tmp_path):
    proc = subprocess.run(
        [TWISTD, "-n", "--pidfile=", "bnproxy", "--port", f"tcp:{free_port()}",
         "--state-dir", str(tmp_path), "--workers", "2"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "--workers 2 needs --shared-state" in proc.stderr + proc.stdout


def from_ip(exchange, ip: str) -> int:
    return sum(n for (_, _, source), n in exchange.exchange.counters.requests.items()
               if source == ip)


async def ready(port: int) -> tuple[int, dict]:
    code, body = await get(port, "/ready")
    return code, json.loads(body)


async def until_live(ports, n: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        docs = [json.loads((await get(p, "/health"))[1]) for p in ports]
        if all(d["middleware"]["shared-state"]["live_instances"] == n for d in docs):
            return
        assert time.monotonic() < deadline, f"never {n} live instances"
        await sleep(0.2)


async def until_ready(ports, status: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        answers = [await ready(p) for p in ports]
        if all(code == 200 and doc["status"] == status for code, doc in answers):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"/ready never said {status}: {answers}")
        await sleep(0.2)


@pytest.mark.integration
@pytest.mark.e2e  # real Redis and several real proxy processes, minutes of the budget
@pytest_twisted.ensureDeferred
async def test_redis_stopped_under_load_costs_no_429_and_recovers(tmp_path, redis_server,
                                                                   exchange):
    fleet = Fleet(tmp_path, redis_server.url, exchange.rest("spot"))
    try:
        ports = [await fleet.start("--egress", EGRESS) for _ in range(3)]
        await until_ready(ports, "ready")
        await until_live(ports, 3)  # each divides by the instances it last saw
        await inside_one_minute()
        answers: list[int] = []

        async def load(rounds: int) -> None:
            async def bot(n: int) -> None:
                for _ in range(rounds):
                    answers.append((await get(ports[n % 3], DEPTH))[0])
            await defer.gatherResults([defer.ensureDeferred(bot(n)) for n in range(20)])

        await load(1)
        redis_server.stop()
        await until_ready(ports, "degraded")
        code, doc = await ready(ports[0])
        assert "shared state degraded" in doc["problems"][0]
        health = json.loads((await get(ports[0], "/health"))[1])
        assert health["status"] == "degraded"
        await load(4)
        redis_server.start()
        await until_ready(ports, "ready")
        await load(2)
        statuses = exchange.exchange.counters.statuses
        used = exchange.exchange.limiters["spot"].used(EGRESS, exchange.exchange.market_ms())
        assert statuses[429] == 0 and statuses[418] == 0
        assert used <= BUDGET
        assert answers.count(200) >= 20  # it served throughout
    finally:
        fleet.stop()


EGRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


@pytest.mark.integration
@pytest.mark.e2e  # real Redis and several real proxy processes, minutes of the budget
@pytest_twisted.ensureDeferred
async def test_three_egress_addresses_give_three_budgets(tmp_path, redis_server, exchange):
    fleet = Fleet(tmp_path, redis_server.url, exchange.rest("spot"))
    try:
        args = [a for e in EGRESSES for a in ("--egress", e)]
        ports = [await fleet.start(*args) for _ in range(2)]
        await inside_one_minute()
        answers: list[int] = []

        async def bot(n: int) -> None:
            for _ in range(4 * BUDGET // 5 // 20 * 3):
                answers.append((await get(ports[n % 2], DEPTH))[0])

        await defer.gatherResults([defer.ensureDeferred(bot(n)) for n in range(20)])
        now = exchange.exchange.market_ms()
        used = {e: exchange.exchange.limiters["spot"].used(e, now) for e in EGRESSES}
        assert exchange.exchange.counters.statuses[429] == 0
        assert all(u <= BUDGET for u in used.values()), used
        assert sum(used.values()) >= 2 * BUDGET, used  # about three budgets' worth
        metrics = (await get(ports[0], "/metrics"))[1].decode()
        assert 'bnproxy_weight_used{egress="127.0.0.3",pool="spot"}' in metrics
    finally:
        fleet.stop()


@pytest.mark.integration
@pytest.mark.e2e  # real Redis and several real proxy processes, minutes of the budget
@pytest_twisted.ensureDeferred
async def test_a_ban_on_one_egress_moves_its_traffic_to_the_others(tmp_path, redis_server,
                                                                   exchange):
    fleet = Fleet(tmp_path, redis_server.url, exchange.rest("spot"))
    try:
        args = [a for e in EGRESSES for a in ("--egress", e)]
        port = await fleet.start(*args)
        exchange.exchange.ban("127.0.0.3", 30, "spot")
        codes = [(await get(port, DEPTH))[0] for _ in range(12)]
        assert codes.count(418) <= 1  # the one request that met the ban
        assert from_ip(exchange, "127.0.0.3") <= 1 + 1  # and perhaps a readiness ping
        before = from_ip(exchange, "127.0.0.3")
        codes = [(await get(port, DEPTH))[0] for _ in range(12)]
        assert codes == [200] * 12
        assert from_ip(exchange, "127.0.0.3") == before
        assert from_ip(exchange, "127.0.0.2") > 0 and from_ip(exchange, "127.0.0.4") > 0
        code, doc = await ready(port)
        assert code == 200  # two addresses still serve
    finally:
        fleet.stop()
