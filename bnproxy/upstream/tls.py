"""Which certificates bnproxy trusts when it reaches an upstream over TLS
(https for REST, wss for streams).

The trust is the platform's store (OpenSSL's default paths, which honour
``SSL_CERT_FILE`` and ``SSL_CERT_DIR``; pyOpenSSL falls back to the system
bundle when the OpenSSL of a wheel points nowhere) plus, optionally, the CA
certificates of one or more PEM files (``--upstream-ca FILE``): extra
certificates are added to the platform trust, never replace it.

``upstream_tls_policy(extra_ca)`` is an ``IPolicyForHTTPS`` for
``twisted.web.client.Agent(contextFactory=...)``; its ``creatorForNetloc``
also gives the connection creator a websocket endpoint wraps with
``twisted.internet.endpoints.wrapClientTLS``. A certificate that does not
verify fails the connection with ``UntrustedCertificateError``, whose message
names the host, the certificate and OpenSSL's reason, instead of OpenSSL's
bare ``certificate verify failed``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Sequence

from cryptography import x509
from OpenSSL import SSL, crypto
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import verify_certificate_hostname, verify_certificate_ip_address
from twisted.internet._sslverify import IOpenSSLTrustRoot  # not re-exported by ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.python.failure import Failure
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from bnproxy.config.reader import ConfigError

__all__ = ["TLSConfigError", "UntrustedCertificateError", "UpstreamTLSPolicy",
           "check_tls_callbacks", "load_ca_file", "trust_root", "upstream_tls_policy"]

# OpenSSL's X509_V_ERR_* codes an operator is likely to meet, in its own words.
_VERIFY_ERRORS = {
    2: "unable to get issuer certificate",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unable to get local issuer certificate",
    21: "unable to verify the first certificate",
    23: "certificate revoked",
    26: "unsupported certificate purpose",
    62: "hostname mismatch",
    64: "IP address mismatch",
}


class TLSConfigError(ConfigError):
    """TLS cannot be set up as configured (one line; start-up stops)."""


class UntrustedCertificateError(Exception):
    """The upstream's certificate did not verify against the trusted CAs."""


def load_ca_file(path: str) -> list[Certificate]:
    """The certificates of a PEM file (one or more ``BEGIN CERTIFICATE``
    blocks); raises ``TLSConfigError`` naming the file and the problem."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise TLSConfigError(f"upstream CA file {path}: {e.strerror or e}") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise TLSConfigError(f"upstream CA file {path}: no PEM certificate in it ({e})") from None
    return [Certificate(crypto.X509.from_cryptography(c)) for c in certs]


@implementer(IOpenSSLTrustRoot)
class _PlatformPlus:
    """The platform trust plus explicit certificates. (Twisted calls this
    interface's method private; this only composes Twisted's own two
    implementations, ``platformTrust()`` and ``trustRootFromCertificates``.)"""

    def __init__(self, extra: IOpenSSLTrustRoot) -> None:
        self._platform = platformTrust()
        self._extra = extra

    def _addCACertsToContext(self, context: SSL.Context) -> None:
        self._platform._addCACertsToContext(context)
        self._extra._addCACertsToContext(context)


def trust_root(extra_ca: str | Sequence[str] | None = None) -> IOpenSSLTrustRoot:
    """The platform trust, plus the certificates in ``extra_ca`` (a PEM file
    path or several)."""
    if not extra_ca:
        return platformTrust()
    paths = [extra_ca] if isinstance(extra_ca, str | os.PathLike) else list(extra_ca)
    certs: list[Certificate] = []
    for path in paths:
        certs += load_ca_file(os.fspath(path))
    return _PlatformPlus(trustRootFromCertificates(certs))


def _describe(cert: crypto.X509) -> str:
    c = cert.to_cryptography()
    return f"subject {c.subject.rfc4514_string()!r}, issuer {c.issuer.rfc4514_string()!r}"


def _names(cert: crypto.X509) -> str:
    """The names a certificate is for (its subjectAltName entries)."""
    try:
        san = cert.to_cryptography().extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "no subjectAltName"
    names = [f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)]
    names += [f"IP:{n}" for n in san.get_values_for_type(x509.IPAddress)]
    return ", ".join(names) or "no DNS name or IP address"


def _check_identity(cert: crypto.X509, host: str) -> None:
    """Raise ``VerificationError``/``CertificateError`` unless the leaf
    certificate names ``host`` (an IP address or a DNS name), as Twisted's
    own ``ClientTLSOptions`` checks it (service_identity)."""
    leaf = cert.to_cryptography()
    try:
        ipaddress.ip_address(host)
    except ValueError:
        verify_certificate_hostname(leaf, host)
    else:
        verify_certificate_ip_address(leaf, host)


@implementer(IOpenSSLClientConnectionCreator)
class _Explaining:
    """A connection creator whose verification failure says why.

    pyOpenSSL has one verify callback per connection and Twisted's
    ``ClientTLSOptions`` uses it for the server-identity check, so this one
    replaces it and does both checks itself: the chain (OpenSSL's verdict,
    ``ok``) and, at the leaf, the identity (service_identity, as Twisted)."""

    def __init__(self, inner: IOpenSSLClientConnectionCreator, host: str, port: int) -> None:
        self._inner = inner
        self._host = host
        self._netloc = f"{host}:{port}"

    def clientConnectionForTLS(self, tlsProtocol):
        connection = self._inner.clientConnectionForTLS(tlsProtocol)
        failed: list[str] = []

        def fail(text: str) -> bool:
            if not failed:
                failed.append(text)
                tlsProtocol.failVerification(Failure(UntrustedCertificateError(text)))
            return False

        def verify(conn, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
            try:
                if not ok:
                    reason = _VERIFY_ERRORS.get(errno, f"OpenSSL verify error {errno}")
                    return fail(f"TLS certificate of {self._netloc} not trusted: {reason} "
                                f"({_describe(cert)}); give its CA with --upstream-ca FILE "
                                "or SSL_CERT_FILE")
                if depth == 0:
                    try:
                        _check_identity(cert, self._host)
                    except (VerificationError, CertificateError):
                        return fail(f"TLS certificate of {self._netloc} is not for "
                                    f"{self._host}: it names {_names(cert)} "
                                    f"({_describe(cert)})")
                return not failed
            except Exception as e:  # never let an exception escape into OpenSSL
                return fail(f"TLS certificate of {self._netloc} could not be checked: {e!r}")

        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, verify)
        return connection


@implementer(IPolicyForHTTPS)
class UpstreamTLSPolicy:
    """``BrowserLikePolicyForHTTPS`` with bnproxy's trust root (platform plus
    the extra CAs) and failures that name the certificate problem. Server
    names are verified (service_identity) as a browser does."""

    def __init__(self, root: IOpenSSLTrustRoot | None = None) -> None:
        self.trust_root = root if root is not None else platformTrust()

    def creatorForNetloc(self, hostname: bytes | str, port: int):
        """A client connection creator for ``hostname:port`` (also usable
        with ``wrapClientTLS`` for wss)."""
        host = hostname.decode("ascii") if isinstance(hostname, bytes) else hostname
        return _Explaining(optionsForClientTLS(host, trustRoot=self.trust_root), host, port)


def check_tls_callbacks() -> None:
    """Raise ``TLSConfigError`` when pyOpenSSL cannot create its callbacks in
    this process (cffi needs writable+executable memory, which systemd's
    ``MemoryDenyWriteExecute=`` or ``prctl(PR_SET_MDWE)`` refuse): otherwise
    every TLS upstream would fail at its first connection, not at start-up."""
    try:
        SSL.Context(SSL.TLS_METHOD).set_verify(SSL.VERIFY_PEER, lambda *args: True)
    except MemoryError:
        raise TLSConfigError(
            "TLS upstreams cannot work in this process: pyOpenSSL's callbacks need "
            "write+execute memory, which is refused; remove MemoryDenyWriteExecute= "
            "from the systemd unit") from None


def upstream_tls_policy(extra_ca: str | Iterable[str] | None = None) -> UpstreamTLSPolicy:
    """The policy for every upstream TLS connection: platform trust
    (``SSL_CERT_FILE``/``SSL_CERT_DIR`` included) plus ``extra_ca``.
    Raises ``TLSConfigError`` for an unreadable or empty CA file, or when
    TLS callbacks cannot be made here (``check_tls_callbacks``)."""
    check_tls_callbacks()
    return UpstreamTLSPolicy(trust_root(extra_ca))  # type: ignore[arg-type]
