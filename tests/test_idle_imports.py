"""What a running configuration imports (issue 21 item 3): a module it does
not use is not loaded (each costs resident memory for as long as the proxy
runs). Checked in a fresh interpreter: the test process has imported
everything."""

import json
import subprocess
import sys

import pytest

SCRIPT = """
import json, sys
from twisted.internet import reactor
from bnproxy.config.model import ProxyConfig
from bnproxy.service import ProxyService
options = json.loads(sys.argv[2])
if "middleware" in options:
    options["middleware"] = tuple((m, {}) for m in options["middleware"])
ProxyService(reactor, ProxyConfig(listen=(), upstreams={"spot": "https://127.0.0.1:9"},
                                  access_log="none", state_dir=sys.argv[1], **options))
print(json.dumps(sorted(sys.modules)))
"""

NEVER = ("hypothesis", "txredisapi", "redis", "bnproxy.testing", "bnproxy.cluster.redis_state")


def _modules(tmp_path, **options) -> list[str]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), json.dumps(options)],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return json.loads(out)


def _loaded(modules: list[str], *names: str) -> list[str]:
    return [m for m in modules if m in names or m.startswith(tuple(n + "." for n in names))]


def test_the_default_configuration_loads_no_redis_fake_exchange_or_test_tool(tmp_path):
    modules = _modules(tmp_path)
    assert "bnproxy.server.websocket" in modules  # streams: the bots' gateway is used
    assert _loaded(modules, *NEVER) == []


@pytest.mark.parametrize("chain", [[], ["logger", "allowlist", "cache", "ratelimit"]],
                         ids=["no-middleware", "no-streams"])
def test_a_chain_without_streams_loads_no_websocket_library(tmp_path, chain):
    modules = _modules(tmp_path, middleware=chain)
    assert _loaded(modules, "autobahn", "bnproxy.server.websocket",
                   "bnproxy.middleware.streams", *NEVER) == []
