"""Nothing read from Redis is trusted: whatever another client wrote to the
fleet's keys or published on its channel, the next ban is stored, published
and heard by every instance (and read by one started later), budgets stay
within the budget, and nothing malformed reaches a ban state file."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import pytest_twisted
from test_cluster import started, wait_until, window_now

from bnproxy.cluster import validate

TEN_YEARS = 10 * 365 * 86_400


def cli(server, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(server.port), *args], check=True,
                          capture_output=True, text=True, timeout=10).stdout.strip()


def message(until, status=418, scope="x", egress="default") -> str:
    return json.dumps({"egress": egress, "scope": scope, "until": until, "status": status,
                       "cause": "another client"})


# Each writes something no instance wrote; ``now`` is epoch seconds.
MALFORMED = {
    "null until": lambda s, now: cli(s, "HSET", "bnproxy:bans", "default|x", '[null,418,"x"]'),
    "a number": lambda s, now: cli(s, "HSET", "bnproxy:bans", "default|x", "5"),
    "an object": lambda s, now: cli(s, "HSET", "bnproxy:bans", "default|x", '{"a":1}'),
    "bans key a string": lambda s, now: cli(s, "SET", "bnproxy:bans", "garbage"),
    "bans key a list": lambda s, now: cli(s, "RPUSH", "bnproxy:bans", "garbage"),
    "until 1e999 stored": lambda s, now: cli(s, "HSET", "bnproxy:bans", "default|x",
                                             '[1e999,418,"x"]'),
    "a ten-year ban stored": lambda s, now: cli(s, "HSET", "bnproxy:bans", "default|x",
                                                json.dumps([now + TEN_YEARS, 418, "x"])),
    "status 200 stored": lambda s, now: cli(s, "HSET", "bnproxy:bans", "default|x",
                                            json.dumps([now + 60, 200, "x"])),
    "until 1e999 published": lambda s, now: cli(
        s, "PUBLISH", "bnproxy:bans", message(now).replace(str(now), "1e999")),
    "NaN published": lambda s, now: cli(
        s, "PUBLISH", "bnproxy:bans", message(now).replace(str(now), "NaN")),
    "a ten-year ban published": lambda s, now: cli(s, "PUBLISH", "bnproxy:bans",
                                                   message(now + TEN_YEARS)),
    "a list published": lambda s, now: cli(s, "PUBLISH", "bnproxy:bans", "[1,2,3]"),
    "ledger key a string": lambda s, now: cli(s, "SET", "bnproxy:ledger", "x"),
    "instances key a string": lambda s, now: cli(s, "SET", "bnproxy:instances", "x"),
}


@pytest.mark.parametrize("what", sorted(MALFORMED))
@pytest_twisted.ensureDeferred
async def test_the_next_ban_still_spreads(redis_server, what):
    from twisted.internet import reactor
    a, b = await started(redis_server), await started(redis_server)
    late = None
    try:
        heard: list = []
        b.on_ban(lambda *args: heard.append(args))
        MALFORMED[what](redis_server, reactor.seconds())
        until = reactor.seconds() + 120
        await a.set_ban("127.0.0.2", "spot", until, 418, "418 from /api/v3/depth")
        await wait_until(lambda: b.banned_until("127.0.0.2", "spot") == until,
                         "the ban heard by the other instance")
        assert heard == [("127.0.0.2", "spot", until, 418, "418 from /api/v3/depth")]
        late = await started(redis_server)  # starts while the entry is there
        assert late.status == "ok"
        assert late.banned_until("127.0.0.2", "spot") == until
        for s in (a, b, late):  # nothing malformed was taken as a ban
            assert s.banned_until("default", "x") == 0.0
            assert set(await s.bans()) == {("127.0.0.2", "spot")}
            assert s.status == "ok", s.health()
        # the ledger and the heartbeats still work
        a.add("bot", 3, 1, 0)
        await wait_until(lambda: late.live_instances() == 3, "three live instances")
        table: dict = {}
        deadline = time.monotonic() + 10
        while table.get("bot", {}).get("weight") != 3 and time.monotonic() < deadline:
            table = await late.clients()
        assert table["bot"] == {"weight": 3, "requests": 1, "rejected": 0}
    finally:
        for s in (a, b, late):
            if s is not None:
                await s.stop()


@pytest.mark.parametrize("tamper", ["SET {key} -100000", "HSET {key} a -100000",
                                    "HSET {key} b -100000", "HSET {key} e ''",
                                    "RPUSH {key} x"])
@pytest_twisted.ensureDeferred
async def test_a_tampered_window_counter_never_lets_the_fleet_pass_the_budget(
        redis_server, tamper):
    a, b = await started(redis_server), await started(redis_server)
    try:
        w = window_now()
        granted = 0
        while await a.reserve("default", "spot", 10, 1000, w):
            granted += 10
            if granted == 600:
                key = f"bnproxy:w:default|spot|{w}"
                cli(redis_server, *[p.format(key=key) for p in tamper.split()])
        while await b.reserve("default", "spot", 10, 1000, w):
            granted += 10
        assert 600 <= granted <= 1000  # what a and b had seen re-seeded the count
        assert await b.used("default", "spot", w) >= granted  # never below it
        assert a.status == b.status == "ok"
    finally:
        await a.stop()
        await b.stop()


def test_validation_table():
    now = 1_000_000.0
    assert validate.ban_entry('[1000060.5, 418, "x"]', now) == (1000060.5, 418, "x")
    for bad in ('[null,418,"x"]', "5", '{"a":1}', '[1e999,418,"x"]', '[NaN,418,"x"]',
                '[1000060,200,"x"]', '[1000060,418]', '[1000060,418,5]', "not json",
                json.dumps([now + TEN_YEARS, 418, "x"]), '[true,418,"x"]',
                '[1000060,true,"x"]'):
        assert validate.ban_entry(bad, now) is None, bad
    assert validate.ban_message(message(now + 60), now) == (
        "default", "x", now + 60, 418, "another client")
    for bad in (message("1"), message(now + 60, status="418"), message(now + 60, scope=""),
                message(float("inf")), "[]", message(now + 60, egress=None)):
        assert validate.ban_message(bad, now) is None, bad
    assert [validate.count(v) for v in ("12", b"7", 3, "-1", "1e3", "x", None, True,
                                        "9" * 16)] == [12, 7, 3] + [None] * 6
    assert validate.ban_field("default|host:spot.upstream.test") == (
        "default", "host:spot.upstream.test")
    assert validate.ban_field("nofield") is None and validate.ban_field(5) is None


@pytest_twisted.ensureDeferred
async def test_the_readmes_acl_user_is_enough(tmp_path):
    # the README's recommended ACL: default user off, one user on the fleet's
    # keys and channel, nothing dangerous
    from redis_server import RedisServer
    from test_cluster import FAST
    from twisted.internet import reactor

    from bnproxy.cluster.redis_state import RedisSharedState
    acl = tmp_path / "users.acl"
    acl.write_text("user default off\n"
                   "user bnproxy on >s3cr3t-pw ~bnproxy:* &bnproxy:* +@all -@dangerous\n")
    server = RedisServer(str(tmp_path / "redis"), extra_args=("--aclfile", str(acl)))
    server.start()
    states: list = []
    try:
        url = f"redis://bnproxy:s3cr3t-pw@127.0.0.1:{server.port}/0"
        a = RedisSharedState(reactor, url, **FAST)
        b = RedisSharedState(reactor, url, **FAST)
        states = [a, b]
        await a.start()
        await b.start()
        assert a.status == b.status == "ok", (a.last_error, b.last_error)
        assert await a.reserve("default", "spot", 5, 10, window_now())
        until = reactor.seconds() + 60
        await a.set_ban("default", "spot", until, 429, "429")
        await wait_until(lambda: b.banned_until("default", "spot") == until, "the ban")
        a.add("bot", 1, 1, 0)
        await wait_until(lambda: a.live_instances() == 2, "two live instances")
        assert "s3cr3t" not in repr(a.health())
    finally:
        for s in states:
            await s.stop()
        server.stop()


def test_each_malformed_key_is_logged_once():
    from twisted.logger import globalLogPublisher
    events: list = []
    globalLogPublisher.addObserver(events.append)
    try:
        rejected = validate.Rejected(limit=3)
        for key in ("bnproxy:bans default|x", "bnproxy:bans default|x", "b", "c", "d", "e",
                    "b"):
            rejected("ban entry", key)
    finally:
        globalLogPublisher.removeObserver(events.append)
    logged = [e for e in events if e.get("log_namespace") == "bnproxy.cluster"]
    assert [e.get("key") for e in logged] == ["bnproxy:bans default|x", "b", "c", None]
    assert "no more are logged" in logged[-1]["log_format"]
