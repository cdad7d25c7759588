"""Tier services behind TLS and mutual TLS, with certificates made in the test."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import numpy as np
import pytest

from tierflow.errors import ServiceError
from tierflow.runtime.client import connect
from tierflow.runtime.executor import IOSpec
from tierflow.runtime.route import Route
from tierflow.runtime.security import TlsFiles
from tierflow.runtime.server import TierServer
from tierflow.runtime.service import TierService

x509 = pytest.importorskip(
    "cryptography.x509", reason="the `cryptography` package makes the test certificates"
)
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402


def _issue(
    directory: Path, name: str, issuer: tuple[object, object] | None
) -> tuple[object, object]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    signer_cert, signer_key = issuer if issuer is not None else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if signer_cert is None else signer_cert.subject)  # type: ignore[attr-defined]
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(signer_key, hashes.SHA256())  # type: ignore[arg-type]
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


class Double:
    inputs = (IOSpec("x", (-1,), "float32"),)
    outputs = (IOSpec("y", (-1,), "float32"),)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": inputs["x"] * 2}


def test_mutual_tls_serves_clients_with_a_certificate_and_refuses_others(tmp_path: Path) -> None:
    ca = _issue(tmp_path, "ca", None)
    _issue(tmp_path, "server", ca)
    _issue(tmp_path, "client", ca)
    server_tls = TlsFiles(tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem")
    client_tls = TlsFiles(tmp_path / "client.pem", tmp_path / "client.key", tmp_path / "ca.pem")
    x = np.arange(3, dtype=np.float32)

    service = TierService("m", [Double()], route=Route("cloud"))
    with TierServer(service, tls=server_tls) as server:
        with connect(server.address, tls=client_tls) as client:
            np.testing.assert_allclose(client.infer(x).output, 2 * x)
        with pytest.raises(ServiceError) as caught:
            connect(server.address, tls=TlsFiles(ca_path=tmp_path / "ca.pem"), timeout_s=2)

    assert caught.value.status == "UNAVAILABLE"
