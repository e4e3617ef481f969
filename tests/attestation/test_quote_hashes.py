"""The quote hash policy (issue 14, finding 12) on synthetic evidence: a quote signed with a
hash the appraisal does not accept, or covering a PCR bank in one, is refused naming the
algorithm; SHA-1 is not accepted by default and is when the policy lists it."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import replace
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from attestation._errors import EvidenceError
from attestation._verifier import (
    DEFAULT_QUOTE_HASHES,
    PendingChallenge,
    TrustRoots,
    UnverifiedEnrollment,
    begin_enrollment,
    finish_attestation,
)
from engine._errors import TrustConfigError
from engine._service.attest import quote_hash_algorithms
from tests.attestation.test_verifier import (
    ATTRS_AK,
    GOLDEN,
    NOW,
    PCRS,
    SHA256,
    World,
    activate,
    ak_name,
    certificate,
    ecc_ak_public,
    rsa_ek_public,
    tpm2b,
)

SHA1 = 0x0004
SHA384 = 0x000C


def ak_public(key: ec.EllipticCurvePrivateKey, scheme_hash: int) -> bytes:
    """An ECC P-256 restricted signing AK whose ECDSA scheme uses `scheme_hash`."""
    numbers = key.public_key().public_numbers()
    body = (
        struct.pack(">HHI", 0x0023, SHA256, ATTRS_AK)
        + tpm2b(b"")
        + struct.pack(">HHHHH", 0x0010, 0x0018, scheme_hash, 0x0003, 0x0010)
        + tpm2b(numbers.x.to_bytes(32, "big"))
        + tpm2b(numbers.y.to_bytes(32, "big"))
    )
    return tpm2b(body)


@pytest.fixture(scope="module")
def world() -> World:
    """A trusted EK (its certificate under a root) on which each test makes its own AK."""
    ek = rsa.generate_private_key(65537, 2048)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = certificate("EK Root", root_key.public_key(), "EK Root", root_key, ca=True)
    ek_cert = certificate("", ek.public_key(), "EK Root", root_key, ca=False)
    ak = ec.generate_private_key(ec.SECP256R1())
    enrollment = UnverifiedEnrollment(
        rsa_ek_public(ek), ek_cert.public_bytes(Encoding.DER), ecc_ak_public(ak)
    )
    return World(ek, ak, root, root_key, enrollment, TrustRoots([root]))


HASHES = {SHA1: (hashes.SHA1, hashlib.sha1), SHA256: (hashes.SHA256, hashlib.sha256)}


def quote(
    nonce: bytes, *, sign_hash: int, bank: int = SHA256
) -> tuple[bytes, dict[tuple[int, int], bytes]]:
    """A TPMS_ATTEST over PCRs 0-7 of `bank`, its digest made with `sign_hash`."""
    size = 20 if bank == SHA1 else 32
    values = {(bank, i): GOLDEN[i][:size] for i in PCRS}
    digest = HASHES[sign_hash][1](b"".join(values[(bank, i)] for i in PCRS)).digest()
    body = (
        struct.pack(">IH", 0xFF544347, 0x8018)
        + tpm2b(b"\x00\x0b" + bytes(32))
        + tpm2b(nonce)
        + struct.pack(">QIIB", 1000, 5, 0, 1)
        + struct.pack(">Q", 0x2000_0001)
        + struct.pack(">IHB", 1, bank, 3)
        + bytes([0xFF, 0, 0])
        + tpm2b(digest)
    )
    return body, values


def sign(key: ec.EllipticCurvePrivateKey, message: bytes, sign_hash: int) -> bytes:
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(HASHES[sign_hash][0]())))
    return (
        struct.pack(">HH", 0x0018, sign_hash)
        + tpm2b(r.to_bytes(32, "big"))
        + tpm2b(s.to_bytes(32, "big"))
    )


def enroll(
    world: World, scheme_hash: int
) -> tuple[ec.EllipticCurvePrivateKey, PendingChallenge, bytes]:
    ak = ec.generate_private_key(ec.SECP256R1())
    enrollment: UnverifiedEnrollment = replace(
        world.enrollment, ak_public=ak_public(ak, scheme_hash)
    )
    challenge, pending = begin_enrollment(enrollment, world.roots, now=NOW)
    secret = activate(world.ek, ak_name(enrollment.ak_public), challenge.credential)
    return ak, pending, secret


def run(
    world: World, *, scheme_hash: int, sign_hash: int, bank: int = SHA256, **policy: frozenset[int]
) -> object:
    ak, pending, secret = enroll(world, scheme_hash)
    attest, values = quote(pending.nonce, sign_hash=sign_hash, bank=bank)
    return finish_attestation(
        pending,
        activated_secret=secret,
        quote=attest,
        signature=sign(ak, attest, sign_hash),
        pcr_values=values,
        now=NOW + timedelta(seconds=5),
        **policy,
    )


def test_sha1_signed_quote_is_refused_by_default(world: World) -> None:
    assert SHA1 not in DEFAULT_QUOTE_HASHES
    with pytest.raises(
        EvidenceError, match=r"^quote signed with sha1, which this appraisal does not accept$"
    ):
        run(world, scheme_hash=SHA1, sign_hash=SHA1)


def test_sha1_signed_quote_is_accepted_when_the_policy_lists_sha1(world: World) -> None:
    verified = run(
        world, scheme_hash=SHA1, sign_hash=SHA1, accepted_hashes=frozenset({SHA1, SHA256})
    )
    assert verified is not None


def test_sha256_quote_is_refused_when_the_policy_lists_only_sha384(world: World) -> None:
    with pytest.raises(EvidenceError, match="quote signed with sha256, which this"):
        run(world, scheme_hash=SHA256, sign_hash=SHA256, accepted_hashes=frozenset({SHA384}))


def test_quote_of_a_sha1_bank_is_refused_by_default(world: World) -> None:
    with pytest.raises(EvidenceError, match="PCR bank sha1, which this appraisal does not accept"):
        run(world, scheme_hash=SHA256, sign_hash=SHA256, bank=SHA1)


def test_quote_of_a_sha1_bank_is_accepted_when_the_policy_lists_sha1(world: World) -> None:
    policy = frozenset({SHA1, SHA256})
    assert run(world, scheme_hash=SHA256, sign_hash=SHA256, bank=SHA1, accepted_hashes=policy)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["sha256", "sha384", "sha512"], DEFAULT_QUOTE_HASHES),
        (["sha1"], frozenset({SHA1})),
        (["sha256", "sha256"], frozenset({SHA256})),
    ],
    ids=["default", "sha1", "duplicate"],
)
def test_quote_hash_names(names: list[str], expected: frozenset[int]) -> None:
    assert quote_hash_algorithms(names) == expected


@pytest.mark.parametrize(("names", "message"), [([], "none given"), (["md5"], "'md5' is not")])
def test_unusable_quote_hash_names(names: list[str], message: str) -> None:
    with pytest.raises(TrustConfigError, match=message):
        quote_hash_algorithms(names)
