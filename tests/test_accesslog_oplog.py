"""twistd's operational log as JSON Lines with a level filter, and a real
``--log-format json`` run whose every output line a JSON parser reads."""

import io
import json
import urllib.error
import urllib.request

import pytest
from helpers import API_KEY, SECRET, sign
from processes import free_port, get_json, twistd
from twisted.application.service import Application, IService, MultiService
from twisted.logger import ILogObserver, Logger, LogLevel, LogPublisher
from twisted.python.failure import Failure

from bnproxy.server.oplog import (
    install_operational_log,
    operational_observer,
    parse_level,
    twistd_log_stream,
)


def emit(observer, level: LogLevel, text: str, **kw) -> None:
    publisher = LogPublisher(observer)
    getattr(Logger(namespace="bnproxy.test", observer=publisher), level.name)(text, **kw)


def test_json_lines_one_object_a_line_without_a_record_separator():
    out = io.StringIO()
    observer = operational_observer("json", "info", out)
    emit(observer, LogLevel.info, "upstream {market} reached", market="spot")
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        publisher = LogPublisher(observer)
        Logger(namespace="bnproxy.test", observer=publisher).failure("it failed", Failure())
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\x1e" not in out.getvalue()
    first, second = (json.loads(line) for line in lines)
    assert first["msg"] == "upstream spot reached" and first["level"] == "info"
    assert first["namespace"] == "bnproxy.test" and first["time"].endswith("Z")
    assert second["level"] == "critical" and "ValueError: boom" in second["traceback"]


@pytest.mark.parametrize(("level", "shown"), [
    ("debug", ["debug", "info", "warn", "error"]),
    ("info", ["info", "warn", "error"]),
    ("warn", ["warn", "error"]),
    ("warning", ["warn", "error"]),
    ("error", ["error"]),
])
def test_the_level_filter(level, shown):
    out = io.StringIO()
    observer = operational_observer("json", level, out)
    for name in ("debug", "info", "warn", "error"):
        emit(observer, LogLevel.levelWithName(name), name)
    assert [json.loads(line)["msg"] for line in out.getvalue().splitlines()] == shown


def test_text_keeps_twistds_format_and_filters_too():
    out = io.StringIO()
    observer = operational_observer("text", "warn", out)
    emit(observer, LogLevel.info, "hidden")
    emit(observer, LogLevel.warn, "shown")
    assert "hidden" not in out.getvalue() and "[bnproxy.test#warn] shown" in out.getvalue()


def test_bad_levels_and_formats_are_refused():
    with pytest.raises(ValueError, match="expected one of debug, info, warn, error"):
        parse_level("loud")
    with pytest.raises(ValueError, match="text or json"):
        operational_observer("xml")


def test_twistd_finds_the_observer_on_its_application():
    service = MultiService()
    observer = install_operational_log(service, "json", "info", io.StringIO())
    application = Application("bnproxy")  # what twistd does after makeService
    service.setServiceParent(application)
    assert application.getComponent(ILogObserver) is observer
    assert service in list(IService(application))


def test_the_stream_follows_twistds_logfile_option(tmp_path):
    import sys
    assert twistd_log_stream({"logfile": None, "nodaemon": True}) is sys.stdout
    assert twistd_log_stream({"logfile": "-", "nodaemon": False}) is sys.stdout
    assert twistd_log_stream({"syslog": True}) is None
    stream = twistd_log_stream({"logfile": str(tmp_path / "op.log"), "nodaemon": True})
    stream.write("x\n")
    stream.close()
    assert (tmp_path / "op.log").read_text() == "x\n"


@pytest.mark.integration
def test_a_log_format_json_run_writes_nothing_but_json_lines(tmp_path):
    pport = free_port()
    base = f"http://127.0.0.1:{pport}"
    with twistd("bnproxy", "--port", f"tcp:{pport}:interface=127.0.0.1",
                "--simulated-exchange", "--log-format", "json", port=pport,
                cwd=str(tmp_path)) as proc:
        get_json(f"{base}/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=3")
        query = sign(b"symbol=BTCUSDT&timestamp=1700000000000&recvWindow=60000")
        request = urllib.request.Request(f"{base}/api/v3/account?{query.decode()}",
                                         headers={"X-MBX-APIKEY": API_KEY.decode(),
                                                  "X-Bnproxy-Client": "json-test-bot",
                                                  "User-Agent": "ccxt/4.3.1 Python/3.11"})
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(request, timeout=10)  # the fake does not know the key
        with pytest.raises(urllib.error.HTTPError) as unrouted:
            urllib.request.urlopen(f"{base}/nope", timeout=10)
        assert unrouted.value.code == 404
    assert proc.returncode == 0
    records = [json.loads(line) for line in proc.log_text.splitlines()]  # every line
    access = [r for r in records if "status" in r]
    operational = [r for r in records if "level" in r]
    assert len(access) + len(operational) == len(records)
    assert any(r["msg"].startswith("twistd") and "starting up" in r["msg"]
               for r in operational)
    klines = [r for r in access if r["path"] == "/api/v3/klines"]
    assert klines and klines[0]["status"] == 200 and klines[0]["bot"] == "127.0.0.1"
    account = [r for r in access if r["path"] == "/api/v3/account"]
    assert account[0]["bot"] == "json-test-bot" and account[0]["ua"] == "ccxt"
    assert "signature=[redacted]" in account[0]["query"]
    assert API_KEY.decode() not in proc.log_text and SECRET.decode() not in proc.log_text
    assert query.decode().rsplit("=", 1)[1] not in proc.log_text  # the signature
