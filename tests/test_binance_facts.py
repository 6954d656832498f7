"""Every Binance fact lives once, in bnproxy/binance/: no error code, Binance
header name or documented weight limit is typed anywhere else in the
package (docstrings and comments may cite them). The fake exchange is the
oracle and keeps its own copy on purpose; it is not scanned."""

from __future__ import annotations

import ast
import pathlib
import re

import bnproxy
from bnproxy.binance import errors, headers, limits, marketdata, privacy

ROOT = pathlib.Path(bnproxy.__file__).parent

#: Facts still typed outside binance/, in files other owners keep (each to
#: move there, then its entry deleted): path -> what the scan may find in it.
LEFT = {
    "server/admin.py": {"code -1002"},
    "middleware/ratelimit/middleware.py": {"weight limit 6000", "weight limit 2400",
                                           "weight limit 12000", "weight limit 180000"},
}

HEADER = re.compile(rb"^x-(mbx|sapi)-", re.I)
CODE_IN_TEXT = re.compile(r'"code"\s*:\s*(-\d{4})')
LIMIT_IN_TEXT = re.compile(r"\b(6000|6,000|2400|2,400|12000|12,000|180000|180,000)\b")


def _known_headers() -> set[bytes]:
    found = {privacy.API_KEY_HEADER, *marketdata.VARYING_HEADERS, *headers.REQUEST_HEADERS}
    for module in (limits, headers):
        for value in vars(module).values():
            if isinstance(value, bytes):
                found.add(value)
    return {h for h in found if HEADER.match(h)}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def facts_in(source: str) -> set[str]:
    """The Binance facts typed in ``source``'s code (not its docstrings)."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    known_codes = {v for k, v in vars(errors).items() if k.isupper() and isinstance(v, int)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and \
                isinstance(node.operand, ast.Constant) and isinstance(node.operand.value, int) \
                and (-node.operand.value in known_codes or 1000 <= node.operand.value <= 9999):
            found.add(f"code -{node.operand.value}")
        if not isinstance(node, ast.Constant) or id(node) in skip:
            continue
        value = node.value
        if isinstance(value, bytes) and HEADER.match(value):
            found.add(f"header {value.decode().lower()}")
        if isinstance(value, str) and HEADER.match(value.encode()):
            found.add(f"header {value.lower()}")
        if isinstance(value, (str, bytes)):
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            found.update(f"code {c}" for c in CODE_IN_TEXT.findall(text))
            found.update(f"weight limit {n.replace(',', '')}" for n in LIMIT_IN_TEXT.findall(text))
    return found


def test_the_scan_finds_each_kind_of_fact():
    """The scanner itself: each kind is found, docstrings are not scanned."""
    assert facts_in('X = b"x-mbx-apikey"') == {"header x-mbx-apikey"}
    assert facts_in('X = "X-SAPI-USED-IP-WEIGHT-1M"') == {"header x-sapi-used-ip-weight-1m"}
    assert facts_in("f(-1003)") == {"code -1003"}
    assert facts_in("""X = b'{"code":-1000,"msg":"x"}'""") == {"code -1000"}
    assert facts_in('H = "limits (spot 6000, usdm 2,400)"') == {"weight limit 6000",
                                                                 "weight limit 2400"}
    assert facts_in('"""Binance answers -1003 with X-MBX-USED-WEIGHT-1M: 6000."""') == set()
    assert b"x-mbx-used-weight-1m" in _known_headers()


def test_no_binance_fact_is_typed_outside_binance():
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(("binance/", "testing/fake/")):
            continue
        facts = facts_in(path.read_text()) - LEFT.get(rel, set())
        if facts:
            found[rel] = sorted(facts)
    assert not found, f"Binance facts outside bnproxy/binance/ (move them there): {found}"

