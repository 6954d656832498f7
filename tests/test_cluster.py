"""Shared state: the URL parser, the in-process state and the fallback in
virtual time; RedisSharedState against a real redis-server on loopback."""

from __future__ import annotations

import time

import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from bnproxy.chain.interfaces import ISharedState
from bnproxy.cluster.errors import SharedStateUnavailableError
from bnproxy.cluster.keys import hashed_label
from bnproxy.cluster.leases import Fallback
from bnproxy.cluster.redis_state import RedisSharedState
from bnproxy.cluster.url import RedisURLError, parse_redis_url

# -- the URL ------------------------------------------------------------------------


def test_url_parts_and_redaction():
    u = parse_redis_url("redis://bn:s%40cret@redis.internal:6380/3")
    assert (u.host, u.port, u.db, u.username, u.password, u.tls) == (
        "redis.internal", 6380, 3, "bn", "s@cret", False)
    assert "s@cret" not in repr(u) and "cret" not in str(u)
    assert u.redacted() == "redis://bn:***@redis.internal:6380/3"
    t = parse_redis_url("rediss://:pw@[::1]")
    assert (t.host, t.port, t.db, t.username, t.tls) == ("::1", 6379, 0, None, True)
    assert t.redacted() == "rediss://:***@[::1]:6379/0"


@pytest.mark.parametrize("bad", ["http://h:1/0", "redis://", "redis://h:1/x",
                                 "redis://h:99999/0", "redis://h/0?ssl=1"])
def test_url_refused_without_the_password(bad):
    with pytest.raises(RedisURLError) as e:
        parse_redis_url(bad.replace("redis://h", "redis://u:topsecret@h"))
    assert "topsecret" not in str(e.value)


def test_hashed_label_hides_the_key():
    label = hashed_label("vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A")
    assert label.startswith("key:") and "vmPUZE" not in label
    assert label == hashed_label("vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A")


# -- in-process ---------------------------------------------------------------------


def test_fallback_takes_a_share_of_what_is_left():
    f = Fallback()
    f.saw("a", "spot", 60, 400)  # the fleet had used 400 of 1000 when Redis went away
    granted = 0
    while f.reserve("a", "spot", 10, 1000, 60, live=3):
        granted += 10
    assert granted == 200  # (1000 - 400) / 3
    # Binance's own count wins when it is higher
    f.reconcile("a", "spot", 120, 990)
    assert not f.reserve("a", "spot", 20, 1000, 120, live=1)
    assert f.reserve("a", "spot", 10, 1000, 120, live=1)
    # a new window: the whole budget split by the live instances
    assert f.reserve("a", "spot", 500, 1000, 180, live=2)
    assert not f.reserve("a", "spot", 1, 1000, 180, live=2)
    # never more than a fair share of the window in all, however stale the view
    f.saw("a", "spot", 300, 300)  # it saw 300 used; the fleet really had 600
    f.granted("a", "spot", 300, 300)  # 300 of them were its own
    granted = 0
    while f.reserve("a", "spot", 10, 1000, 300, live=2):
        granted += 10
    assert granted == 200  # 1000 / 2 - 300, not (1000 - 300) / 2
    # a late answer from Redis showing the fleet full stops local grants
    assert f.reserve("a", "spot", 10, 1000, 240, live=2, sent=True)
    f.saw("a", "spot", 240, 995)
    assert not f.reserve("a", "spot", 10, 1000, 240, live=2, sent=True)
    # written back later: only what Redis did not count
    f.uncounted("a", "spot", 240, 10)
    assert f.local[("a", "spot")][4] == 10


# -- real Redis ------------------------------------------------------------------------

FAST = dict(heartbeat_interval=0.2, heartbeat_ttl=2.0, ledger_interval=0.2,
            reconnect_max=0.3, connect_timeout=2.0)
WAIT = 10.0  # every wait below is bounded by this


def sleep(seconds: float) -> defer.Deferred:
    from twisted.internet import reactor
    return task.deferLater(reactor, seconds, lambda: None)


async def wait_until(predicate, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await sleep(0.02)


async def started(server, **kwargs) -> RedisSharedState:
    from twisted.internet import reactor
    state = RedisSharedState(reactor, server.url, **{**FAST, **kwargs})
    await state.start()
    return state


def window_now() -> int:
    return int(time.time() // 60 * 60)


@pytest_twisted.ensureDeferred
async def test_three_instances_never_exceed_the_budget(redis_server):
    states = [await started(redis_server, deadline=2.0) for _ in range(3)]
    try:
        assert all(s.status == "ok" for s in states)
        verifyObject(ISharedState, states[0])
        w = window_now()
        calls = [s.reserve("127.0.0.2", "spot", 7, 500, w) for _ in range(60) for s in states]
        results = await defer.gatherResults(calls)
        assert sum(results) * 7 == 497  # 71 of 180 fit; never one too many
        assert await states[2].used("127.0.0.2", "spot", w) == 497
        # another egress address, another pool: their own budgets
        assert await states[0].reserve("127.0.0.3", "spot", 500, 500, w)
        assert await states[1].reserve("127.0.0.2", "sapi", 500, 500, w)
        assert all(s.status == "ok" for s in states)
    finally:
        for s in states:
            await s.stop()


@pytest_twisted.ensureDeferred
async def test_reconcile_raises_the_shared_counter(redis_server):
    a, b = await started(redis_server), await started(redis_server)
    try:
        w = window_now()
        assert await a.reserve("default", "spot", 100, 1000, w)
        await b.reconcile("default", "spot", w, 950)  # Binance says 950 were used
        assert await a.used("default", "spot", w) == 950
        await b.reconcile("default", "spot", w, 10)  # never lowers it
        assert await a.used("default", "spot", w) == 950
        assert not await a.reserve("default", "spot", 51, 1000, w)
        assert await a.reserve("default", "spot", 50, 1000, w)
    finally:
        await a.stop()
        await b.stop()


@pytest_twisted.ensureDeferred
async def test_a_ban_reaches_every_instance(redis_server):
    from twisted.internet import reactor
    a, b = await started(redis_server), await started(redis_server)
    c = None
    try:
        heard = []
        b.on_ban(lambda *args: heard.append((time.monotonic(), args)))
        until = reactor.seconds() + 120
        sent = time.monotonic()
        await a.set_ban("127.0.0.2", "spot", until, 418, "418 from /api/v3/depth")
        await wait_until(lambda: heard, "the notification")  # b never reads: pub/sub told it
        print(f"ban notification after {(heard[0][0] - sent) * 1000:.1f} ms")
        assert heard[0][1] == ("127.0.0.2", "spot", until, 418, "418 from /api/v3/depth")
        assert b.banned_until("127.0.0.2", "spot") == until
        # an earlier end never shortens it
        await b.set_ban("127.0.0.2", "spot", until - 60, 429, "429")
        assert a.banned_until("127.0.0.2", "spot") == until
        # an instance started during the ban knows it at once
        c = await started(redis_server)
        assert c.banned_until("127.0.0.2", "spot") == until
        assert (await c.bans())[("127.0.0.2", "spot")] == (until, 418, "418 from /api/v3/depth")
    finally:
        for s in (a, b, c):
            if s is not None:
                await s.stop()


@pytest_twisted.ensureDeferred
async def test_ledger_is_the_fleets(redis_server):
    a, b = await started(redis_server), await started(redis_server)
    try:
        a.add("10.0.0.5", 10, 2, 0)
        b.add("10.0.0.5", 5, 1, 1)
        b.add("freqtrade-1", 1, 1, 0)
        expected = {"10.0.0.5": {"weight": 15, "requests": 3, "rejected": 1},
                    "freqtrade-1": {"weight": 1, "requests": 1, "rejected": 0}}
        # a sees its own additions at once, b's once b has written them (batched)
        assert (await a.clients())["10.0.0.5"]["weight"] in (10, 15)
        table: dict = {}
        deadline = time.monotonic() + WAIT
        while table != expected and time.monotonic() < deadline:
            table = await a.clients()
            await sleep(0.05)
        assert table == expected
    finally:
        await a.stop()
        await b.stop()


@pytest_twisted.ensureDeferred
async def test_redis_gone_then_back(redis_server):
    from twisted.internet import reactor
    a, b = await started(redis_server), await started(redis_server)
    try:
        await wait_until(lambda: a.live_instances() == 2 and b.live_instances() == 2,
                         "two live instances")
        until = reactor.seconds() + 300
        await a.set_ban("127.0.0.2", "spot", until, 418, "418")
        await wait_until(lambda: b.banned_until("127.0.0.2", "spot") == until, "the ban")

        # slow: Redis stops answering; calls fail within their deadline
        redis_server.pause()
        w = window_now()
        with pytest.raises(SharedStateUnavailableError):
            await a.clients()
        assert a.status == "degraded"
        # b notices on its own hot path: the reservation is decided locally
        assert await b.reserve("127.0.0.3", "spot", 1, 100, w) is True
        assert b.status == "degraded"

        # gone: stopped, data lost (no persistence)
        redis_server.resume()
        redis_server.stop()
        await wait_until(lambda: a.status == b.status == "degraded", "degraded")
        granted = 0
        while await a.reserve("127.0.0.2", "usdm", 10, 100, w):
            granted += 10
        assert granted == 50  # budget / 2 live instances
        assert a.banned_until("127.0.0.2", "spot") == until  # kept
        assert b.banned_until("127.0.0.2", "spot") == until
        assert a.health()["status"] == "degraded" and a.health()["live_instances"] == 2

        redis_server.start()  # same port, empty
        await wait_until(lambda: a.status == b.status == "ok", "ok again")
        # resynchronised: the ban written back, what was spent locally counted
        fresh = await started(redis_server)
        try:
            assert fresh.banned_until("127.0.0.2", "spot") == until
            assert await fresh.used("127.0.0.2", "usdm", w) == 50
        finally:
            await fresh.stop()
    finally:
        await a.stop()
        await b.stop()


@pytest_twisted.ensureDeferred
async def test_slow_redis_degrades_within_the_deadline_then_recovers(redis_server):
    a = await started(redis_server)
    try:
        w = window_now()
        assert await a.reserve("default", "spot", 10, 100, w)
        redis_server.pause()  # connected, but no answer
        # the reservation is decided locally once the 50 ms deadline passes
        assert await a.reserve("default", "spot", 10, 100, w) is True
        assert a.status == "degraded" and "within 0.05 s" in a.health()["last_error"]
        assert await a.used("default", "spot", w) == 20  # answered locally, no wait
        redis_server.resume()
        await wait_until(lambda: a.status == "ok", "ok again")
        assert await a.used("default", "spot", w) >= 20
        assert "bnproxy_shared_state_ok" in [m.name for m in a.collect_metrics()]
    finally:
        redis_server.resume()
        await a.stop()


@pytest_twisted.ensureDeferred
async def test_password_and_database_from_the_url(tmp_path):
    from redis_server import RedisServer
    from twisted.internet import reactor
    server = RedisServer(str(tmp_path / "redis"), extra_args=("--requirepass", "s3cr3t-pw"))
    server.start()
    states = []
    try:
        base = f"127.0.0.1:{server.port}"
        good = RedisSharedState(reactor, f"redis://:s3cr3t-pw@{base}/2", **FAST)
        bad = RedisSharedState(reactor, f"redis://:wrong-pw@{base}/2",
                               **{**FAST, "connect_timeout": 0.5})
        states = [good, bad]
        await good.start()
        await bad.start()
        assert good.status == "ok"
        assert bad.status == "degraded"
        for s in states:
            text = repr(s.health()) + s.last_error
            assert "s3cr3t" not in text and "wrong-pw" not in text
        assert good.health()["store"] == f"redis://:***@{base}/2"
        assert await good.reserve("default", "spot", 5, 10, window_now())
    finally:
        for s in states:
            await s.stop()
        server.stop()


def make_tls_files(directory) -> tuple[str, str, str]:
    """A CA and a certificate for 127.0.0.1 signed by it: (ca, cert, key) paths."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bnproxy test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = [str(directory / n) for n in ("ca.pem", "cert.pem", "key.pem")]
    directory.mkdir(parents=True, exist_ok=True)
    for path, data in zip(paths, (
            ca.public_bytes(serialization.Encoding.PEM),
            cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()))):
        with open(path, "wb") as f:
            f.write(data)
    return paths[0], paths[1], paths[2]


@pytest_twisted.ensureDeferred
async def test_rediss_verifies_the_server(tmp_path):
    from redis_server import RedisServer, free_port
    from twisted.internet import reactor
    ca, cert, key = make_tls_files(tmp_path / "tls")
    tls_port = free_port()
    server = RedisServer(str(tmp_path / "redis"), extra_args=(
        "--tls-port", str(tls_port), "--tls-cert-file", cert, "--tls-key-file", key,
        "--tls-ca-cert-file", ca, "--tls-auth-clients", "no"))
    server.start()
    states = []
    try:
        url = f"rediss://127.0.0.1:{tls_port}/0"
        trusted = RedisSharedState(reactor, url, **FAST, tls_ca_file=ca)
        untrusted = RedisSharedState(reactor, url, **{**FAST, "connect_timeout": 0.5})
        states = [trusted, untrusted]
        await trusted.start()
        await untrusted.start()  # the system's roots do not know the test CA
        assert trusted.status == "ok" and untrusted.status == "degraded"
        assert await trusted.reserve("default", "spot", 5, 10, window_now())
    finally:
        for s in states:
            await s.stop()
        server.stop()


@pytest_twisted.ensureDeferred
async def test_no_redis_at_start_is_degraded_not_fatal(tmp_path):
    from redis_server import free_port
    from twisted.internet import reactor
    state = RedisSharedState(reactor, f"redis://127.0.0.1:{free_port()}/0",
                             **{**FAST, "connect_timeout": 0.3}, min_instances=3)
    try:
        await state.start()
        assert state.status == "degraded" and state.live_instances() == 3
        w = window_now()
        assert await state.reserve("default", "spot", 300, 900, w)
        assert not await state.reserve("default", "spot", 1, 900, w)  # 900 / 3
    finally:
        await state.stop()


def test_open_shared_state():
    from bnproxy.cluster import open_shared_state
    clock = Clock()
    assert open_shared_state(clock, None) is None  # the rate limiter's own LocalState
    state = open_shared_state(clock, "redis://:pw@127.0.0.1:6390/1", deadline=0.02)
    assert isinstance(state, RedisSharedState) and state.deadline == 0.02
    with pytest.raises(RedisURLError):
        open_shared_state(clock, "http://127.0.0.1/")


def test_grants_made_during_a_write_back_are_written_next_time():
    from types import SimpleNamespace

    from bnproxy.cluster.keys import Keys
    from bnproxy.cluster.leases import Budget

    calls: list = []

    def script(name, keys, args, seconds):
        d = defer.Deferred()
        calls.append((name, args, d))
        return d

    conn = SimpleNamespace(script=script, background_deadline=1.0)
    budget = Budget(conn, Keys(), "me", 120_000, lambda: 2)
    f = budget.fallback
    assert f.reserve("a", "spot", 10, 1000, 60, live=2)  # granted while Redis was away
    resync = defer.ensureDeferred(budget.write_back())
    (name, args, d), = calls
    assert name == "reconcile" and args[-1] == 10  # the unsent weight
    assert f.reserve("a", "spot", 20, 1000, 60, live=2)  # meanwhile, still away
    d.callback([30, 0, "e1"])
    assert resync.called
    assert f.local[("a", "spot")][4] == 20  # kept for the next write-back
    resync = defer.ensureDeferred(budget.write_back())
    calls[-1][2].callback([50, 0, "e1"])
    assert calls[-1][1][-1] == 20 and f.local == {}
