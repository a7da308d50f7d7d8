"""The control plane's PKI, made fresh for each test run: one CA, the API server's serving
certificate, client certificates (admin, controller-manager) and the service-account key."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from injector.web.tls import CA_KEY_USAGE

# Clock skew between this process and the binaries is nil, but a run can outlast midnight.
VALIDITY = datetime.timedelta(days=2)
BACKDATE = datetime.timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class Pki:
    ca: Pair
    apiserver: Pair
    admin: Pair
    controller_manager: Pair
    # kube-apiserver checks service-account tokens with the public half; the
    # controller-manager and the API server's TokenRequest sign with the private one.
    service_account_key: Path
    service_account_pub: Path


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
    )


class _Issuer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name("mesher-injector e2e CA")
        self.cert = (
            _builder(self.name, self.name, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(CA_KEY_USAGE, critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def write(self, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Pair:
        pair = Pair(cert=self.folder / f"{stem}.crt", key=self.folder / f"{stem}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pair.key.write_bytes(_pem_key(key))
        pair.key.chmod(0o600)
        return pair

    def server(self, stem: str, *, dns_names: list[str], ips: list[str]) -> Pair:
        key = ec.generate_private_key(ec.SECP256R1())
        alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        cert = (
            _builder(_name(dns_names[0]), self.name, key.public_key())
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return self.write(stem, cert, key)

    def client(self, stem: str, *, user: str, group: str | None = None) -> Pair:
        """A client certificate: kube-apiserver reads the user from CN, groups from O."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            _builder(_name(user, group), self.name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return self.write(stem, cert, key)


def make_pki(folder: Path, *, service_ip: str) -> Pki:
    """Everything the control plane needs, in `folder`. `service_ip` is the ClusterIP of
    the `kubernetes` Service (the first address of the service range)."""
    folder.mkdir(parents=True, exist_ok=True)
    issuer = _Issuer(folder)
    ca = Pair(cert=folder / "ca.crt", key=folder / "ca.key")
    ca.cert.write_bytes(issuer.cert.public_bytes(serialization.Encoding.PEM))
    ca.key.write_bytes(_pem_key(issuer.key))
    apiserver = issuer.server(
        "apiserver",
        dns_names=[
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
        ips=["127.0.0.1", service_ip],
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_private = folder / "sa.key"
    sa_public = folder / "sa.pub"
    sa_private.write_bytes(_pem_key(sa_key))
    sa_public.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return Pki(
        ca=ca,
        apiserver=apiserver,
        admin=issuer.client("admin", user="e2e-admin", group="system:masters"),
        controller_manager=issuer.client(
            "controller-manager", user="system:kube-controller-manager"
        ),
        service_account_key=sa_private,
        service_account_pub=sa_public,
    )
