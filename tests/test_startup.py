"""Start-up mistakes are one clear line and a non-zero exit before anything
listens (issue 10): a port in use, an out-of-range port, an unknown BNPROXY_*
variable, an unusable state directory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from bnproxy.config.reader import ConfigError
from bnproxy.tap import Options

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def run_twistd(*args: str, cwd, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BNPROXY_")}
    environ.update(env or {})
    return subprocess.run([TWISTD, "-n", "--pidfile=", "bnproxy", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd, env=environ)


def one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0]


def test_a_port_in_use_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line(run_twistd("--port", f"tcp:{port}:interface=127.0.0.1", cwd=tmp_path))
    assert f"cannot listen on tcp:{port}:interface=127.0.0.1" in line
    assert "in use" in line


def test_an_out_of_range_port_is_one_line(tmp_path):
    line = one_line(run_twistd("--port", "99999", cwd=tmp_path))
    assert "--port must be a port number from 0 to 65535, got 99999" in line


def test_an_unknown_variable_is_refused_naming_the_closest(tmp_path):
    line = one_line(run_twistd(cwd=tmp_path, env={"BNPROXY_PROT": "8080"}))
    assert "unknown variable BNPROXY_PROT (did you mean BNPROXY_PORT?)" in line


def test_an_unwritable_state_dir_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    line = one_line(run_twistd("--port", "tcp:0:interface=127.0.0.1", "--state-dir",
                               str(blocker / "state"), cwd=tmp_path))
    assert f"--state-dir {blocker / 'state'}: cannot create it" in line


def test_environment_typos_and_values_name_the_variable():
    options = Options()
    options.parseOptions([])
    with pytest.raises(ConfigError, match=r"BNPROXY_MAX_BODYY \(did you mean BNPROXY_MAX_BODY"):
        options.config({"BNPROXY_MAX_BODYY": "10"})
    with pytest.raises(ConfigError, match="BNPROXY_PORT: --port must be a port number from 0 to 65535, got 70000"):
        options.config({"BNPROXY_PORT": "70000"})


def test_help_middleware_lists_typed_options(tmp_path):
    result = subprocess.run([TWISTD, "bnproxy", "--help-middleware", "cache"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "cache: Public market data" in result.stdout
    assert "max_bytes (int, default 268435456)" in result.stdout
    assert "ttl (table of float" in result.stdout


def test_unknown_middleware_settings_are_one_line():
    options = Options()
    options.parseOptions(["--middleware", "cache:max_byte=5"])
    config = options.config({})
    from twisted.internet import task

    from bnproxy.service import ProxyService

    with pytest.raises(ConfigError, match=r"middleware.cache: unknown setting\(s\) max_byte"):
        ProxyService(task.Clock(), config)


def test_kubernetes_service_links_are_not_taken_for_settings():
    options = Options()
    options.parseOptions([])
    config = options.config({
        "BNPROXY_SERVICE_HOST": "10.0.0.1", "BNPROXY_SERVICE_PORT": "8080",
        "BNPROXY_SERVICE_PORT_HTTP": "8080", "BNPROXY_PORT": "tcp://10.0.0.1:8080",
        "BNPROXY_PORT_8080_TCP": "tcp://10.0.0.1:8080", "BNPROXY_PORT_8080_TCP_ADDR": "10.0.0.1",
        "BNPROXY_PORT_8080_TCP_PORT": "8080", "BNPROXY_PORT_8080_TCP_PROTO": "tcp"})
    assert config.listen == ("tcp:8080",)
    assert options.config({"BNPROXY_PORT": "9090"}).listen == ("tcp:9090",)  # a real one
