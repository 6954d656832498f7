"""The fake exchange is the oracle of the differential tests: it takes facts
from bnproxy.binance and nothing else from the proxy, and not the proxy's
kline arithmetic (bnproxy.binance.intervals)."""

import ast
from pathlib import Path

import bnproxy.testing.fake

FAKE = Path(bnproxy.testing.fake.__file__).parent
ALLOWED = ("bnproxy.binance", "bnproxy.testing.fake")
FORBIDDEN = ("bnproxy.binance.intervals",)


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return {n for n in names if n == "bnproxy" or n.startswith("bnproxy.")}


def test_the_fake_imports_only_binance_facts_from_the_proxy():
    offenders = {}
    for path in sorted(FAKE.glob("*.py")):
        bad = {n for n in imports(path)
               if not n.startswith(ALLOWED) or n.startswith(FORBIDDEN)}
        if bad:
            offenders[path.name] = sorted(bad)
    assert offenders == {}


def test_the_check_sees_a_forbidden_import(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("from bnproxy.binance.intervals import open_time\n"
                      "import bnproxy.middleware.cache\n")
    assert {n for n in imports(sample) if not n.startswith(ALLOWED) or n.startswith(FORBIDDEN)} \
        == {"bnproxy.binance.intervals", "bnproxy.binance.intervals.open_time",
            "bnproxy.middleware.cache"}
