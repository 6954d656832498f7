"""A book whose price walked out of its snapshot's range (issue 18, steady
state). Levels are exact only inside the price range the snapshot covered;
when the market moves further than that, the side it moves towards has
fewer exact levels than bots ask. The book is then taken again (one
snapshot, which the asking bots wait for), not given up while every bot
request for it is forwarded. Virtual time."""

import json

import pytest
from streamhelpers import VirtualRig


@pytest.fixture
def rig():
    made = VirtualRig(chain=(("streams", {}),))
    yield made
    made.stop()


def depth_requests(rig, path):
    return sum(n for (p, _, _), n in rig.exchange.counters.requests.items() if p == path)


@pytest.mark.parametrize("market,base,levels", [("spot", "/api/v3", 100),
                                                ("usdm", "/fapi/v1", 50)])
def test_a_book_the_price_walked_out_of_is_taken_again_once(rig, market, base, levels):
    rig.ask(f"{base}/exchangeInfo")
    target = f"{base}/depth?symbol=ETHUSDT&limit=5"
    assert rig.ask(target).status == 200
    rig.until(lambda: rig.streams.books[(market, "ETHUSDT")].state == "live", 30)
    rig.sleep(1)
    assert rig.ask(target).source == "stream"
    snapshots = depth_requests(rig, f"{base}/depth")
    st = rig.exchange.symbols[market]["ETHUSDT"]
    st.last_price += levels + 10  # the market rose past every ask the snapshot held
    rig.sleep(1)
    answers = [rig.ask(target) for _ in range(10)]
    assert [a.status for a in answers] == [200] * 10
    assert {a.source for a in answers} == {"stream"}  # none forwarded
    assert depth_requests(rig, f"{base}/depth") == snapshots + 1  # one new snapshot
    rig.exchange.pause()  # the stream flushed: the book and REST describe one moment
    rig.sleep(0.5)
    mine, binance = json.loads(rig.ask(target).body), json.loads(rig.rest(market, target))
    assert (mine["bids"], mine["asks"]) == (binance["bids"], binance["asks"])
    rig.exchange.resume()
