"""Every private Twisted name bnproxy relies on, in one place, each with
where it is used and why no public API does the job.

Twisted keeps no promise about these: ``tests/test_twistedcompat.py`` checks
each against the installed Twisted (that it exists, has the expected kind,
and, for the methods bnproxy overrides or whose behaviour it depends on, that
their source is the one reviewed), so an upgrade that changes one fails
there, not in production. ``setup.cfg`` pins Twisted below its next major
version. When a check fails: read the new Twisted's code for that name, adapt
the user listed beside it, then update the check.

The names a module uses as values come from here (``ChunkedTransferDecoder``,
…); attributes read on Twisted's own objects in hot paths stay written
inline (an accessor would cost a call per request) and are listed in
:data:`PRIVATE_ATTRIBUTES`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import _sslverify, abstract, base, defer, tcp
from twisted.protocols import tls
from twisted.web import client, http
from twisted.web.http_headers import Headers

__all__ = ["PRIVATE_ATTRIBUTES", "ChunkedTransferDecoder", "HTTP11ClientFactory",
           "IOpenSSLTrustRoot", "MalformedChunkedDataError", "nothing_waits", "plain_tcp",
           "send_now"]

# server/channel.py: StrictChunkedDecoder subclasses the chunked decoder to
# refuse chunk extensions that do not parse (Twisted checks only their
# characters); there is no public hook into chunk parsing.
ChunkedTransferDecoder = http._ChunkedTransferDecoder
# server/channel.py: what the decoder raises for malformed chunked data;
# HTTPChannel turns exactly this into a 400.
MalformedChunkedDataError = http._MalformedChunkedDataError
# upstream/client.py: the pool's connection factory, subclassed to set
# ``noisy = False`` (no log line per upstream connection); HTTPConnectionPool
# names its factory class in the private ``_factory`` attribute.
HTTP11ClientFactory = client._HTTP11ClientFactory
# upstream/tls.py: the interface of a trust root (what platformTrust() and
# trustRootFromCertificates() return); twisted.internet.ssl does not
# re-export it, and its one method is private (_addCACertsToContext).
IOpenSSLTrustRoot = _sslverify.IOpenSSLTrustRoot

#: (owner, attribute, user: why) for every private attribute read, written
#: or overridden on a Twisted class or its instances.
PRIVATE_ATTRIBUTES: tuple[tuple[type, str, str], ...] = (
    (ChunkedTransferDecoder, "_dataReceived_CHUNK_LENGTH",
     "server/channel.py: overridden to check a chunk line's extensions before Twisted "
     "parses the length"),
    (ChunkedTransferDecoder, "_buffer",
     "server/channel.py: the bytes of the chunk line being parsed (a bytearray)"),
    (http.HTTPChannel, "_transferDecoder",
     "server/channel.py: the decoder Twisted made for a chunked body; its __class__ is "
     "swapped to StrictChunkedDecoder (same layout: a subclass adding no state), since "
     "HTTPChannel builds it inline with no factory to override"),
    (http.HTTPChannel, "_handlingRequest",
     "server/channel.py: a request is being answered (no header deadline, no fold check)"),
    (http.HTTPChannel, "_receivedHeaderSize",
     "server/channel.py: header bytes read so far (a request is under way: arm the "
     "absolute header deadline)"),
    (http.HTTPChannel, "_buffer",
     "server/channel.py: LineReceiver's unparsed bytes (same use)"),
    (http.HTTPChannel, "_version",
     "server/channel.py: the request line's HTTP version, to refuse Transfer-Encoding "
     "on HTTP/1.0 (headerReceived runs before the Request exists)"),
    (Headers, "_rawHeaders",
     "server/forwarding.py: response headers written straight into twisted.web's table "
     "(one dict store per header instead of setRawHeaders' checks, on every answer)"),
    (http.Request, "_disconnected",
     "server/forwarding.py: the bot went away (Request has no public flag; "
     "notifyFinish fires too late for the write path)"),
    (client.HTTPConnectionPool, "_factory",
     "upstream/client.py: the connection factory class (HTTP11ClientFactory, quiet)"),
    (IOpenSSLTrustRoot, "_addCACertsToContext",
     "upstream/tls.py: the trust root's only method, called to compose the platform "
     "store with extra CA files"),
    (abstract.FileDescriptor, "dataBuffer",
     "send_now (server/fastpath.py, server/websocket.py, upstream/http11.py): bytes a TCP "
     "transport has yet to send (sent at once only when nothing waits before them)"),
    (abstract.FileDescriptor, "_tempDataLen",
     "send_now: the length of the writes a TCP transport has buffered (same use)"),
    (abstract.FileDescriptor, "_writeDisconnected",
     "send_now: the transport's write side is shut (same use)"),
    (abstract.FileDescriptor, "_tempDataBuffer",
     "upstream/http11.py: the TLS records of a request, buffered by the TCP transport "
     "beneath TLS, sent at once; what the socket did not take is put back"),
    (tls.BufferingTLSTransport, "_aggregator",
     "upstream/http11.py: the TLS transport's gathering of small writes (a request is "
     "handed to TLS at once when nothing is gathered before it)"),
    (tls._AggregateSmallWrites, "_buffer",
     "upstream/http11.py: the writes gathered (same use)"),
    (defer.Deferred, "_callbacks",
     "chain/compose.py: whether a middleware's Deferred answer already ends with a "
     "middleware's check (passed on as it came: no second check per middleware), and "
     "the callback a middleware added last folded into one step with its check"),
    (base.ReactorBase, "_exitSignal",
     "service.py: the signal that stopped the reactor; cleared after a drained SIGTERM "
     "so twistd exits 0 instead of re-raising the signal"),
)


# -- sending at once ---------------------------------------------------------------------
# Twisted's TCP transport buffers every write and sends it when the reactor
# next finds the socket writable: a reactor turn and two ``epoll_ctl`` calls
# (start and stop watching for writability) per answer, per forwarded
# request, per websocket burst. There is no public "send now". These read the
# transport's buffers (``dataBuffer``, ``_tempDataLen``, ``_writeDisconnected``:
# listed in PRIVATE_ATTRIBUTES) to send at once only when nothing waits, so
# the order of bytes on the connection is always the order written.


def plain_tcp(transport: Any) -> bool:
    """Whether :func:`send_now` may send on ``transport``'s socket itself: a
    Twisted TCP (or unix) connection without TLS, with the buffers it reads.
    Anything else (TLS, a wrapper, an in-memory transport) is written to."""
    return (isinstance(transport, tcp.Connection) and not getattr(transport, "TLS", True)
            and all(hasattr(transport, a) for a in
                    ("_tempDataLen", "dataBuffer", "_writeDisconnected", "socket")))


def nothing_waits(transport: Any, buffered: bool = False) -> bool:
    """A connected plain TCP transport with nothing waiting to be sent (but
    what was just ``buffered``, when true), its write side open."""
    return bool(transport.connected) and not (
        transport.dataBuffer or (transport._tempDataLen and not buffered)
        or transport.disconnecting or transport._writeDisconnected)


def send_now(transport: Any, data: bytes, more: bytes = b"") -> None:
    """``transport.write(data)`` then ``transport.write(more)``, sent at once
    (one ``send``, or one ``sendmsg`` of both: a large body is not copied
    behind its head) when nothing waits on ``transport``. What the socket does not
    take, or an error, goes to ``transport.write``, which queues it in order
    and sees the error. ``transport`` must be one :func:`plain_tcp` accepts."""
    if nothing_waits(transport):
        try:
            sock = transport.socket
            sent = sock.sendmsg((data, more)) if more else sock.send(data)
        except OSError:  # EAGAIN, or the connection's end: the transport's to handle
            sent = 0
        if sent == len(data) + len(more):
            return
        if sent >= len(data):
            data, more = more[sent - len(data):], b""
        else:
            data = data[sent:]
    transport.write(data)
    if more:
        transport.write(more)
