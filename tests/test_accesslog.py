"""The access log's own writer: buffered, flushed on time, on size and at
shutdown, reopened on SIGUSR1; and what each line says about the bot."""

import io
import json
import os
import signal

import pytest
from helpers import API_KEY, Harness, chain
from twisted.internet import task

from bnproxy.middleware.logger import product_of
from bnproxy.server.accesslog import AccessLogWriter, open_access_log, reopen_on_sigusr1


class CountingStream(io.BytesIO):
    """A binary stream that counts its writes (each one a system call)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data) -> int:
        self.writes += 1
        return super().write(data)


def test_lines_wait_in_memory_until_a_second_has_passed():
    clock, out = task.Clock(), CountingStream()
    writer = AccessLogWriter(clock, stream=out)
    writer.startService()
    for i in range(100):
        writer.write(b"line %d\n" % i)
    assert out.getvalue() == b"" and out.writes == 0
    clock.advance(0.99)
    assert out.getvalue() == b""
    clock.advance(0.01)
    assert out.getvalue().count(b"\n") == 100
    assert out.writes == 1  # one write for the whole block
    writer.write(b"late\n")
    clock.advance(1.0)
    assert out.getvalue().endswith(b"line 99\nlate\n")
    writer.stopService()


def test_64_kib_waiting_are_written_at_once():
    clock, out = task.Clock(), CountingStream()
    writer = AccessLogWriter(clock, stream=out)
    line = b"x" * 1023 + b"\n"
    for _ in range(63):
        writer.write(line)
    assert out.writes == 0
    writer.write(line)  # the 64th KiB
    assert out.writes == 1 and len(out.getvalue()) == 64 * 1024


def test_stopping_writes_what_is_waiting(tmp_path):
    clock = task.Clock()
    path = tmp_path / "access.log"
    writer = open_access_log(clock, str(path))
    writer.startService()
    writer.write(b"last words\n")
    assert path.read_bytes() == b""
    writer.stopService()
    assert path.read_bytes() == b"last words\n"
    assert clock.getDelayedCalls() == []  # the flush timer is gone


def test_none_means_no_access_log_and_no_line_is_formatted(tmp_path):
    assert open_access_log(task.Clock(), "none") is None
    h = Harness(middleware=chain("logger"), access_log="none")
    assert h.service.access_log is None
    assert h.service.middlewares[0].output is None
    assert h.request("GET", "/api/v3/ping").status == 200


def test_standard_output_is_the_default(capfdbinary):
    h = Harness(middleware=chain("logger"))
    assert h.service.access_log.target == "-"
    h.request("GET", "/api/v3/ping")
    h.service.access_log.flush()
    assert b'"GET /spot/api/v3/ping" 200' in capfdbinary.readouterr().out


def test_sigusr1_reopens_the_file_after_logrotate_moved_it(tmp_path):
    clock = task.Clock()
    path = tmp_path / "access.log"
    writer = open_access_log(clock, str(path))
    writer.startService()
    previous = signal.getsignal(signal.SIGUSR1)

    class ThreadlessReactor:  # callFromThread from a signal handler, run by the test
        calls = []

        def callFromThread(self, f, *args):
            self.calls.append((f, args))

    reactor = ThreadlessReactor()
    from twisted.python.logfile import LogFile
    oplog = LogFile.fromFullPath(str(tmp_path / "twistd.log"))
    try:
        reopen_on_sigusr1(reactor, writer, oplog, None)
        oplog.write("operational before\n")
        os.rename(tmp_path / "twistd.log", tmp_path / "twistd.log.1")
        writer.write(b"before rotation\n")
        os.rename(path, tmp_path / "access.log.1")  # logrotate's move
        os.kill(os.getpid(), signal.SIGUSR1)
        assert reactor.calls, "the handler scheduled nothing"
        for f, args in reactor.calls:
            f(*args)
        writer.write(b"after rotation\n")
        writer.stopService()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert (tmp_path / "access.log.1").read_bytes() == b"before rotation\n"
    assert path.read_bytes() == b"after rotation\n"
    oplog.write("operational after\n")
    oplog.close()
    assert (tmp_path / "twistd.log").read_text() == "operational after\n"


def test_a_failing_write_loses_lines_but_never_the_answer(tmp_path):
    out = io.BytesIO()
    writer = AccessLogWriter(task.Clock(), stream=out)
    out.close()
    writer.write(b"a\n")
    writer.flush()
    assert writer.lost == 1


def test_an_unopenable_access_log_is_one_config_error(tmp_path):
    from bnproxy.config.reader import ConfigError
    with pytest.raises(ConfigError, match="access log .*"):
        Harness(access_log=str(tmp_path / "missing-dir" / "access.log"))


def json_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_line_names_the_bot_by_header_then_key_then_address(tmp_path):
    path = tmp_path / "access.log"
    h = Harness(middleware=chain("logger", logger={"format": "json", "key_salt": "s"}),
                access_log=str(path), trusted_proxies=("127.0.0.1/32",))
    h.request("GET", "/api/v3/time", headers={b"X-Bnproxy-Client": b"freqtrade-eth",
                                              b"X-MBX-APIKEY": API_KEY})
    h.request("GET", "/api/v3/time", headers={b"X-MBX-APIKEY": API_KEY})
    h.request("GET", "/api/v3/time", headers={b"X-Forwarded-For": b"10.1.2.3"})
    h.request("GET", "/api/v3/time", headers={b"X-Bnproxy-Client": b'evil" bot;=1'})
    h.service.access_log.flush()
    lines = json_lines(path)
    assert lines[0]["bot"] == "freqtrade-eth"
    assert lines[1]["bot"] == lines[1]["key"] == lines[0]["key"] != "-"
    assert lines[2]["bot"] == lines[2]["client"] == "10.1.2.3"
    assert lines[3]["bot"] == "evil__bot_=1"  # one token, nothing to break a line with
    assert API_KEY.decode() not in path.read_text()


def test_text_lines_carry_the_bot_and_the_user_agent_product(tmp_path):
    path = tmp_path / "access.log"
    h = Harness(middleware=chain("logger"), access_log=str(path))
    h.request("GET", "/api/v3/time", headers={
        b"X-Bnproxy-Client": b"bot-7",
        b"User-Agent": b"ccxt/4.3.1 (+https://github.com/ccxt/ccxt) Python/3.11.7"})
    h.service.access_log.flush()
    line = path.read_text()
    assert line.endswith(" bot=bot-7 ua=ccxt\n") and line.count("\n") == 1


@pytest.mark.parametrize(("agent", "product"), [
    (b"ccxt/4.3", "ccxt"),
    (b"python-requests/2.31.0", "python-requests"),
    (b"Freqtrade/2024.1", "Freqtrade"),
    (b"Mozilla/5.0 (X11; Linux x86_64)", "Mozilla"),
    (b"binance-connector/3.7.0", "binance-connector"),
    (b"  ", "-"),
    (b"weird\x00agent/1", "weird_agent"),
])
def test_the_user_agent_product(agent, product):
    assert product_of(agent) == product


def test_the_writer_provides_the_interface_middlewares_see():
    from zope.interface.verify import verifyObject

    from bnproxy.chain.interfaces import IAccessLog
    h = Harness(middleware=chain("logger"), access_log="-")
    assert verifyObject(IAccessLog, h.service.access_log)
    assert h.service.context.access_log is h.service.access_log


def test_bots_without_a_name_are_told_apart_by_address_on_repeated_requests(tmp_path):
    path = tmp_path / "access.log"
    h = Harness(middleware=chain("logger", "cache", logger={"format": "json"}),
                access_log=str(path), trusted_proxies=("127.0.0.1/32",))
    for address in (b"10.0.0.1", b"10.0.0.2", b"10.0.0.1"):
        h.request("GET", "/api/v3/depth?symbol=BTCUSDT&limit=5",
                  headers={b"X-Forwarded-For": address})
    h.service.access_log.flush()
    assert [r["bot"] for r in json_lines(path)] == ["10.0.0.1", "10.0.0.2", "10.0.0.1"]
    assert [r["cache"] for r in json_lines(path)] == ["MISS", "HIT", "HIT"]
