"""Command line: endpoints, per-market upstreams, one-line errors."""

import os
import subprocess
import sys

import pytest

from bnproxy.tap import Options


def parse(*args, environ=None):
    from bnproxy.config.reader import ConfigError

    options = Options()
    options.parseOptions(list(args))
    try:
        return options.config(environ or {})
    except ConfigError as e:  # as makeService reports it
        raise SystemExit(f"twistd bnproxy: error: {e}") from None


def test_digits_mean_tcp_and_listen_repeats():
    config = parse("--port", "8080", "--listen", "tcp:9090:interface=127.0.0.1",
                   "--listen", "unix:/tmp/bnproxy.sock")
    assert config.listen == ("tcp:8080", "tcp:9090:interface=127.0.0.1",
                             "unix:/tmp/bnproxy.sock")


def test_default_listens_on_8080():
    assert parse().listen == ("tcp:8080",)


def test_upstreams_per_market_and_testnet():
    config = parse("--upstream", "spot=http://127.0.0.1:9000/", "--upstream",
                   "usdm=https://x.test", "--stream-upstream", "spot=ws://127.0.0.1:9000",
                   "--testnet")
    assert config.upstreams == {"spot": "http://127.0.0.1:9000", "usdm": "https://x.test"}
    assert config.stream_upstreams == {"spot": "ws://127.0.0.1:9000"}
    assert config.testnet


def test_middleware_specs_keep_order_and_settings():
    config = parse("--middleware-chain", "stamp:value=a,header=x-a", "--middleware-chain", "other")
    assert config.middleware == (("stamp", {"value": "a", "header": "x-a"}), ("other", {}))


@pytest.mark.parametrize("args,message", [
    (["--upstream", "futures=http://x"], "unknown market 'futures'"),
    (["--upstream", "spot"], "expected MARKET=URL"),
    (["--upstream", "spot=ftp://x"], "scheme must be one of http, https"),
    (["--stream-upstream", "spot=http://x"], "scheme must be one of ws, wss"),
    (["--port", "nonsense:1"], "Unknown endpoint type"),
    (["--response-timeout", "-1"], "must be greater than 0"),
    (["--max-body", "lots"], "expects a whole number"),
    (["--frobnicate"], "frobnicate"),
    (["--middleware", "stamp:novalue"], "expected key=value"),
])
def test_a_bad_option_exits_with_one_clear_line(args, message):
    with pytest.raises(SystemExit) as e:
        parse(*args)
    text = str(e.value.code)
    assert message in text
    assert "\n" not in text


def test_twistd_refuses_bad_options_with_one_line_before_listening(tmp_path):
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    result = subprocess.run(
        [twistd, "-n", "--pidfile=", "bnproxy", "--port", "tcp:1:interface=127.0.0.1",
         "--upstream", "nowhere=http://127.0.0.1:1"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown market 'nowhere'" in lines[0]
    assert result.stdout == ""
