"""The plain-install smoke test: what a new user runs after ``pip install .``
(no test extra). Standard library only: it runs in the plain venv.

Starts ``twistd -n bnproxy --simulated-exchange`` and ``twistd -n
bnproxy-exchange``, asks for klines, depth and a signed test order, checks
``python -m bnproxy --help``, stops both with SIGTERM and wants exit 0.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

KEY, SECRET = "bnproxy-test-key", "bnproxy-test-secret"
DEADLINE = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
    request = urllib.request.Request(url, data=data, headers=headers or {},
                                     method="POST" if data is not None else "GET")
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 200:
            raise SystemExit(f"smoke: {url}: HTTP {response.status}")
        return response.read()


def wait_for(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"smoke: the process exited with {proc.returncode} before {url}")
        try:
            fetch(url)
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"smoke: {url} did not answer within {DEADLINE:.0f} s")


def stop(proc: subprocess.Popen, what: str, ok: tuple[int, ...] = (0,)) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise SystemExit(f"smoke: {what} did not stop within {DEADLINE:.0f} s of SIGTERM") from None
    if code not in ok:
        raise SystemExit(f"smoke: {what} exited with {code} after SIGTERM")


def twistd(*args: str, cwd: str) -> subprocess.Popen:
    bindir = os.path.dirname(sys.executable)
    return subprocess.Popen([os.path.join(bindir, "twistd"), "-n", "--pidfile=", *args],
                            cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def main() -> int:
    help_text = subprocess.run([sys.executable, "-m", "bnproxy", "--help"], check=True,
                               capture_output=True, text=True).stdout
    if "freqtrade-config" not in help_text:
        raise SystemExit("smoke: python -m bnproxy --help does not list freqtrade-config")
    with tempfile.TemporaryDirectory() as cwd:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proxy = twistd("bnproxy", "--simulated-exchange", "--port",
                       f"tcp:{port}:interface=127.0.0.1", cwd=cwd)
        try:
            wait_for(f"{base}/live", proxy)
            klines = json.loads(fetch(f"{base}/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=3"))
            assert len(klines) == 3, klines
            depth = json.loads(fetch(f"{base}/api/v3/depth?symbol=BTCUSDT&limit=5"))
            assert len(depth["bids"]) == 5, depth
            query = (f"symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.001"
                     f"&timestamp={int(time.time() * 1000)}")
            signature = hmac.new(SECRET.encode(), query.encode(), hashlib.sha256).hexdigest()
            order = fetch(f"{base}/api/v3/order/test", f"{query}&signature={signature}".encode(),
                          {"X-MBX-APIKEY": KEY,
                           "Content-Type": "application/x-www-form-urlencoded"})
            assert json.loads(order) == {}, order
        finally:
            stop(proxy, "twistd bnproxy --simulated-exchange")
        port = free_port()
        exchange = twistd("bnproxy-exchange", "--port", f"tcp:{port}:interface=127.0.0.1",
                          cwd=cwd)
        try:
            wait_for(f"http://127.0.0.1:{port}/spot/api/v3/ping", exchange)
        finally:
            # twistd reports death by signal as such (the proxy drains and exits 0)
            stop(exchange, "twistd bnproxy-exchange", ok=(0, -signal.SIGTERM))
        if os.listdir(cwd):
            raise SystemExit(f"smoke: the demo left files behind: {os.listdir(cwd)}")
    print("smoke: plain install runs the offline demo, the fake exchange and the helpers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
