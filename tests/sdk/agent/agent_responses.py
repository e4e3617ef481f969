"""What the agent tests build: a self-signed certificate, and an AttestResponse whose SVID
certifies a given device key (fields cleared or changed on request)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sdk.v1 import attestation_pb2 as pb


def certificate(subject: str = "device") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    return cert, key


def attest_response(key: ec.EllipticCurvePrivateKey, **changes: Any) -> pb.AttestResponse:
    cert, _ = certificate("leaf")
    leaf = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    )
    response = pb.AttestResponse(
        spiffe_id="spiffe://docket.test/device/ab",
        svid_pem=leaf.public_bytes(serialization.Encoding.PEM).decode(),
        bundle_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        jwt="eyJ.eyJ.sig",
        posture=pb.Posture(attested=True, device_class="dev"),
        audit_index=3,
    )
    response.svid_expires_at.FromDatetime(datetime(2026, 1, 1, tzinfo=UTC))
    response.jwt_expires_at.FromDatetime(datetime(2026, 1, 1, tzinfo=UTC))
    for name, value in changes.items():
        if value is None:
            response.ClearField(name)  # type: ignore[arg-type]  # a field name from the test table
        else:
            setattr(response, name, value)
    return response
