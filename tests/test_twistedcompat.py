"""The private Twisted names bnproxy relies on (bnproxy/twistedcompat.py)
are still there and still what was reviewed; no other production module
reaches into Twisted's privates; importing bnproxy leaves the global reactor
alone (as treq's own test does)."""

from __future__ import annotations

import ast
import hashlib
import inspect
import pathlib
import subprocess
import sys

import pytest
from twisted.internet import abstract, defer
from twisted.internet.testing import StringTransport
from twisted.protocols import tls
from twisted.web import http
from zope.interface.interface import InterfaceClass

import bnproxy
from bnproxy import twistedcompat as compat

ROOT = pathlib.Path(bnproxy.__file__).parent

#: Twisted methods whose code bnproxy depends on beyond their signature: a
#: new Twisted that changes one fails here; review it (see the users in
#: twistedcompat.PRIVATE_ATTRIBUTES), then record the new digest.
REVIEWED = {
    # overridden by StrictChunkedDecoder, which then calls it
    "_ChunkedTransferDecoder._dataReceived_CHUNK_LENGTH": "b8f33f5942b1075f",
    # the decoder's state: StrictChunkedDecoder adds none (the __class__ swap)
    "_ChunkedTransferDecoder.__init__": "33d2107fa07649a2",
    # where HTTPChannel makes the chunked decoder the channel then swaps
    "HTTPChannel.headerReceived": "c5cb8e0dd2fe0b44",
    # upstream/http11.py's write at once: what a TCP transport buffers and how
    # it sends it; the TLS transport's gathering and its write beneath
    "FileDescriptor.write": "3e46c97fc173bc7e",
    "FileDescriptor.doWrite": "a986d7b1b1054e43",
    "_AggregateSmallWrites.write": "6353c884a8ca58c5",
    "TLSMemoryBIOProtocol.write": "e029bcaebbb754c2",
    "TLSMemoryBIOProtocol._flushSendBIO": "c034168e4f0faf2c",
}


def _instance(owner: type) -> object:
    """An instance as bnproxy meets it (instance attributes exist then)."""
    if owner is http.HTTPChannel:
        channel = http.HTTPChannel()
        channel.makeConnection(StringTransport())
        channel.dataReceived(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n")
        return channel
    if owner is abstract.FileDescriptor:
        return abstract.FileDescriptor(reactor=object())
    if owner is tls.BufferingTLSTransport:
        from twisted.internet.protocol import Factory, Protocol
        from twisted.internet.ssl import optionsForClientTLS
        from twisted.internet.task import Clock
        factory = tls.TLSMemoryBIOFactory(optionsForClientTLS("localhost"), True,
                                          Factory.forProtocol(Protocol), clock=Clock())
        return tls.BufferingTLSTransport(factory, Protocol())
    if owner is tls._AggregateSmallWrites:
        from twisted.internet.task import Clock
        return tls._AggregateSmallWrites(lambda data: None, Clock())
    if owner is defer.Deferred:
        return defer.Deferred()
    if owner is compat.ChunkedTransferDecoder:
        return compat.ChunkedTransferDecoder(lambda data: None, lambda extra: None)
    return owner


@pytest.mark.parametrize("owner,attribute,why", compat.PRIVATE_ATTRIBUTES,
                         ids=[f"{o.__name__}.{a}" for o, a, _ in compat.PRIVATE_ATTRIBUTES])
def test_each_private_attribute_is_still_there(owner, attribute, why):
    if isinstance(owner, InterfaceClass):
        assert attribute in owner.names(), why
    else:
        assert hasattr(_instance(owner), attribute), why


def test_the_private_classes_are_still_what_bnproxy_subclasses():
    assert issubclass(compat.MalformedChunkedDataError, Exception)
    assert inspect.isclass(compat.ChunkedTransferDecoder)
    from twisted.web.client import HTTPConnectionPool
    assert HTTPConnectionPool._factory is compat.HTTP11ClientFactory
    from twisted.internet.ssl import platformTrust
    assert compat.IOpenSSLTrustRoot.providedBy(platformTrust())
    # the __class__ swap is only sound for a subclass that adds no state
    from bnproxy.server.channel import StrictChunkedDecoder
    assert StrictChunkedDecoder.__bases__ == (compat.ChunkedTransferDecoder,)
    assert set(vars(StrictChunkedDecoder)) <= {"__module__", "__doc__",
                                               "_dataReceived_CHUNK_LENGTH", "__qualname__",
                                               "__firstlineno__", "__static_attributes__"}


@pytest.mark.parametrize("qualname", sorted(REVIEWED))
def test_the_twisted_code_bnproxy_depends_on_is_the_reviewed_one(qualname):
    owner, name = qualname.split(".")
    cls = {"_ChunkedTransferDecoder": compat.ChunkedTransferDecoder,
           "HTTPChannel": http.HTTPChannel, "FileDescriptor": abstract.FileDescriptor,
           "_AggregateSmallWrites": tls._AggregateSmallWrites,
           "TLSMemoryBIOProtocol": tls.TLSMemoryBIOProtocol}[owner]
    digest = hashlib.sha256(inspect.getsource(getattr(cls, name)).encode()).hexdigest()[:16]
    assert digest == REVIEWED[qualname], (
        f"Twisted changed {qualname}: review its users (bnproxy/twistedcompat.py), "
        "then record the new digest")


def test_twisted_is_pinned_below_its_next_major():
    text = (pathlib.Path(__file__).resolve().parent.parent / "setup.cfg").read_text()
    line = next(line for line in text.splitlines() if line.strip().startswith("Twisted"))
    assert ">=26.10" in line and "<27" in line, line


# -- no other module reaches into Twisted's privates ---------------------------------------

#: Modules other helpers own that still use a private Twisted name directly
#: (listed in twistedcompat; to import it from there): module -> names.
LEFT = {
    "upstream/client.py": {"wclient._HTTP11ClientFactory"},
    "upstream/tls.py": {"twisted.internet._sslverify"},
}


def private_twisted_uses(source: str) -> set[str]:
    """Private names taken from a Twisted module: ``from twisted.x._y
    import …``, ``from twisted.x import _y``, ``module._Name``."""
    tree = ast.parse(source)
    modules: set[str] = set()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("twisted"):
            if any(part.startswith("_") for part in node.module.split(".")):
                found.add(node.module)
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.add(f"{node.module}.{alias.name}")
                else:
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("twisted"):
                    modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in modules and node.attr.startswith("_") \
                and not node.attr.startswith("__"):
            found.add(f"{node.value.id}.{node.attr}")
    return found


def test_the_scan_finds_private_twisted_names():
    assert private_twisted_uses("from twisted.web import http\nhttp._X") == {"http._X"}
    assert private_twisted_uses("from twisted.internet._sslverify import A") == {
        "twisted.internet._sslverify"}
    assert private_twisted_uses("from twisted.web.http import _Y") == {"twisted.web.http._Y"}
    assert private_twisted_uses("from twisted.web import http\nhttp.Request") == set()


def test_only_twistedcompat_names_private_twisted_names():
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "twistedcompat.py" or rel.startswith("testing/"):
            continue
        uses = private_twisted_uses(path.read_text()) - LEFT.get(rel, set())
        if uses:
            found[rel] = sorted(uses)
    assert not found, f"private Twisted names outside bnproxy/twistedcompat.py: {found}"


# -- the global reactor ---------------------------------------------------------------------

# txredisapi imports twisted.internet.reactor when imported (a dependency's
# habit, to be met by importing it lazily in cluster/): the probe stands a
# stub in for it, so that every module of bnproxy is checked for its own.
PROBE = """
import importlib, sys, types
class _Stub(types.ModuleType):
    def __getattr__(self, name):
        return type(name, (), {})
sys.modules["txredisapi"] = _Stub("txredisapi")
for name in sys.argv[1:]:
    importlib.import_module(name)
    if "twisted.internet.reactor" in sys.modules:
        print(name)
        break
"""


def test_importing_bnproxy_leaves_the_global_reactor_alone():
    """Every module of the package (and the twistd plugin) imports without
    installing the global reactor: a program embedding bnproxy, or a test
    runner, picks its own (as treq's test_reactor_not_installed checks)."""
    import pkgutil

    names = sorted(m.name for m in pkgutil.walk_packages(bnproxy.__path__, "bnproxy."))
    assert len(names) > 100
    names.append("twisted.plugins.bnproxy_plugin")
    result = subprocess.run([sys.executable, "-c", PROBE, *names], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "", \
        f"importing {result.stdout.strip()} installs the global reactor"


def test_reading_the_configuration_leaves_the_global_reactor_alone():
    """config/sources.py checked the listen endpoints with the global reactor."""
    code = ("import sys\nfrom bnproxy.tap import Options\no = Options()\n"
            "o.parseOptions(['--port', 'tcp:0:interface=127.0.0.1', '--listen', 'unix:/x'])\n"
            "o.config({})\nprint('twisted.internet.reactor' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.stdout.strip() == "False", result.stderr[-2000:]
