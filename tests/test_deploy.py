"""Deployment files: the Dockerfile lints, the systemd unit's socket
activation works (systemd's LISTEN_FDS protocol, emulated)."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
HADOLINT = shutil.which("hadolint") or os.path.join(os.path.dirname(sys.executable), "hadolint")


@pytest.mark.skipif(not os.path.exists(HADOLINT), reason="hadolint is not installed")
def test_the_dockerfile_lints_clean():
    result = subprocess.run([HADOLINT, os.path.join(ROOT, "Dockerfile")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dockerfile_runs_as_non_root_with_a_live_healthcheck_and_a_plugin_cache():
    text = open(os.path.join(ROOT, "Dockerfile")).read()
    assert "\nUSER 10001\n" in text
    assert "HEALTHCHECK" in text and "/live" in text
    assert "getPlugins(IMiddlewareFactory, bnproxy.plugins)" in text  # cache built at build time


@pytest.mark.integration
def test_systemd_socket_activation_as_the_unit_configures_it(tmp_path):
    unit = open(os.path.join(ROOT, "deploy", "bnproxy.service")).read()
    assert "--port systemd:domain=INET:index=0" in unit
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    fd = listener.fileno()
    # What systemd does before exec: the socket at fd 3, LISTEN_* naming this process.
    as_systemd = (
        "import os, sys\n"
        "os.dup2(int(sys.argv[1]), 3)\n"
        "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1',"
        " LISTEN_FDNAMES='bnproxy.socket')\n"
        "os.execv(sys.argv[2], sys.argv[2:])\n")
    proc = subprocess.Popen(
        [sys.executable, "-c", as_systemd, str(fd), twistd, "--nodaemon", "--pidfile=",
         "bnproxy", "--port", "systemd:domain=INET:index=0", "--simulated-exchange"],
        pass_fds=(fd,), cwd=tmp_path,
        stdout=open(tmp_path / "twistd.log", "w"), stderr=subprocess.STDOUT)
    listener.close()  # only the child holds it now
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/live", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    print((tmp_path / "twistd.log").read_text())
                    raise
                time.sleep(0.2)
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
