"""Deployment files: the Dockerfile lints, the systemd unit's socket
activation works (systemd's LISTEN_FDS protocol, emulated)."""

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from processes import free_port, wait_listening

from bnproxy.testing.processes import stop

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


def dockerfile() -> dict[str, list[str]]:
    """Instruction -> its arguments (continuation lines joined), in order."""
    text = open(os.path.join(ROOT, "Dockerfile")).read().replace("\\\n", " ")
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            word, _, rest = line.strip().partition(" ")
            found.setdefault(word, []).append(rest.strip())
    return found


def image_env() -> dict[str, str]:
    return dict(word.split("=", 1) for spec in dockerfile()["ENV"] for word in shlex.split(spec))


def image_command() -> list[str]:
    found = dockerfile()
    return json.loads(found["ENTRYPOINT"][-1]) + json.loads(found.get("CMD", ["[]"])[-1])


def healthcheck_command() -> list[str]:
    spec = dockerfile()["HEALTHCHECK"][-1]
    return json.loads(spec[spec.index("CMD ") + 4:])


def test_the_image_sets_its_defaults_through_the_environment():
    assert image_env()["BNPROXY_PORT"] == "8080"
    assert image_env()["BNPROXY_STATE_DIR"] == "/var/lib/bnproxy"
    # No option in ENTRYPOINT/CMD: an option would outrank BNPROXY_*.
    assert image_command() == ["twistd", "--nodaemon", "--pidfile=", "bnproxy"]
    assert "deploy/healthcheck.py /usr/local/bin/bnproxy-healthcheck" in dockerfile()["COPY"]
    assert healthcheck_command() == ["python", "/usr/local/bin/bnproxy-healthcheck", "/live"]


@pytest.mark.parametrize("value,expected", [
    ("9000", ("127.0.0.1", 9000)), ("tcp:9001", ("127.0.0.1", 9001)),
    ("tcp:port=9002:interface=0.0.0.0", ("127.0.0.1", 9002)),
    ("tcp:9003:interface=10.0.0.5", ("10.0.0.5", 9003)),
    ("tcp6:9004:interface=\\:\\:", ("::1", 9004)), ("tcp6:port=9005", ("::1", 9005))])
def test_the_healthcheck_reads_the_port_setting(value, expected):
    sys.path.insert(0, os.path.join(ROOT, "deploy"))
    try:
        import healthcheck
    finally:
        sys.path.pop(0)
    conn = healthcheck.connection_for(value)
    assert (conn.host, conn.port) == expected


@pytest.mark.integration
def test_the_image_command_honours_bnproxy_port_and_its_healthcheck_follows(tmp_path):
    """The image's ENTRYPOINT/CMD with its ENV, overridden as ``docker run -e``
    would: bnproxy listens on BNPROXY_PORT, and the HEALTHCHECK command (the
    script the image copies) passes there and fails for another port. (No
    docker daemon here: the image itself is not built.)"""
    port, other = free_port(), free_port()
    argv = image_command()
    argv[0] = os.path.join(os.path.dirname(sys.executable), "twistd")
    env = {**os.environ, **image_env(), "BNPROXY_PORT": str(port),
           "BNPROXY_STATE_DIR": str(tmp_path), "BNPROXY_SIMULATED_EXCHANGE": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("BNPROXY_") or k in (
        "BNPROXY_PORT", "BNPROXY_STATE_DIR", "BNPROXY_SIMULATED_EXCHANGE")}
    check = healthcheck_command()
    check[0], check[1] = sys.executable, os.path.join(ROOT, "deploy", "healthcheck.py")
    log = open(tmp_path / "twistd.log", "w")
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_listening(port, proc)
        assert subprocess.run(check, env=env, timeout=30).returncode == 0
        failed = subprocess.run(check, env={**env, "BNPROXY_PORT": str(other)}, timeout=30,
                                capture_output=True, text=True)
        assert failed.returncode == 1 and f"{other} /live" in failed.stderr
    finally:
        stop(proc)


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


# -- the systemd unit -----------------------------------------------------------------

UNIT = os.path.join(ROOT, "deploy", "bnproxy.service")
VENV_TWISTD = "/opt/bnproxy/venv/bin/twistd"  # what the README's server install creates


def unit_directives(path: str) -> dict[str, dict[str, list[str]]]:
    """Section -> key -> every value (systemd keys repeat, so not configparser)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in open(path):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_the_unit_is_hardened_without_memory_deny_write_execute():
    service = unit_directives(UNIT)["Service"]
    assert "MemoryDenyWriteExecute" not in service  # it breaks pyOpenSSL: every https upstream
    expected = {
        "ProtectSystem": ["strict"], "StateDirectory": ["bnproxy"], "NoNewPrivileges": ["yes"],
        "RestrictAddressFamilies": ["AF_INET AF_INET6 AF_UNIX"], "CapabilityBoundingSet": [""],
        "PrivateTmp": ["yes"], "ProtectHome": ["yes"], "DynamicUser": ["yes"],
    }
    for key, values in expected.items():
        assert service.get(key) == values, key
    assert "@system-service" in service["SystemCallFilter"]
    assert "root" not in service.get("User", [])
    argv = service["ExecStart"][0].split()
    assert argv[0] == VENV_TWISTD and "--pidfile=" in argv
    assert argv[argv.index("--state-dir") + 1] == "${STATE_DIRECTORY}"
    assert unit_directives(os.path.join(ROOT, "deploy", "bnproxy.socket"))["Socket"][
        "ListenStream"] == ["127.0.0.1:8080"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="no systemd-analyze")
def test_systemd_analyze_verify_accepts_the_units(tmp_path):
    for name in ("bnproxy.service", "bnproxy.socket"):
        shutil.copy(os.path.join(ROOT, "deploy", name), tmp_path / name)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", "./bnproxy.service",
                             "./bnproxy.socket"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    # The venv exists only on a server; every other complaint (an unknown key or
    # value, a bad syscall group) is a failure.
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if line.strip() and f"Command {VENV_TWISTD} is not executable" not in line]
    assert problems == []


HTTPS_UPSTREAM = r"""
import http.server, json, ssl, sys
class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"symbol": "BTCUSDT", "price": "50000.00", "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"""

# What systemd does between fork and exec, as far as this host allows without
# systemd as PID 1: the activated socket at fd 3 with LISTEN_* naming the
# process, the working directory, and (for the control run only)
# MemoryDenyWriteExecute emulated with prctl(PR_SET_MDWE) (Linux >= 6.3),
# which systemd >= 253 itself uses for that directive.
AS_SYSTEMD = r"""
import ctypes, os, sys
fd, cwd, mdwe = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "mdwe"
os.dup2(fd, 3)
os.chdir(cwd)
if mdwe:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        sys.exit(77)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="bnproxy.socket")
os.execv(sys.argv[4], sys.argv[4:])
"""


def _https_upstream(pki):
    proc = subprocess.Popen([sys.executable, "-c", HTTPS_UPSTREAM, str(pki.cert), str(pki.key)],
                            stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())


def _run_as_the_unit(tmp_path, name: str, upstream_port: int, ca: str, mdwe: bool):
    """Start the unit's ExecStart (venv twistd swapped for this venv's) with
    its Environment=, a clean environment otherwise, no new privileges and no
    capabilities; ask the proxy for a price and return (status, body, log)."""
    service = unit_directives(UNIT)["Service"]
    state = tmp_path / name / "state"
    state.mkdir(parents=True, mode=0o700)
    argv = [a.replace("${STATE_DIRECTORY}", str(state))
            for a in service["ExecStart"][0].split()]
    argv[0] = os.path.join(os.path.dirname(sys.executable), "twistd")
    # Test-only additions: the upstream is the loopback https server, and the
    # chain has no streams middleware (it would dial Binance's websockets).
    argv += ["--upstream", f"spot=https://127.0.0.1:{upstream_port}", "--middleware-chain", "cache"]
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "STATE_DIRECTORY": str(state),
           "PYTHONPATH": os.environ.get("PYTHONPATH", ROOT),
           # A private CA through the platform store, as an operator's
           # Environment=SSL_CERT_FILE= would give it.
           "SSL_CERT_FILE": ca}
    env.update(e.split("=", 1) for e in service.get("Environment", []))
    sandbox = []
    setpriv = shutil.which("setpriv")
    if setpriv:  # NoNewPrivileges=yes, CapabilityBoundingSet= (empty)
        sandbox = [setpriv, "--no-new-privs", "--bounding-set=-all", "--inh-caps=-all"]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    log = open(tmp_path / name / "twistd.log", "w+")
    proc = subprocess.Popen(
        [*sandbox, sys.executable, "-c", AS_SYSTEMD, str(listener.fileno()), str(state),
         "mdwe" if mdwe else "-", *argv],
        pass_fds=(listener.fileno(),), env=env, stdout=log, stderr=subprocess.STDOUT)
    listener.close()
    status, body = None, b""
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None:
            try:
                url = f"http://127.0.0.1:{port}/api/v3/ticker/price?symbol=BTCUSDT"
                with urllib.request.urlopen(url, timeout=15) as r:
                    status, body = r.status, r.read()
                break
            except urllib.error.HTTPError as e:
                status, body = e.code, e.read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.terminate()
        code = proc.wait(20)
        log.seek(0)
        text = log.read()
    if code == 77:
        pytest.skip("prctl(PR_SET_MDWE) is not available on this kernel")
    return status, body, text, code


@pytest.mark.integration
def test_the_units_execstart_forwards_to_an_https_upstream(tmp_path):
    """Proves: the unit's ExecStart argv and Environment=, started under
    socket activation with no new privileges and no capabilities, verifies an
    https upstream's certificate (a private CA via SSL_CERT_FILE) and forwards
    the answer; and that with MemoryDenyWriteExecute in force (emulated by
    prctl) the same start fails at once, naming the directive (pyOpenSSL
    cannot make its callbacks there: without the start-up check every https
    request would be a 502). Does not prove: the rest of the
    sandbox (ProtectSystem, SystemCallFilter, RestrictAddressFamilies,
    DynamicUser, PrivateTmp) nor the /opt/bnproxy/venv path: that needs
    systemd as PID 1, which this host lacks."""
    from tlscerts import make_pki

    pki = make_pki(tmp_path / "pki")
    upstream, upstream_port = _https_upstream(pki)
    try:
        status, body, log, code = _run_as_the_unit(tmp_path, "unit", upstream_port,
                                                   str(pki.ca), mdwe=False)
        assert status == 200 and code == 0, (body, log)
        assert json.loads(body) == {"symbol": "BTCUSDT", "price": "50000.00",
                                    "path": "/api/v3/ticker/price?symbol=BTCUSDT"}
        # The control: the same start with MemoryDenyWriteExecute in force.
        # The TLS policy refuses to start (a 502 on every https request otherwise).
        status, body, log, code = _run_as_the_unit(tmp_path, "mdwe", upstream_port,
                                                   str(pki.ca), mdwe=True)
        assert status is None and code != 0, (body, log)
        assert "Traceback" not in log, log
        assert log.splitlines()[-1] == (
            "twistd bnproxy: error: TLS upstreams cannot work in this process: pyOpenSSL's "
            "callbacks need write+execute memory, which is refused; remove "
            "MemoryDenyWriteExecute= from the systemd unit")
    finally:
        upstream.terminate()
        upstream.wait(10)
