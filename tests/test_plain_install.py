"""A plain ``pip install .`` (no test extra) must run everything the README
shows: no runtime module may import a test-only package."""

from __future__ import annotations

import subprocess
import sys

# Runs in a child interpreter where importing a test-only package fails, as in
# a venv without the test extra; every runtime module is imported and the
# offline demo's service is built.
CHILD = r"""
import importlib, pkgutil, sys
TEST_ONLY = ("pytest", "_pytest", "hypothesis", "treq", "pytest_twisted")

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in TEST_ONLY:
            raise ModuleNotFoundError(f"No module named {name!r} (test-only)")
        return None

sys.meta_path.insert(0, Refuse())
import bnproxy
skip = {"bnproxy.testing.fixture", "bnproxy.testing.pytest_plugin"}
for info in pkgutil.walk_packages(bnproxy.__path__, "bnproxy."):
    if info.name not in skip:
        importlib.import_module(info.name)

from twisted.internet import reactor
from bnproxy.tap import Options, makeService
options = Options()
options.parseOptions(["--simulated-exchange", "--port", "tcp:0:interface=127.0.0.1"])
service = makeService(options)
print("built", type(service).__name__)
"""


def test_runtime_modules_and_the_offline_demo_need_no_test_package(tmp_path):
    result = subprocess.run([sys.executable, "-c", CHILD], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "built" in result.stdout


def test_python_m_bnproxy_help_lists_every_command():
    result = subprocess.run([sys.executable, "-m", "bnproxy", "--help"], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0
    assert "python -m bnproxy freqtrade-config" in result.stdout
