"""TLS for the fake exchange: a throwaway certificate authority and a server
certificate for 127.0.0.1/localhost, made at start (``cryptography``), or
certificate and key files the caller gives.

A client that trusts :attr:`TlsFiles.ca` (``SSL_CERT_FILE``, bnproxy's
``--upstream-ca``, or a Twisted ``trustRoot``) can then reach the fake over
https and wss exactly as it reaches Binance.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import attrs
from twisted.internet.interfaces import IOpenSSLContextFactory
from zope.interface import implementer

CA_FILE = "fake-exchange-ca.pem"
CERT_FILE = "fake-exchange-server.pem"
KEY_FILE = "fake-exchange-server.key"
HOSTS = ("localhost",)
ADDRESSES = ("127.0.0.1", "::1")


@attrs.frozen
class TlsFiles:
    """PEM files: the server's certificate (chain) and key, and the CA a
    client should trust (None when the caller brought its own files)."""

    cert: str
    key: str
    ca: str | None = None

    def server_options(self):
        """A server context factory (``getContext()``) serving this
        certificate chain and key, TLS 1.2 or later."""
        from OpenSSL import SSL

        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.use_certificate_chain_file(self.cert)
        context.use_privatekey_file(self.key)
        context.check_privatekey()
        return _ServerContext(context)


@implementer(IOpenSSLContextFactory)
@attrs.frozen
class _ServerContext:
    context: object

    def getContext(self):
        return self.context


def make_certificates(directory: str | Path, days: int = 7,
                      names: tuple[str, ...] = (*HOSTS, *ADDRESSES),
                      ca_name: str = "bnproxy fake exchange CA") -> TlsFiles:
    """Write a new CA called ``ca_name`` and a server certificate signed by
    it (valid for ``days``, for ``names``: host names and IP addresses; by
    default ``localhost``, ``127.0.0.1`` and ``::1``) under ``directory``;
    the keys never leave it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca_cert = (
        x509.CertificateBuilder().subject_name(issuer).issuer_name(issuer)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256()))

    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(issuer).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256()))

    pem = serialization.Encoding.PEM
    ca_path, cert_path, key_path = (directory / n for n in (CA_FILE, CERT_FILE, KEY_FILE))
    ca_path.write_bytes(ca_cert.public_bytes(pem))
    cert_path.write_bytes(cert.public_bytes(pem))
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return TlsFiles(str(cert_path), str(key_path), str(ca_path))


def client_trusting(ca_file: str | Path):
    """A ``twisted.web`` policy (``BrowserLikePolicyForHTTPS``) that trusts
    only the CA in ``ca_file``: for ``Agent(reactor, contextFactory=...)``."""
    from twisted.internet.ssl import Certificate
    from twisted.web.client import BrowserLikePolicyForHTTPS

    return BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(Path(ca_file).read_bytes()))


def wrap(factory, files: TlsFiles):
    """``factory`` behind TLS (a ``TLSMemoryBIOFactory``), for any listening
    endpoint or ``listenTCP``."""
    from twisted.protocols.tls import TLSMemoryBIOFactory

    return TLSMemoryBIOFactory(files.server_options(), False, factory)
