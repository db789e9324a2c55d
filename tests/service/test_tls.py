"""TLS on both protocols when the server is given a certificate."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from braid.common.errors import BraidError
from braid.service.client import BraidClient
from braid.service.server import ServerConfig
from tests.service.conftest import ServerThread, make_core


def self_signed(folder):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_grpc_and_https_with_a_certificate(service_data, tmp_path):
    cert, key = self_signed(tmp_path)
    config = ServerConfig(grpc_port=0, http_port=0, tls_cert=cert, tls_key=key, grace_s=5)
    running = ServerThread(make_core(service_data), config)
    try:
        assert running.http.startswith("https://")
        with BraidClient(running.grpc, tls_ca=cert, server_name="localhost") as client:
            assert client.search("cat fish", k=1).hits[0].doc_id == "d2"
        # A plaintext client cannot talk to a TLS port.
        with BraidClient(running.grpc) as plaintext, pytest.raises(grpc.RpcError):
            plaintext.search("cat", timeout=5)
        context = ssl.create_default_context(cafile=str(cert))
        response = httpx.post(f"{running.http}/v1/search", json={"query": "cat fish", "k": 1}, verify=context)
        assert response.json()["hits"][0]["doc_id"] == "d2"
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{running.http}/healthz")  # not trusted without the CA
    finally:
        running.stop()


def test_half_a_tls_configuration_is_refused(tmp_path):
    cert, _ = self_signed(tmp_path)
    with pytest.raises(BraidError, match="both --tls-cert and --tls-key"):
        ServerConfig(tls_cert=cert)
    with pytest.raises(BraidError, match="between 0 and 65535"):
        ServerConfig(grpc_port=70000)
