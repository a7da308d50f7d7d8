"""Certificates from `certs`, and serving-cert rotation with real TLS handshakes."""

from __future__ import annotations

import asyncio
import datetime
import ssl
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from injector.core.limits import SELF_SIGNED_REUSE_S
from injector.web.server import Server
from injector.web.tls import CertBundle, ReloadingTls, issue_certificates, write_self_signed
from tests.support.helpers import ROOT, wait_until
from tests.support.servers import start_server


def run_certs(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "injector", "certs", "-o", str(out), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_certs_writes_a_chain_for_the_webhook_service(tmp_path: Path) -> None:
    result = run_certs(tmp_path, "--dns", "injector.example", "--ip", "10.96.0.10", "--days", "30")
    assert result.returncode == 0, result.stderr
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "mesher-injector.mesher-system.svc",
        "mesher-injector",
        "mesher-injector.mesher-system",
        "mesher-injector.mesher-system.svc.cluster.local",
        "injector.example",
    ]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.96.0.10"]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=29) < lifetime <= datetime.timedelta(days=30)
    assert (tmp_path / "tls.key").stat().st_mode & 0o077 == 0
    secret = yaml.safe_load((tmp_path / "secret.yaml").read_text())
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"] == {
        "name": "mesher-injector-tls",
        "namespace": "mesher-system",
        "labels": {"app.kubernetes.io/name": "mesher-injector"},
    }
    import base64

    assert base64.b64decode(secret["data"]["tls.crt"]) == (tmp_path / "tls.crt").read_bytes()
    assert (
        base64.b64decode((tmp_path / "cabundle").read_text()) == (tmp_path / "ca.crt").read_bytes()
    )
    # The pair works as a real server context, verified by a client trusting the CA.
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")


def test_certs_rejects_a_bad_ip_clearly(tmp_path: Path) -> None:
    result = run_certs(tmp_path, "--ip", "not-an-ip")
    assert result.returncode == 1
    assert "cannot issue" in result.stderr
    assert "Traceback" not in result.stderr


def write_pair(directory: Path, bundle: CertBundle, *, cert: bool = True, key: bool = True) -> None:
    if cert:
        (directory / "tls.crt").write_bytes(bundle.cert)
    if key:
        (directory / "tls.key").write_bytes(bundle.key)


async def served_cert(port: int, *, sni: str = "localhost") -> bytes:
    """The DER certificate a fresh handshake gets."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=sni)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    await writer.wait_closed()
    assert der is not None
    return bytes(der)


def der(bundle: CertBundle) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_certificate(bundle.cert).public_bytes(Encoding.DER)


async def serve_files(directory: Path) -> Server:
    """The injector on `directory`/tls.crt and tls.key (no self-signed)."""
    server, _ = await start_server(
        directory, self_signed=False, tls_cert=directory / "tls.crt", tls_key=directory / "tls.key"
    )
    return server


@pytest.fixture
def pairs() -> tuple[CertBundle, CertBundle]:
    return (
        issue_certificates(dns_names=["localhost"], ip_addresses=["127.0.0.1"]),
        issue_certificates(dns_names=["localhost"], ip_addresses=["127.0.0.1"], days=10),
    )


async def test_rotation_is_served_without_restart_and_a_half_written_one_is_refused(
    tmp_path: Path, pairs: tuple[CertBundle, CertBundle]
) -> None:
    old, new = pairs
    write_pair(tmp_path, old)
    server = await serve_files(tmp_path)
    metrics = server.injector.metrics
    try:
        assert await served_cert(server.port) == der(old)
        assert await served_cert(server.port, sni="") == der(old)  # no SNI: same context

        write_pair(tmp_path, new, key=False)  # cert rotated, key not yet: out of step
        await wait_until(
            lambda: metrics.registry.get_sample_value(
                "mesher_injector_tls_reloads_total", {"result": "rejected"}
            )
        )
        assert await served_cert(server.port) == der(old)

        write_pair(tmp_path, new, cert=False)  # the key arrives: consistent again
        await wait_until(
            lambda: metrics.registry.get_sample_value(
                "mesher_injector_tls_reloads_total", {"result": "applied"}
            )
        )
        assert await served_cert(server.port) == der(new)
        assert await served_cert(server.port, sni="") == der(new)
        expiry = metrics.registry.get_sample_value(
            "mesher_injector_tls_cert_expiry_timestamp_seconds"
        )
        assert expiry == x509.load_pem_x509_certificate(new.cert).not_valid_after_utc.timestamp()
    finally:
        await server.stop()


async def test_mounted_secret_symlink_swap_is_a_rotation(
    tmp_path: Path, pairs: tuple[CertBundle, CertBundle]
) -> None:
    old, new = pairs
    # The kubelet's layout: files are links through ..data to a timestamped folder.
    for name, bundle in (("v1", old), ("v2", new)):
        (tmp_path / name).mkdir()
        write_pair(tmp_path / name, bundle)
    (tmp_path / "..data").symlink_to("v1")
    for file in ("tls.crt", "tls.key"):
        (tmp_path / file).symlink_to(f"..data/{file}")
    server = await serve_files(tmp_path)
    try:
        assert await served_cert(server.port) == der(old)
        (tmp_path / "..data_tmp").symlink_to("v2")
        (tmp_path / "..data_tmp").rename(tmp_path / "..data")  # atomic swap, as the kubelet does
        await wait_until(
            lambda: server.injector.metrics.registry.get_sample_value(
                "mesher_injector_tls_reloads_total", {"result": "applied"}
            )
        )
        assert await served_cert(server.port) == der(new)
    finally:
        await server.stop()


def tls11_client() -> ssl.SSLContext:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client really offer TLS 1.1
    return ctx


async def test_tls_below_1_2_is_refused(running_tls_port: int, tmp_path: Path) -> None:
    # Control: the same client does complete a TLS 1.1 handshake with a server allowing it.
    bundle = issue_certificates(dns_names=["localhost"])
    write_pair(tmp_path, bundle)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        permissive.minimum_version = ssl.TLSVersion.TLSv1
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    permissive.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    control = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0, ssl=permissive)
    port = control.sockets[0].getsockname()[1]
    _reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=tls11_client(), server_hostname="localhost"
    )
    assert writer.get_extra_info("ssl_object").version() == "TLSv1.1"
    writer.close()
    control.close()
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.open_connection(
            "127.0.0.1", running_tls_port, ssl=tls11_client(), server_hostname="localhost"
        )


@pytest.fixture
async def running_tls_port(tmp_path: Path) -> object:
    server, _ = await start_server(tmp_path)
    yield server.port
    await server.stop()


def rejected_count(server: Server) -> float:
    return (
        server.injector.metrics.registry.get_sample_value(
            "mesher_injector_tls_reloads_total", {"result": "rejected"}
        )
        or 0.0
    )


async def test_an_expired_certificate_is_refused_once_and_the_old_one_kept(
    tmp_path: Path, pairs: tuple[CertBundle, CertBundle]
) -> None:
    good, _ = pairs
    expired = issue_certificates(
        dns_names=["localhost"],
        days=1,
        start=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=3),
    )
    write_pair(tmp_path, good)
    server = await serve_files(tmp_path)
    try:
        write_pair(tmp_path, expired)
        await wait_until(lambda: rejected_count(server) == 1)
        await asyncio.sleep(0.3)  # many more checks of the same files (every 0.02 s here)
        assert rejected_count(server) == 1  # reported once, not at every check
        assert await served_cert(server.port) == der(good)
    finally:
        await server.stop()


def test_a_mismatched_pair_is_reported_once_until_the_files_change(
    tmp_path: Path, pairs: tuple[CertBundle, CertBundle]
) -> None:
    old, new = pairs
    write_pair(tmp_path, old)
    tls = ReloadingTls(tmp_path / "tls.crt", tmp_path / "tls.key")
    write_pair(tmp_path, new, key=False)
    first = tls.check()
    assert not first.changed
    assert "refused, old one kept" in first.error
    assert [tls.check().error for _ in range(5)] == [""] * 5
    write_pair(tmp_path, new, cert=False)
    assert tls.check().changed
    assert (
        tls.serving.not_after
        == x509.load_pem_x509_certificate(new.cert).not_valid_after_utc.timestamp()
    )


def test_a_not_yet_valid_certificate_is_taken_once_it_becomes_valid(tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    write_pair(tmp_path, issue_certificates(dns_names=["localhost"]))
    clock = [now.timestamp()]
    tls = ReloadingTls(tmp_path / "tls.crt", tmp_path / "tls.key", clock=lambda: clock[0])
    future = issue_certificates(dns_names=["localhost"], start=now + datetime.timedelta(hours=1))
    write_pair(tmp_path, future)
    refused = tls.check()
    assert "not valid before" in refused.error
    assert tls.check().error == ""  # reported once
    clock[0] += 2 * 3600
    assert tls.check().changed


def test_serve_refuses_to_start_on_an_expired_certificate(tmp_path: Path) -> None:
    expired = issue_certificates(
        dns_names=["localhost"],
        days=1,
        start=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=3),
    )
    write_pair(tmp_path, expired)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "injector",
            "serve",
            "--tls-cert",
            str(tmp_path / "tls.crt"),
            "--tls-key",
            str(tmp_path / "tls.key"),
            "--port",
            "0",
            "--admin-port",
            "0",
            "--host",
            "127.0.0.1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "the certificate expired at" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_self_signed_pair_is_kept_only_while_it_covers_the_names_and_a_week(
    tmp_path: Path,
) -> None:
    now = datetime.datetime.now(datetime.UTC).timestamp()
    first = write_self_signed(tmp_path, now=now, dns_names=["localhost"], ip_addresses=["::1"])
    assert not first.reused
    ca = first.ca.read_bytes()
    again = write_self_signed(tmp_path, now=now, dns_names=["localhost"], ip_addresses=["::1"])
    assert again.reused
    assert again.ca.read_bytes() == ca
    other = write_self_signed(tmp_path, now=now, dns_names=["other"], ip_addresses=[])
    assert not other.reused  # another name: a new pair
    other_ca = other.ca.read_bytes()
    assert other_ca != ca
    expiring = now + 365 * 86400 - SELF_SIGNED_REUSE_S / 2  # less than a week left by then
    later = write_self_signed(tmp_path, now=expiring, dns_names=["other"], ip_addresses=[])
    assert not later.reused
    assert later.ca.read_bytes() != other_ca
