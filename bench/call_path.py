"""Count the named calls a signed ``POST /api/v3/order`` passes inside bnproxy.

Runs the default chain in the in-memory harness (virtual time, an upstream
answered by hand) and records, with ``sys.setprofile``, every distinct
bnproxy function (outside ``bnproxy/testing``) entered between the request's
arrival and its answer. Prints the count of functions and files, and with
``--list`` each one; docs/ARCHITECTURE.md quotes the figure.

    python bench/call_path.py [--list]
"""

from __future__ import annotations

import os
import sys
import tempfile

from bnproxy.testing.harness import (
    API_KEY,
    DEFAULT,
    FakeResponse,
    Harness,
    chain,
    controlled_agent,
    sign,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "bnproxy") + os.sep
SKIP = os.path.join(PKG, "testing") + os.sep


def main() -> None:
    agent = controlled_agent()
    with tempfile.TemporaryDirectory() as state:
        h = Harness(agent=agent, state_dir=state, middleware=chain(*DEFAULT))
        query = b"symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.001&timestamp=1700000000000"
        target = b"/api/v3/order?" + sign(query)
        headers = {b"X-MBX-APIKEY": API_KEY}

        def warm() -> None:
            d = h.start(b"POST", target, headers)
            h.flush()
            agent.answer_all(lambda m, u: FakeResponse(
                200, {b"content-type": b"application/json",
                      b"x-mbx-used-weight-1m": b"3", b"x-mbx-order-count-10s": b"1"},
                b'{"orderId":1}'))
            h.flush()
            d.addErrback(lambda f: None)

        warm()  # first request builds lazily made state
        seen: dict[tuple[str, str], None] = {}

        def prof(frame, event, arg):
            if event != "call":
                return
            fn = frame.f_code.co_filename
            if fn.startswith(PKG) and not fn.startswith(SKIP):
                seen.setdefault((os.path.relpath(fn, ROOT), frame.f_code.co_qualname), None)

        sys.setprofile(prof)
        try:
            warm()
        finally:
            sys.setprofile(None)
    files = sorted({f for f, _ in seen})
    print(f"{len(seen)} named calls in {len(files)} files")
    if "--list" in sys.argv:
        for f, name in seen:
            print(f"  {f}: {name}")


if __name__ == "__main__":
    main()
