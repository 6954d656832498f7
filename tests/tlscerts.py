"""A throwaway CA and a server certificate for one host, made per test (with
the fake exchange's certificate maker), and an https/wss listener on loopback
using them."""

from __future__ import annotations

from pathlib import Path

import attrs

from bnproxy.testing.fake.tls import TlsFiles, make_certificates


@attrs.frozen
class PKI:
    ca: Path  # the CA certificate (PEM), what --upstream-ca / SSL_CERT_FILE get
    cert: Path  # the server certificate (PEM)
    key: Path  # the server key (PEM, unencrypted)

    def server_options(self):
        """A server context factory for the certificate."""
        return TlsFiles(str(self.cert), str(self.key), str(self.ca)).server_options()


def make_pki(directory: Path, host: str = "127.0.0.1", ca_name: str = "bnproxy test CA"
             ) -> PKI:
    """A CA and a certificate for ``host`` (an IP SAN, or a DNS SAN) signed by it."""
    files = make_certificates(directory, days=1, names=(host,), ca_name=ca_name)
    assert files.ca is not None
    return PKI(Path(files.ca), Path(files.cert), Path(files.key))


def listen_tls(reactor, factory, pki: PKI):
    """Listen on 127.0.0.1 (a free port) over TLS; a Deferred of the port."""
    from twisted.internet.endpoints import SSL4ServerEndpoint
    return SSL4ServerEndpoint(reactor, 0, pki.server_options(),
                              interface="127.0.0.1").listen(factory)
