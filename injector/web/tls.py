"""Serving TLS: contexts, hot reload of cert and key files, and certificate generation.

Reload never touches the live context: a fresh context is built and checked, then
installed through the listening context's `sni_callback`, which points every new
handshake at the current one. A half-written rotation (cert and key out of step)
fails to build and the old context keeps serving.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from injector.core.limits import SELF_SIGNED_REUSE_S
from injector.core.names import PRODUCT


def build_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context; raises ssl.SSLError / OSError when the pair is bad."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    return context


@dataclass(frozen=True, slots=True)
class Serving:
    """What humans and metrics see of the certificate in use."""

    not_before: float
    not_after: float
    fingerprint: str  # SHA-256 of the DER certificate, hex


def serving_of(cert_file: Path) -> Serving:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    return Serving(
        not_before=cert.not_valid_before_utc.timestamp(),
        not_after=cert.not_valid_after_utc.timestamp(),
        fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
    )


class CertificateRefused(ValueError):
    """The pair is not one to serve: unreadable, mismatched, expired or not yet valid.
    `retry_at`: when the same files may become acceptable (not yet valid), else None."""

    def __init__(self, message: str, retry_at: float | None = None) -> None:
        super().__init__(message)
        self.retry_at = retry_at


def load_pair(cert_file: Path, key_file: Path, *, now: float) -> tuple[ssl.SSLContext, Serving]:
    """A checked context for the pair, or CertificateRefused saying why."""
    try:
        context = build_context(cert_file, key_file)
        serving = serving_of(cert_file)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise CertificateRefused(f"cert/key unusable (mismatched or malformed): {exc}") from exc
    if serving.not_after <= now:
        raise CertificateRefused(f"the certificate expired at {_iso(serving.not_after)}")
    if serving.not_before > now:
        raise CertificateRefused(
            f"the certificate is not valid before {_iso(serving.not_before)}",
            retry_at=serving.not_before,
        )
    return context, serving


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat()


@dataclass(frozen=True, slots=True)
class TlsReload:
    changed: bool
    error: str = ""
    serving: Serving | None = None


class ReloadingTls:
    """Owns the listening SSLContext and swaps the per-handshake context on change.

    A refused pair is reported once (not at every check) and retried only when the files
    change again, or when a not-yet-valid certificate becomes valid."""

    __slots__ = (
        "_clock",
        "_current",
        "_digest",
        "_refused",
        "cert_file",
        "key_file",
        "listening",
        "serving",
    )

    def __init__(
        self, cert_file: Path, key_file: Path, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self._clock = clock
        self._digest = self._read_digest()
        self._refused: tuple[str, float] | None = None  # digest, retry at
        self._current, self.serving = load_pair(cert_file, key_file, now=clock())
        self.listening = build_context(cert_file, key_file)
        self.listening.sni_callback = self._select

    @property
    def current(self) -> ssl.SSLContext:
        return self._current

    def _select(
        self, ssl_object: ssl.SSLObject, _server_name: str | None, _ctx: ssl.SSLContext
    ) -> None:
        ssl_object.context = self._current

    def _read_digest(self) -> str:
        digest = hashlib.sha256()
        digest.update(self.cert_file.read_bytes())
        digest.update(b"\0")
        digest.update(self.key_file.read_bytes())
        return digest.hexdigest()

    def check(self) -> TlsReload:
        """Reload if the files' content changed; keep the old context on any failure."""
        now = self._clock()
        try:
            digest = self._read_digest()
        except OSError as exc:
            digest = f"unreadable: {exc}"
        if digest == self._digest:
            return TlsReload(changed=False)
        if self._refused is not None and self._refused[0] == digest and now < self._refused[1]:
            return TlsReload(changed=False)  # already reported
        try:
            if digest.startswith("unreadable: "):
                raise CertificateRefused(f"cannot read cert or key: {digest[12:]}")
            context, serving = load_pair(self.cert_file, self.key_file, now=now)
        except CertificateRefused as exc:
            retry_at = exc.retry_at if exc.retry_at is not None else float("inf")
            self._refused = (digest, retry_at)
            return TlsReload(changed=False, error=f"new cert/key refused, old one kept: {exc}")
        self._current, self.serving = context, serving
        self._digest, self._refused = digest, None
        return TlsReload(changed=True, serving=serving)


@dataclass(frozen=True, slots=True)
class CertBundle:
    ca_cert: bytes
    cert: bytes
    key: bytes


# What a CA's key may do: sign certificates and revocation lists (and its own handshakes).
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def issue_certificates(
    *,
    dns_names: list[str],
    ip_addresses: list[str] | None = None,
    days: int = 365,
    start: datetime.datetime | None = None,
) -> CertBundle:
    """A fresh CA and a server certificate signed by it, both PEM, valid from `start`
    (default: now, less five minutes of clock skew) for `days`."""
    now = start + datetime.timedelta(minutes=5) if start else datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{PRODUCT} CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            CA_KEY_USAGE,
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses or []]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return CertBundle(
        ca_cert=ca_cert.public_bytes(serialization.Encoding.PEM),
        cert=cert.public_bytes(serialization.Encoding.PEM),
        key=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names the API server may use for a webhook Service; `<svc>.<ns>.svc` first."""
    return [
        f"{service}.{namespace}.svc",
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def tls_secret_manifest(*, name: str, namespace: str, bundle: CertBundle) -> dict[str, object]:
    """A `kubernetes.io/tls` Secret with the serving pair and the CA."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": PRODUCT},
        },
        "data": {
            "tls.crt": base64.b64encode(bundle.cert).decode(),
            "tls.key": base64.b64encode(bundle.key).decode(),
            "ca.crt": base64.b64encode(bundle.ca_cert).decode(),
        },
    }


class SelfSigned(NamedTuple):
    ca: Path
    cert: Path
    key: Path
    reused: bool  # the pair already there was kept


def write_self_signed(
    directory: Path, *, dns_names: list[str], ip_addresses: list[str], now: float
) -> SelfSigned:
    """ca.crt, tls.crt and tls.key (0600) in `directory`. A pair already there is kept
    while it covers the names and stays valid for SELF_SIGNED_REUSE_S more, so a CA a
    developer trusted once keeps working across restarts; otherwise a new CA and pair."""
    ca, cert, key = directory / "ca.crt", directory / "tls.crt", directory / "tls.key"
    if ca.exists() and _covers(cert, key, dns_names + ip_addresses, now + SELF_SIGNED_REUSE_S):
        return SelfSigned(ca, cert, key, reused=True)
    directory.mkdir(parents=True, exist_ok=True)
    bundle = issue_certificates(dns_names=dns_names, ip_addresses=ip_addresses)
    ca.write_bytes(bundle.ca_cert)
    cert.write_bytes(bundle.cert)
    key.touch(mode=0o600)
    key.write_bytes(bundle.key)
    return SelfSigned(ca, cert, key, reused=False)


def _covers(cert_file: Path, key_file: Path, names: list[str], until: float) -> bool:
    """The pair loads, is valid at `until`, and names every one of `names`."""
    try:
        load_pair(cert_file, key_file, now=until)
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        alternative = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (CertificateRefused, OSError, ValueError, x509.ExtensionNotFound):
        return False
    covered = {
        *alternative.get_values_for_type(x509.DNSName),
        *(str(ip) for ip in alternative.get_values_for_type(x509.IPAddress)),
    }
    return covered >= set(names)
