"""TLS to the fleet, as the README tells a plant to connect: the test's own PostgreSQL runs with ``ssl = on`` and a
server certificate the test made (its own CA), refuses connections without TLS (``hostnossl … reject``), and the
station registers and forwards through ``sslmode=verify-full`` with the CA file in the ``[fleet] dsn`` — nothing
else to configure. A wrong CA, or a host name the certificate does not name, is refused before any byte of the
record leaves the station."""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from station.audit import AuditLog
from station.config import load_config
from station.fleet.cluster import ADMIN_USER, PrivateCluster, ensure_os_user
from station.fleet.connection import FleetError, FleetUnavailable, connect
from station.fleet.forwarder import Forwarder
from station.fleet.schema import write_pgpass
from station.home import StationHome
from station.pki import CertificateAuthority
from tests.helpers.fleet import PASSPHRASE, provision_synthetic

pytestmark = pytest.mark.integration

DATABASE = "fleet_tls"


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    dns: str | None = None,
) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _make_ca(directory: Path, name: str) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(name, key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key, ca=True)
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, key, cert


@pytest.fixture
def tls_server() -> Iterator[tuple[PrivateCluster, Path, Path]]:
    """(cluster, the plant CA's file, a directory for the test's files); the cluster stopped and removed after."""
    ensure_os_user()
    directory = Path(tempfile.mkdtemp(prefix="welma-fleet-tls-", dir="/tmp"))
    directory.chmod(0o711)
    try:
        ca_file, ca_key, ca_cert = _make_ca(directory, "plant-ca")
        cluster = PrivateCluster.create(directory / "cluster")
        server_key = ec.generate_private_key(ec.SECP256R1())
        server_cert = _certificate(
            "localhost", server_key, ca_cert.subject, ca_key, ca=False, dns="localhost"
        )
        (cluster.data_dir / "server.crt").write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
        (cluster.data_dir / "server.key").write_bytes(
            server_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        (cluster.data_dir / "server.key").chmod(0o600)
        for name in ("server.crt", "server.key"):
            cluster._own(cluster.data_dir / name)
        with (cluster.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
        hba = cluster.data_dir / "pg_hba.conf"
        hba.write_text(
            "hostnossl all all 0.0.0.0/0 reject\nhostnossl all all ::/0 reject\n" + hba.read_text()
        )
        cluster.start()
        try:
            admin_pgpass = directory / "admin.pgpass"
            write_pgpass(
                admin_pgpass,
                host="localhost",
                port=cluster.port,
                database="*",
                role=ADMIN_USER,
                password=cluster.admin_password,
            )
            with connect(
                f"postgresql://{ADMIN_USER}@localhost:{cluster.port}/postgres?sslmode=verify-full"
                f"&sslrootcert={ca_file}",
                passfile=admin_pgpass,
            ) as conn:
                conn.execute(f"CREATE DATABASE {DATABASE}")
            yield cluster, ca_file, directory
        finally:
            cluster.stop(mode="immediate")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_a_station_registers_and_forwards_over_verify_full_tls_and_refuses_a_wrong_ca_or_host(
    tmp_path, tls_server
):
    from station.cli.fleet import register_here

    cluster, ca_file, directory = tls_server
    admin_pgpass = directory / "admin.pgpass"
    admin_dsn = (
        f"postgresql://{ADMIN_USER}@localhost:{cluster.port}/{DATABASE}?sslmode=verify-full"
        f"&sslrootcert={ca_file}"
    )
    home = StationHome(tmp_path / "st-tls").create()
    CertificateAuthority.init(home.ca_dir, passphrase=PASSPHRASE.encode())
    home.config_file.write_text('[station]\nname = "st-tls"\n')
    with contextlib.redirect_stdout(io.StringIO()):
        register_here(
            home,
            admin_dsn=admin_dsn,
            admin_passfile=admin_pgpass,
            station_name="st-tls",
            line="L1",
            offline=None,
            replace=False,
        )
    fleet = load_config(home.config_file).fleet
    assert fleet is not None
    # The station's own DSN keeps verify-full and the CA file; no password in it.
    assert (
        "sslmode=verify-full" in fleet.dsn
        and f"sslrootcert={ca_file}" in fleet.dsn
        and ":" not in fleet.dsn.split("@")[0].split("//")[1]
    )

    with AuditLog(home.audit_db) as audit:
        provision_synthetic(audit, "202600000007000", station="st-tls")
        sent = 0
        while count := Forwarder(fleet, audit).send_once():
            sent += count
        assert sent > 0 and audit.fleet_backlog()[2] == 0

    with connect(fleet.dsn, passfile=fleet.passfile) as conn:
        ssl, version = conn.execute(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone()
        units = conn.execute("SELECT count(*) FROM fleet_units WHERE station = 'st-tls'").fetchone()[0]
    assert ssl is True and version.startswith("TLSv1.") and units == 1

    # The same server without TLS: refused by its pg_hba (so the success above was over TLS).
    plain = fleet.dsn.replace("sslmode=verify-full", "sslmode=disable")
    with pytest.raises((FleetError, FleetUnavailable), match="no pg_hba.conf entry|reject"):
        connect(plain, passfile=fleet.passfile).close()
    # A CA that did not sign the server's certificate: refused before authenticating.
    other_ca, _key, _cert = _make_ca(directory, "someone-else")
    with pytest.raises(FleetUnavailable, match="certificate verify failed"):
        connect(fleet.dsn.replace(str(ca_file), str(other_ca)), passfile=fleet.passfile).close()
    # The right CA but a host name the certificate does not name (verify-full checks it).
    by_address = fleet.dsn.replace("@localhost:", "@127.0.0.1:")
    with pytest.raises(FleetUnavailable, match="does not match host name"):
        connect(by_address, passfile=fleet.passfile).close()
