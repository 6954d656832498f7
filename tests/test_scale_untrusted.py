"""Scale-out end to end with a Redis another client wrote garbage into:
bnproxy processes still start, a 418 through one still silences every
instance (and one started later), nothing more reaches the banned exchange,
and no ban state file holds what another client wrote."""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

import pytest
import pytest_twisted
from test_cluster_untrusted import MALFORMED, TEN_YEARS, cli, message
from test_scale import DEPTH, EGRESS, Fleet, exchange, get, sleep  # noqa: F401 (fixture)


@pytest.mark.integration
@pytest.mark.e2e  # real Redis and several real proxy processes
@pytest_twisted.ensureDeferred
async def test_garbage_in_redis_never_stops_a_ban_nor_a_start(tmp_path, redis_server,
                                                               exchange):  # noqa: F811
    now = time.time()
    for what in ("null until", "until 1e999 stored", "a ten-year ban stored"):
        MALFORMED[what](redis_server, now)
    cli(redis_server, "HSET", "bnproxy:bans", f"{EGRESS}|spot", "5")
    cli(redis_server, "SET", "bnproxy:ledger", "x")
    cli(redis_server, "SET", "bnproxy:instances", "x")
    fleet = Fleet(tmp_path, redis_server.url, exchange.rest("spot"))
    try:
        ports = [await fleet.start("--egress", EGRESS) for _ in range(3)]
        # published while they run: heard, refused, never written
        cli(redis_server, "PUBLISH", "bnproxy:bans",
            message(now).replace(str(now), "1e999").replace('"default"', f'"{EGRESS}"'))
        cli(redis_server, "PUBLISH", "bnproxy:bans",
            message(now + TEN_YEARS, scope="host:" + urlsplit(exchange.rest("spot")).netloc, egress=EGRESS))
        cli(redis_server, "SET", f"bnproxy:w:{EGRESS}|spot|{int(now // 60)}", "-100000")
        for port in ports:
            assert (await get(port, DEPTH))[0] == 200  # not banned by any of it
        exchange.exchange.ban(EGRESS, 30, "spot")
        code, _ = await get(ports[0], DEPTH)
        assert code == 418  # Binance's, through the first instance
        seen = sum(exchange.exchange.counters.statuses.values())
        await sleep(0.2)
        for port in ports[1:]:
            code, body = await get(port, DEPTH)
            assert code == 418 and b"was not sent" in body
        late = await fleet.start("--egress", EGRESS)
        code, body = await get(late, DEPTH)
        assert code == 418 and b"was not sent" in body
        assert sum(exchange.exchange.counters.statuses.values()) == seen
        for n in range(4):
            saved = (tmp_path / f"state{n}" / "bnproxy-bans.json").read_text()
            assert "Infinity" not in saved and "NaN" not in saved
            bans = json.loads(saved)["bans"]
            assert bans and all(b["until"] < now + 3600 for b in bans), bans
        health = json.loads((await get(late, "/health"))[1])
        assert health["middleware"]["shared-state"]["status"] == "ok"
    finally:
        fleet.stop()
    # every one of them starts again on its state file
    again = Fleet(tmp_path / "again", redis_server.url, exchange.rest("spot"))
    (tmp_path / "again").mkdir()
    try:
        for n in range(4):
            port = await again.start("--egress", EGRESS,
                                     "--state-dir", str(tmp_path / f"state{n}"))
            assert (await get(port, DEPTH))[0] == 418
    finally:
        again.stop()
