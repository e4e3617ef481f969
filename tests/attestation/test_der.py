"""Vendor EK certificates that are not strict DER (issue 14, finding 11).

The real vendor certificates of fixtures/ek-roots/ (from Keylime, see its README) all load;
the seven Nuvoton ones only through the canonical re-encoding, and their self-signatures
verify over the ORIGINAL bytes only. A synthetic Nuvoton-style chain (multi-valued names
written unsorted, in the root, the EK certificate's issuer and its subjectAltName) enrolls,
and one changed byte in it is refused.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from attestation._der import (
    _children,
    _encode,
    canonical_der,
    load_certificate,
    load_pem_certificates,
    verify_signed_by,
)
from attestation._errors import AttestationError, EvidenceError, ParseError
from attestation._verifier import (
    TrustRoots,
    UnverifiedEnrollment,
    begin_enrollment,
    check_ek_root,
)
from tests.attestation.test_verifier import (
    NOW,
    TPM_MANUFACTURER,
    TPM_MODEL,
    TPM_VERSION,
    ecc_ak_public,
    rsa_ek_public,
)

FIXTURES = Path(__file__).parent / "fixtures" / "ek-roots"
NUVOTON = ("NTC1", "NTC2", "NUVO_0100", "NUVO_1110", "NUVO_1111", "NUVO_2110", "NUVO_2111")
CHAINS = [
    ("INF_RSA_010I", "INF_RSA_010RT"),
    ("INF_ECC_010I", "INF_ECC_010RT"),
    ("STM_RSA_01I", "STM_RSA_RT"),
    ("STM_ECC_01I", "STM_ECC_01RT"),
    ("INTEL_I", "INTEL_RT"),
]


def pem(name: str) -> bytes:
    return (FIXTURES / f"{name}.pem").read_bytes()


def all_fixtures() -> list[str]:
    return sorted(p.stem for p in FIXTURES.glob("*.pem"))


# --- the real vendor certificates ----------------------------------------------------------


@pytest.mark.parametrize("name", NUVOTON)
def test_nuvoton_root_is_refused_by_the_strict_parser(name: str) -> None:
    with pytest.raises(ValueError, match="InvalidSetOrdering"):
        x509.load_pem_x509_certificates(pem(name))


@pytest.mark.parametrize("name", all_fixtures())
def test_every_vendor_certificate_loads(name: str) -> None:
    [loaded] = load_pem_certificates(pem(name), name)
    assert loaded.reencoded == (name in NUVOTON)
    assert "Nuvoton" in loaded.certificate.subject.rfc4514_string() or name not in NUVOTON
    if name.endswith("RT") or name in NUVOTON:
        check_ek_root(loaded)  # a CA, its self-signature verifies over the original bytes


@pytest.mark.parametrize("name", NUVOTON)
def test_nuvoton_self_signature_is_over_the_original_bytes(name: str) -> None:
    [loaded] = load_pem_certificates(pem(name), name)
    cert = loaded.certificate
    assert cert.tbs_certificate_bytes != loaded.tbs  # the re-encoded bytes differ…
    verify_signed_by(loaded, cert.public_key())  # …the signature is over the original
    with pytest.raises(EvidenceError, match="does not verify"):
        verify_signed_by(replace(loaded, tbs=cert.tbs_certificate_bytes), cert.public_key())


@pytest.mark.parametrize(("child", "root"), CHAINS, ids=[c for c, _ in CHAINS])
def test_vendor_intermediates_verify_under_their_roots(child: str, root: str) -> None:
    [intermediate] = load_pem_certificates(pem(child))
    [anchor] = load_pem_certificates(pem(root))
    assert intermediate.certificate.issuer == anchor.certificate.subject
    verify_signed_by(intermediate, anchor.certificate.public_key())
    [other] = load_pem_certificates(pem("NUVO_0100"))
    with pytest.raises(EvidenceError):
        verify_signed_by(intermediate, other.certificate.public_key())


def test_a_self_signed_root_with_a_broken_signature_is_not_a_root() -> None:
    [loaded] = load_pem_certificates(pem("NUVO_2110"))
    signed = bytearray(loaded.tbs)
    signed[-5] ^= 1
    with pytest.raises(EvidenceError, match="self-signature"):
        check_ek_root(replace(loaded, tbs=bytes(signed)))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no PEM CERTIFICATE block"),
        (b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n", "bad base64"),
        (b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n", "not a DER"),
    ],
    ids=["empty", "base64", "empty-sequence"],
)
def test_unusable_pem_is_a_parse_error(data: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        load_pem_certificates(data)


@pytest.mark.parametrize(
    ("der", "message"),
    [
        (b"\x30\x80\x00\x00", "indefinite length"),
        (b"\x30\x05\x02\x01", "past the end"),
        (b"\x30\x00\x00", "truncated"),
        (b"\x30\x00\x05\x00", "exactly one element"),
    ],
    ids=["indefinite", "truncated", "trailing-byte", "two-elements"],
)
def test_non_der_other_than_set_order_is_refused(der: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        canonical_der(der)


def test_deep_nesting_is_refused() -> None:
    der = b"\x05\x00"
    for _ in range(40):
        der = _encode(0x30, der)
    with pytest.raises(ParseError, match="deeper"):
        canonical_der(der)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_parse_error(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        load_certificate(data)


@given(st.lists(st.binary(max_size=5), min_size=1, max_size=6))
def test_canonical_der_sorts_sets_and_is_idempotent(values: list[bytes]) -> None:
    members = [_encode(0x04, v) for v in values]
    unsorted = _encode(0x31, b"".join(members))
    canonical = canonical_der(unsorted)
    assert canonical == _encode(0x31, b"".join(sorted(members)))
    assert canonical_der(canonical) == canonical


# --- a Nuvoton-style chain, end to end -----------------------------------------------------


def _unsort(tag: int, content: bytes) -> bytes:
    """Re-encode with every multi-member SET reversed, extension values included: the
    order Nuvoton writes, which is not DER."""
    if tag == 0x04 and content[:1] == b"\x30":  # an extension value: DER inside
        try:
            [(inner_tag, inner)] = _children(content)
        except (ParseError, ValueError):
            return _encode(tag, content)
        return _encode(tag, _unsort(inner_tag, inner))
    if not tag & 0x20:
        return _encode(tag, content)
    members = [_unsort(t, c) for t, c in _children(content)]
    if tag == 0x31:
        members.reverse()
    return _encode(tag, b"".join(members))


ECDSA_WITH_SHA1 = _encode(0x30, _encode(0x06, bytes.fromhex("2a8648ce3d0401")))


def _nuvoton_style(
    cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, *, sha1: bool = False
) -> bytes:
    """`cert` with its names written unsorted, signed again by `key` over those bytes (with
    ECDSA-SHA1 when `sha1`)."""
    [(_, tbs)] = _children(cert.tbs_certificate_bytes)
    unsorted_tbs = _unsort(0x30, tbs)
    [(_, outer)] = _children(cert.public_bytes(Encoding.DER))
    algorithm = _encode(*_children(outer)[1])
    if sha1:
        [(_, fields)] = _children(unsorted_tbs)
        parts = [_encode(t, c) for t, c in _children(fields)]
        parts[2] = algorithm = ECDSA_WITH_SHA1  # version, serialNumber, signature, …
        unsorted_tbs = _encode(0x30, b"".join(parts))
    signature = key.sign(unsorted_tbs, ec.ECDSA(hashes.SHA1() if sha1 else hashes.SHA256()))
    return _encode(0x30, unsorted_tbs + algorithm + _encode(0x03, b"\x00" + signature))


def _multi(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name(
        [x509.RelativeDistinguishedName([x509.NameAttribute(o, v) for o, v in attributes])]
    )


@pytest.fixture(scope="module")
def nuvoton_chain() -> tuple[bytes, bytes, UnverifiedEnrollment]:
    root_key = ec.generate_private_key(ec.SECP256R1())
    subject = _multi(
        (NameOID.COMMON_NAME, "Test TPM Root CA 0100"),
        (NameOID.ORGANIZATION_NAME, "Test Technology Corporation"),
        (NameOID.COUNTRY_NAME, "TW"),
    )
    root = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(root_key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    ek = rsa.generate_private_key(65537, 2048)
    san = x509.SubjectAlternativeName(
        [
            x509.DirectoryName(
                _multi(
                    (TPM_MANUFACTURER, "id:4E544300"),
                    (TPM_MODEL, "NPCT75x"),
                    (TPM_VERSION, "id:00070002"),
                )
            )
        ]
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(subject)
        .public_key(ek.public_key())
        .serial_number(2)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(san, critical=True)
        .sign(root_key, hashes.SHA256())
    )
    root_der = _nuvoton_style(root, root_key)
    leaf_der = _nuvoton_style(leaf, root_key)
    ak = ec.generate_private_key(ec.SECP256R1())
    enrollment = UnverifiedEnrollment(rsa_ek_public(ek), leaf_der, ecc_ak_public(ak))
    return root_der, _nuvoton_style(leaf, root_key, sha1=True), enrollment


def test_nuvoton_style_chain_enrolls(
    nuvoton_chain: tuple[bytes, bytes, UnverifiedEnrollment],
) -> None:
    root_der, _, enrollment = nuvoton_chain
    leaf_der = enrollment.ek_certificate or b""
    for der in (root_der, leaf_der):  # what the real ones do to the strict parser
        with pytest.raises(ValueError, match="InvalidSetOrdering"):
            x509.load_der_x509_certificate(der).extensions  # noqa: B018
    root = load_certificate(root_der, "root")
    check_ek_root(root)
    _, pending = begin_enrollment(enrollment, TrustRoots([root.certificate]), now=NOW)
    assert pending.tpm_manufacturer == "NTC"  # read from the unsorted subjectAltName


def test_nuvoton_style_chain_signed_with_sha1_is_refused(
    nuvoton_chain: tuple[bytes, bytes, UnverifiedEnrollment],
) -> None:
    # The hand walk kept for re-encoded chains refuses SHA-1 as the library verifier does.
    root_der, sha1_leaf, enrollment = nuvoton_chain
    root = load_certificate(root_der, "root").certificate
    assert load_certificate(sha1_leaf).reencoded
    with pytest.raises(EvidenceError, match="signature algorithm is not SHA-256/384/512"):
        begin_enrollment(replace(enrollment, ek_certificate=sha1_leaf), TrustRoots([root]), now=NOW)


def test_nuvoton_style_chain_with_a_changed_byte_is_refused(
    nuvoton_chain: tuple[bytes, bytes, UnverifiedEnrollment],
) -> None:
    root_der, _, enrollment = nuvoton_chain
    leaf_der = enrollment.ek_certificate or b""
    root = load_certificate(root_der, "root").certificate
    # serial number 2 -> 3 (after the version, a0 03 02 01 02), inside the signed bytes
    serial_at = leaf_der.index(b"\x02\x01\x02", leaf_der.index(b"\xa0\x03\x02\x01\x02") + 5)
    forged = leaf_der[:serial_at] + b"\x02\x01\x03" + leaf_der[serial_at + 3 :]
    with pytest.raises(EvidenceError, match="EK not trusted"):
        begin_enrollment(replace(enrollment, ek_certificate=forged), TrustRoots([root]), now=NOW)


def test_random_bytes_as_an_ek_certificate_raise_the_package_error(
    nuvoton_chain: tuple[bytes, bytes, UnverifiedEnrollment],
) -> None:
    root_der, _, enrollment = nuvoton_chain
    root = load_certificate(root_der, "root").certificate
    with pytest.raises(AttestationError):
        begin_enrollment(
            replace(enrollment, ek_certificate=os.urandom(200)), TrustRoots([root]), now=NOW
        )
