"""The attestation verifier on synthetic evidence: an EK and AK made in Python, an EK CA and
certificate, a credential activated in Python and a TPMS_ATTEST signed by the AK key."""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import eventlogs
import pytest
from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from attestation._credential import kdfa
from attestation._der import _children, _encode
from attestation._errors import EvidenceError
from attestation._posture import Posture
from attestation._reference import ReferenceClass, ReferenceValues
from attestation._verifier import (
    Challenge,
    PendingChallenge,
    ToPersist,
    TrustRoots,
    UnverifiedEnrollment,
    VerifiedAttestation,
    appraise,
    begin_enrollment,
    ek_key_hash,
    finish_attestation,
    tpm_manufacturer,
    verify_answer,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SHA256 = 0x000B
ATTRS_EK = 0x000300B2
ATTRS_AK = 0x00050072  # fixedTPM fixedParent sensitiveDataOrigin userWithAuth restricted sign
RESTRICTED = 1 << 16
DECRYPT = 1 << 17
FIXED_TPM = 1 << 1
PCRS = list(range(8))
GOLDEN = {i: hashlib.sha256(bytes([i])).digest() for i in PCRS}


def tpm2b(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def rsa_ek_public(key: rsa.RSAPrivateKey) -> bytes:
    n = key.public_key().public_numbers().n.to_bytes(key.key_size // 8, "big")
    params = struct.pack(">HHH", 0x0006, 128, 0x0043) + struct.pack(">HHI", 0x0010, 2048, 0)
    return tpm2b(
        struct.pack(">HHI", 0x0001, SHA256, ATTRS_EK) + tpm2b(bytes(32)) + params + tpm2b(n)
    )


def ecc_ak_public(key: ec.EllipticCurvePrivateKey, attrs: int = ATTRS_AK) -> bytes:
    numbers = key.public_key().public_numbers()
    body = (
        struct.pack(">HHI", 0x0023, SHA256, attrs)
        + tpm2b(b"")
        + struct.pack(">HHHHH", 0x0010, 0x0018, SHA256, 0x0003, 0x0010)
        + tpm2b(numbers.x.to_bytes(32, "big"))
        + tpm2b(numbers.y.to_bytes(32, "big"))
    )
    return tpm2b(body)


def rsa_ak_public(bits: int) -> bytes:
    key = rsa.generate_private_key(65537, bits)
    n = key.public_key().public_numbers().n.to_bytes(bits // 8, "big")
    body = (
        struct.pack(">HHI", 0x0001, SHA256, ATTRS_AK)
        + tpm2b(b"")
        + struct.pack(">HHHHI", 0x0010, 0x0014, SHA256, bits, 0)
        + tpm2b(n)
    )
    return tpm2b(body)


def ak_name(ak_public: bytes) -> bytes:
    return struct.pack(">H", SHA256) + hashlib.sha256(ak_public[2:]).digest()


def sized(data: bytes, pos: int) -> tuple[bytes, int]:
    (n,) = struct.unpack_from(">H", data, pos)
    return data[pos + 2 : pos + 2 + n], pos + 2 + n


def activate(ek: rsa.RSAPrivateKey, name: bytes, credential_file: bytes) -> bytes:
    """TPM2_ActivateCredential for an RSA SHA-256 / AES-128-CFB EK (Part 1 §24)."""
    assert credential_file[:8] == bytes.fromhex("badcc0de00000001")
    id_object, pos = sized(credential_file, 8)
    encrypted_seed, _ = sized(credential_file, pos)
    oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), b"IDENTITY\x00")
    seed = ek.decrypt(encrypted_seed, oaep)
    integrity, pos = sized(id_object, 0)
    enc_identity = id_object[pos:]
    hmac_key = kdfa("sha256", seed, b"INTEGRITY", b"", b"", 256)
    assert hmac.compare_digest(integrity, hmac.digest(hmac_key, enc_identity + name, "sha256"))
    sym_key = kdfa("sha256", seed, b"STORAGE", name, b"", 128)
    decryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).decryptor()
    return sized(decryptor.update(enc_identity) + decryptor.finalize(), 0)[0]


def selection(pcrs: list[int]) -> bytes:
    bitmap = bytearray(3)
    for i in pcrs:
        bitmap[i // 8] |= 1 << (i % 8)
    return struct.pack(">IHB", 1, SHA256, 3) + bytes(bitmap)


def attest(
    nonce: bytes, digest: bytes, *, pcrs: list[int] = PCRS, clock: tuple[int, int] = (5, 1000)
) -> bytes:
    reset_count, clock_ms = clock
    return (
        struct.pack(">IH", 0xFF544347, 0x8018)
        + tpm2b(b"\x00\x0b" + bytes(32))
        + tpm2b(nonce)
        + struct.pack(">QIIB", clock_ms, reset_count, 0, 1)
        + struct.pack(">Q", 0x2000_0001)
        + selection(pcrs)
        + tpm2b(digest)
    )


def sign(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return (
        struct.pack(">HH", 0x0018, SHA256)
        + tpm2b(r.to_bytes(32, "big"))
        + tpm2b(s.to_bytes(32, "big"))
    )


def digest_of(values: dict[int, bytes], pcrs: list[int] = PCRS) -> bytes:
    return hashlib.sha256(b"".join(values[i] for i in sorted(pcrs))).digest()


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


TPM_MANUFACTURER = x509.ObjectIdentifier("2.23.133.2.1")
TPM_MODEL = x509.ObjectIdentifier("2.23.133.2.2")
TPM_VERSION = x509.ObjectIdentifier("2.23.133.2.3")


def tcg_san(manufacturer: str | None = "id:00001014") -> x509.SubjectAlternativeName:
    """A TCG EK certificate's subjectAltName: one directoryName with the TPM's
    manufacturer (tcg-at-tpmManufacturer), model and version, as swtpm_setup writes it."""
    attributes = [
        x509.NameAttribute(TPM_MODEL, "swtpm"),
        x509.NameAttribute(TPM_VERSION, "id:20191023"),
    ]
    if manufacturer is not None:
        attributes.insert(0, x509.NameAttribute(TPM_MANUFACTURER, manufacturer))
    return x509.SubjectAlternativeName(
        [x509.DirectoryName(x509.Name([x509.RelativeDistinguishedName(attributes)]))]
    )


def certificate(
    subject: str,
    public_key: Any,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    not_after: datetime = NOW + timedelta(days=365),
    san: x509.SubjectAlternativeName | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject) if ca else x509.Name([]))
        .issuer_name(name(issuer))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        # Like real EK certificates: an empty subject and a critical SAN with a directoryName.
        builder = builder.add_extension(tcg_san() if san is None else san, critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass(frozen=True)
class World:
    ek: rsa.RSAPrivateKey
    ak: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    enrollment: UnverifiedEnrollment
    roots: TrustRoots


@pytest.fixture(scope="module")
def world() -> World:
    ek = rsa.generate_private_key(65537, 2048)
    ak = ec.generate_private_key(ec.SECP256R1())
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = certificate("EK Root", root_key.public_key(), "EK Root", root_key, ca=True)
    ek_cert = certificate("", ek.public_key(), "EK Root", root_key, ca=False)
    enrollment = UnverifiedEnrollment(
        rsa_ek_public(ek), ek_cert.public_bytes(Encoding.DER), ecc_ak_public(ak)
    )
    return World(ek, ak, root, root_key, enrollment, TrustRoots([root]))


@dataclass(frozen=True)
class Answer:
    activated_secret: bytes
    quote: bytes
    signature: bytes
    pcr_values: dict[tuple[int, int], bytes]


def start(world: World) -> tuple[Challenge, PendingChallenge]:
    return begin_enrollment(world.enrollment, world.roots, now=NOW)


def answer(world: World, challenge: Challenge, *, nonce: bytes | None = None) -> Answer:
    secret = activate(world.ek, ak_name(world.enrollment.ak_public), challenge.credential)
    quote = attest(challenge.nonce if nonce is None else nonce, digest_of(GOLDEN))
    values = {(SHA256, i): v for i, v in GOLDEN.items()}
    return Answer(secret, quote, sign(world.ak, quote), values)


def finish(pending: PendingChallenge, a: Answer, **kwargs: Any) -> VerifiedAttestation:
    args: dict[str, Any] = {"now": NOW + timedelta(seconds=5), "required_pcrs": None}
    args.update(kwargs)
    return finish_attestation(
        pending,
        activated_secret=a.activated_secret,
        quote=a.quote,
        signature=a.signature,
        pcr_values=a.pcr_values,
        **args,
    )


REFERENCE = ReferenceClass.model_validate(
    {
        "class": "lab",
        "secure_boot": True,
        "measured_boot": True,
        "pcrs": {"sha256": {str(i): v.hex() for i, v in GOLDEN.items()}},
        "min_firmware": 0x2000_0000,
        "region": "eu",
    }
)


def reference(**changes: Any) -> ReferenceClass:
    """REFERENCE with fields replaced (validated again)."""
    return ReferenceClass.model_validate({**REFERENCE.model_dump(), **changes})


# --- happy path --------------------------------------------------------------------------


def test_happy_path_with_ek_certificate(world: World) -> None:
    challenge, pending = start(world)
    assert challenge.challenge_id == pending.challenge_id
    assert challenge.nonce == pending.nonce
    assert len(challenge.nonce) == 32
    assert challenge.expires_at == NOW + timedelta(seconds=60)
    verified = finish(
        pending, answer(world, challenge), required_pcrs={SHA256: frozenset({0, 7})},
        last_clock=(5, 999),
    )  # fmt: skip
    assert verified.ek_hash == ek_key_hash(world.enrollment.ek_public)
    assert verified.ak_name == ak_name(world.enrollment.ak_public)
    assert dict(verified.pcrs) == {(SHA256, i): v for i, v in GOLDEN.items()}
    assert verified.firmware_version == 0x2000_0001
    assert (verified.clock_info.reset_count, verified.clock_info.clock) == (5, 1000)
    assert pending.tpm_manufacturer == verified.tpm_manufacturer == "IBM"
    posture = appraise(verified, REFERENCE)
    assert posture == Posture(
        attested=True,
        device_class="lab",
        secure_boot=True,
        measured_boot_ok=True,
        firmware_version=0x2000_0001,
        tpm_manufacturer="IBM",
        ek_hash=verified.ek_hash,
        region="eu",
    )


def test_allow_list_without_certificate(world: World) -> None:
    enrollment = replace(world.enrollment, ek_certificate=None)
    roots = TrustRoots((), frozenset({ek_key_hash(enrollment.ek_public)}))
    challenge, pending = begin_enrollment(enrollment, roots, now=NOW)
    verified = finish(pending, answer(world, challenge))
    dev = ReferenceClass(
        name="dev",
        secure_boot=False,
        measured_boot=False,
        pcrs={"sha256": {0: GOLDEN[0].hex()}},
    )
    posture = appraise(verified, dev)
    assert posture.device_class == "dev"
    assert not posture.secure_boot
    assert not posture.measured_boot_ok
    assert posture.region is None
    assert posture.tpm_manufacturer == ""  # no certificate, no manufacturer


def test_secure_boot_comes_from_the_class_not_from_pcr7(world: World) -> None:
    challenge, pending = start(world)
    verified = finish(pending, answer(world, challenge))
    # PCR 7 is among the golden values, but the class does not say secure boot was on.
    posture = appraise(verified, reference(secure_boot=False, measured_boot=False))
    assert (posture.secure_boot, posture.measured_boot_ok) == (False, False)


def _ek_cert_with(world: World, san: x509.SubjectAlternativeName | None) -> x509.Certificate:
    return certificate("", world.ek.public_key(), "EK Root", world.root_key, ca=False, san=san)


@pytest.mark.parametrize(
    ("manufacturer", "expected"),
    [
        pytest.param("id:00001014", "IBM", id="ibm-swtpm"),
        pytest.param("id:494E5443", "INTC", id="intel"),
        pytest.param("id:49465800", "IFX", id="infineon"),
        pytest.param("id:4d534654", "MSFT", id="lowercase-hex"),
        pytest.param("id:12345678", "id:12345678", id="unknown-vendor-kept-raw"),
        pytest.param("Acme TPM", "Acme TPM", id="not-an-id-kept-raw"),
        pytest.param("bad\u0000value", "", id="not-printable-dropped"),
        pytest.param(None, "", id="no-manufacturer-attribute"),
    ],
)
def test_tpm_manufacturer_from_the_ek_certificate(
    world: World, manufacturer: str | None, expected: str
) -> None:
    cert = _ek_cert_with(world, tcg_san(manufacturer))
    assert tpm_manufacturer(cert) == expected
    enrollment = replace(world.enrollment, ek_certificate=cert.public_bytes(Encoding.DER))
    challenge, pending = begin_enrollment(enrollment, world.roots, now=NOW)
    assert pending.tpm_manufacturer == expected
    verified = finish(pending, answer(world, challenge))
    assert appraise(verified, REFERENCE).tpm_manufacturer == expected


def test_tpm_manufacturer_is_empty_without_a_directory_name(world: World) -> None:
    san = x509.SubjectAlternativeName([x509.DNSName("tpm.example")])
    assert tpm_manufacturer(_ek_cert_with(world, san)) == ""


def test_tpm_manufacturer_of_an_unverified_certificate_is_not_taken(world: World) -> None:
    # The certificate does not chain to the roots; the EK is trusted by the allow-list.
    other = ec.generate_private_key(ec.SECP256R1())
    cert = certificate("", world.ek.public_key(), "EK Root", other, ca=False)
    assert tpm_manufacturer(cert) == "IBM"
    enrollment = replace(world.enrollment, ek_certificate=cert.public_bytes(Encoding.DER))
    roots = TrustRoots([world.root], frozenset({ek_key_hash(enrollment.ek_public)}))
    _, pending = begin_enrollment(enrollment, roots, now=NOW)
    assert pending.tpm_manufacturer == ""


def test_challenges_are_fresh(world: World) -> None:
    (c1, p1), (c2, p2) = start(world), start(world)
    assert c1.nonce != c2.nonce
    assert p1.secret != p2.secret
    assert c1.challenge_id != c2.challenge_id


def test_secret_not_in_repr(world: World) -> None:
    _, pending = start(world)
    assert pending.secret.hex() not in repr(pending)
    assert "secret" not in repr(pending)


# --- enrollment refusals -----------------------------------------------------------------


def _other_root(world: World) -> UnverifiedEnrollment:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificate("", world.ek.public_key(), "EK Root", key, ca=False)
    return replace(world.enrollment, ek_certificate=cert.public_bytes(Encoding.DER))


def _cert_for_other_key(world: World) -> UnverifiedEnrollment:
    other = rsa.generate_private_key(65537, 2048).public_key()
    cert = certificate("", other, "EK Root", world.root_key, ca=False)
    return replace(world.enrollment, ek_certificate=cert.public_bytes(Encoding.DER))


def _expired_cert(world: World) -> UnverifiedEnrollment:
    cert = certificate(
        "", world.ek.public_key(), "EK Root", world.root_key, ca=False,
        not_after=NOW - timedelta(seconds=1),
    )  # fmt: skip
    return replace(world.enrollment, ek_certificate=cert.public_bytes(Encoding.DER))


def _root_not_ca(world: World) -> tuple[UnverifiedEnrollment, TrustRoots]:
    root = (
        x509.CertificateBuilder()
        .subject_name(name("EK Root"))
        .issuer_name(name("EK Root"))
        .public_key(world.root_key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(world.root_key, hashes.SHA256())
    )
    return world.enrollment, TrustRoots([root])


def _ak_attrs(attrs: int) -> Callable[[World], UnverifiedEnrollment]:
    def make(world: World) -> UnverifiedEnrollment:
        return replace(world.enrollment, ak_public=ecc_ak_public(world.ak, attrs))

    return make


ENROLL_REFUSALS: list[Any] = [
    pytest.param(_other_root, "EK not trusted", id="ek-cert-other-root"),
    pytest.param(_cert_for_other_key, "certificate's key is not the EK", id="ek-cert-key-differs"),
    pytest.param(_expired_cert, "EK not trusted", id="ek-cert-expired"),
    pytest.param(
        lambda w: replace(w.enrollment, ek_certificate=None), "EK not trusted", id="no-cert"
    ),
    pytest.param(_ak_attrs(ATTRS_AK & ~RESTRICTED), "restricted", id="ak-not-restricted"),
    pytest.param(_ak_attrs(ATTRS_AK | DECRYPT), "decrypt", id="ak-decrypt"),
    pytest.param(_ak_attrs(ATTRS_AK & ~FIXED_TPM), "fixedTPM", id="ak-not-fixed-tpm"),
    pytest.param(
        lambda w: replace(w.enrollment, ak_public=rsa_ak_public(1024)), "RSA 1024", id="ak-rsa-1024"
    ),
]


@pytest.mark.parametrize(("make", "message"), ENROLL_REFUSALS)
def test_enrollment_refused(
    world: World, make: Callable[[World], UnverifiedEnrollment], message: str
) -> None:
    with pytest.raises(EvidenceError, match=message):
        begin_enrollment(make(world), world.roots, now=NOW)


def test_root_without_basic_constraints_is_not_an_issuer(world: World) -> None:
    enrollment, roots = _root_not_ca(world)
    with pytest.raises(EvidenceError, match="EK not trusted"):
        begin_enrollment(enrollment, roots, now=NOW)


def test_naive_now_is_a_programming_error(world: World) -> None:
    with pytest.raises(ValueError, match="aware"):
        begin_enrollment(world.enrollment, world.roots, now=NOW.replace(tzinfo=None))


# --- answer refusals ---------------------------------------------------------------------


def _flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 1
    return bytes(out)


def _pcr_value_changed(w: World, a: Answer) -> Answer:
    values = dict(a.pcr_values)
    values[(SHA256, 3)] = bytes(32)
    return replace(a, pcr_values=values)


def _digest_mismatch(w: World, a: Answer) -> Answer:
    quote = a.quote[:-32] + bytes(32)
    return replace(a, quote=quote, signature=sign(w.ak, quote))


def _wrong_nonce(w: World, a: Answer) -> Answer:
    quote = attest(bytes(32), digest_of(GOLDEN))
    return replace(a, quote=quote, signature=sign(w.ak, quote))


def _signed_by_other_key(w: World, a: Answer) -> Answer:
    return replace(a, signature=sign(ec.generate_private_key(ec.SECP256R1()), a.quote))


ANSWER_REFUSALS: list[Any] = [
    pytest.param(_wrong_nonce, {}, "extraData is not the challenge nonce", id="wrong-nonce"),
    pytest.param(
        lambda w, a: replace(a, quote=_flip(a.quote, 40)), {}, "does not verify", id="tampered"
    ),
    pytest.param(_signed_by_other_key, {}, "does not verify", id="other-ak"),
    pytest.param(_pcr_value_changed, {}, "pcrDigest", id="pcr-value-differs"),
    pytest.param(_digest_mismatch, {}, "pcrDigest", id="pcr-digest-differs"),
    pytest.param(
        lambda w, a: replace(a, activated_secret=bytes(32)), {}, "activated secret", id="secret"
    ),
    pytest.param(
        lambda w, a: a, {"now": NOW + timedelta(seconds=61)}, "challenge expired", id="expired"
    ),
    pytest.param(lambda w, a: a, {"last_clock": (6, 0)}, "resetCount", id="reset-backwards"),
    pytest.param(lambda w, a: a, {"last_clock": (5, 1001)}, "clock went", id="clock-backwards"),
    pytest.param(
        lambda w, a: a,
        {"required_pcrs": {SHA256: frozenset({7, 8})}},
        "required PCRs sha256:8",
        id="selection-missing-required",
    ),
    pytest.param(
        lambda w, a: a,
        {"required_pcrs": {0x0004: frozenset({0})}},
        "required PCRs sha1:0",
        id="bank-missing",
    ),
]


@pytest.mark.parametrize(("tamper", "kwargs", "message"), ANSWER_REFUSALS)
def test_answer_refused(
    world: World,
    tamper: Callable[[World, Answer], Answer],
    kwargs: dict[str, Any],
    message: str,
) -> None:
    challenge, pending = start(world)
    with pytest.raises(EvidenceError, match=message):
        finish(pending, tamper(world, answer(world, challenge)), **kwargs)


def test_answer_to_another_challenge_is_refused(world: World) -> None:
    challenge, _ = start(world)
    _, other_pending = start(world)
    with pytest.raises(EvidenceError, match="activated secret"):
        finish(other_pending, answer(world, challenge))


def test_clock_at_last_value_is_accepted(world: World) -> None:
    challenge, pending = start(world)
    verified = finish(pending, answer(world, challenge), last_clock=(5, 1000))
    assert verified.clock_info.clock == 1000


# --- one pass: the stored values in, the posture and what to store out -------------------


def one_pass(pending: PendingChallenge, a: Answer, **kwargs: Any) -> Any:
    args: dict[str, Any] = {
        "now": NOW + timedelta(seconds=5),
        "reference": ReferenceValues(
            classes=(reference(name="other", min_firmware=2**63), REFERENCE)
        ),
        "last_clock": None,
    }
    args.update(kwargs)
    return verify_answer(
        pending,
        activated_secret=a.activated_secret,
        quote=a.quote,
        signature=a.signature,
        pcr_values=a.pcr_values,
        **args,
    )


def test_one_pass_gives_the_posture_and_what_to_store(world: World) -> None:
    challenge, pending = start(world)
    attested = one_pass(pending, answer(world, challenge), last_clock=(5, 999))
    assert attested.posture == appraise(finish(pending, answer(world, challenge)), REFERENCE)
    assert attested.posture.device_class == "lab"  # "other" wants a newer firmware
    assert attested.persist == ToPersist(
        pending.challenge_id, pending.ek_hash, NOW + timedelta(seconds=5), (5, 1000)
    )


def test_a_refused_answer_is_to_be_stored_as_its_challenge_used_and_no_clock(
    world: World,
) -> None:
    _, pending = start(world)
    assert ToPersist.refused(pending, NOW) == ToPersist(pending.challenge_id, pending.ek_hash, NOW)


ONE_PASS_REFUSALS = [
    pytest.param({"last_clock": (5, 1001)}, "clock went backwards", id="clock-rolled-back"),
    pytest.param({"last_clock": (6, 0)}, "resetCount went backwards", id="reset-rolled-back"),
    pytest.param({"now": NOW + timedelta(seconds=61)}, "challenge expired", id="expired"),
    pytest.param(
        {"reference": ReferenceValues()}, "no reference values are configured", id="no-classes"
    ),
    pytest.param(
        {"reference": ReferenceValues(classes=(reference(min_firmware=2**63),))},
        "matches no reference class: lab: firmware version",
        id="no-class-matches",
    ),
    pytest.param(
        {
            "reference": ReferenceValues(
                classes=(reference(pcrs={"sha256": {"7": "00" * 32, "9": "00" * 32}}),)
            )
        },
        "required PCRs sha256:9",
        id="required-pcr-not-quoted",
    ),
]


@pytest.mark.parametrize(("kwargs", "message"), ONE_PASS_REFUSALS)
def test_one_pass_refused(world: World, kwargs: dict[str, Any], message: str) -> None:
    challenge, pending = start(world)
    with pytest.raises(EvidenceError, match=message):
        one_pass(pending, answer(world, challenge), **kwargs)


# --- appraisal ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def verified(world: World) -> VerifiedAttestation:
    challenge, pending = start(world)
    return finish(pending, answer(world, challenge))


APPRAISAL_REFUSALS: list[Any] = [
    pytest.param(
        {"pcrs": {"sha256": {**REFERENCE.pcrs["sha256"], 7: "00" * 32}}},
        "PCR sha256:7 does not match its reference value",
        id="pcr7-differs",
    ),
    pytest.param(
        {"pcrs": {"sha256": {7: GOLDEN[7].hex(), 9: "00" * 32}}},
        "PCR sha256:9 has a reference value but was not quoted",
        id="not-quoted",
    ),
    pytest.param(
        {"pcrs": {**REFERENCE.pcrs, "sha1": {0: "00" * 20}}},
        "PCR sha1:0 has a reference value but was not quoted",
        id="bank-not-quoted",
    ),
    pytest.param(
        {"min_firmware": 0x3000_0000},
        "firmware version 0x20000001 is below the minimum 0x30000000",
        id="old-firmware",
    ),
]


@pytest.mark.parametrize(("changes", "message"), APPRAISAL_REFUSALS)
def test_appraisal_refused(
    verified: VerifiedAttestation, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(EvidenceError, match=message):
        appraise(verified, reference(**changes))


def test_firmware_at_the_minimum_is_accepted(verified: VerifiedAttestation) -> None:
    assert appraise(verified, reference(min_firmware=0x2000_0001)).firmware_version == 0x2000_0001


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"pcrs": {}}, id="empty"),
        pytest.param({"pcrs": {"md5": {0: "00" * 16}}}, id="bank"),
        pytest.param({"pcrs": {"sha256": {0: "00"}}}, id="length"),
        pytest.param({"class": ""}, id="no-class"),
        pytest.param({"pcrs": {"sha256": {0: "00" * 32}}}, id="secure-boot-without-pcr7"),
    ],
)
def test_a_malformed_reference_class_cannot_be_built(changes: dict[str, Any]) -> None:
    data = {**REFERENCE.model_dump(by_alias=True), **changes}
    with pytest.raises(ValidationError):
        ReferenceClass.model_validate(data)


def test_an_empty_class_built_without_validation_fails_closed(
    verified: VerifiedAttestation,
) -> None:
    hollow = ReferenceClass.model_construct(
        name="hollow", secure_boot=False, measured_boot=False, min_firmware=0, pcrs={}
    )
    with pytest.raises(EvidenceError, match="no golden PCR values"):
        appraise(verified, hollow)


def _via_intermediate(world: World, *, intermediate_is_ca: bool) -> UnverifiedEnrollment:
    key = ec.generate_private_key(ec.SECP256R1())
    intermediate = (
        x509.CertificateBuilder()
        .subject_name(name("EK Intermediate"))
        .issuer_name(name("EK Root"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=intermediate_is_ca, path_length=None), True)
        .sign(world.root_key, hashes.SHA256())
    )
    leaf = certificate("", world.ek.public_key(), "EK Intermediate", key, ca=False)
    return replace(
        world.enrollment,
        ek_certificate=leaf.public_bytes(Encoding.DER),
        ek_intermediates=(intermediate.public_bytes(Encoding.DER),),
    )


def test_chain_through_intermediate(world: World) -> None:
    enrollment = _via_intermediate(world, intermediate_is_ca=True)
    challenge, pending = begin_enrollment(enrollment, world.roots, now=NOW)
    assert finish(pending, answer(world, challenge)).ek_hash == pending.ek_hash


def test_intermediate_must_be_a_ca(world: World) -> None:
    enrollment = _via_intermediate(world, intermediate_is_ca=False)
    with pytest.raises(EvidenceError, match="EK not trusted"):
        begin_enrollment(enrollment, world.roots, now=NOW)


# --- EK chain policy: what the hand walker skipped (issue 17) -------------------------------

UNKNOWN_CRITICAL = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"")
TCG_KP_EK_CERTIFICATE = x509.ObjectIdentifier("2.23.133.8.1")


def _ca(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    path_length: int | None = None,
    extensions: tuple[tuple[x509.ExtensionType, bool], ...] = (),
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _ek_leaf(
    world: World,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *extensions: tuple[x509.ExtensionType, bool],
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(name(issuer))
        .public_key(world.ek.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(tcg_san(), critical=True)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _resigned_with_sha1(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bytes:
    """`cert` signed again with ECDSA-SHA1 (cryptography's builder no longer signs SHA-1)."""
    ecdsa_with_sha1 = _encode(0x30, _encode(0x06, bytes.fromhex("2a8648ce3d0401")))
    (tbs_fields,) = (c for t, c in _children(cert.tbs_certificate_bytes))
    fields = [_encode(t, c) for t, c in _children(tbs_fields)]
    fields[2] = ecdsa_with_sha1  # version, serialNumber, signature, issuer, ...
    tbs = _encode(0x30, b"".join(fields))
    signature = key.sign(tbs, ec.ECDSA(hashes.SHA1()))
    return _encode(0x30, tbs + ecdsa_with_sha1 + _encode(0x03, b"\x00" + signature))


def _chain(
    world: World, leaf: x509.Certificate | bytes, *intermediates: x509.Certificate
) -> UnverifiedEnrollment:
    der = leaf if isinstance(leaf, bytes) else leaf.public_bytes(Encoding.DER)
    return replace(
        world.enrollment,
        ek_certificate=der,
        ek_intermediates=tuple(c.public_bytes(Encoding.DER) for c in intermediates),
    )


def _path_length_violated(world: World) -> tuple[UnverifiedEnrollment, TrustRoots]:
    root_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = _ca("EK Root", root_key, "EK Root", root_key, path_length=0)
    intermediate = _ca("EK Intermediate", key, "EK Root", root_key)
    leaf = _ek_leaf(world, "EK Intermediate", key)
    return _chain(world, leaf, intermediate), TrustRoots([root])


def _critical_unknown_on_leaf(world: World) -> tuple[UnverifiedEnrollment, TrustRoots]:
    leaf = _ek_leaf(world, "EK Root", world.root_key, (UNKNOWN_CRITICAL, True))
    return _chain(world, leaf), world.roots


def _critical_unknown_on_intermediate(world: World) -> tuple[UnverifiedEnrollment, TrustRoots]:
    key = ec.generate_private_key(ec.SECP256R1())
    intermediate = _ca(
        "EK Intermediate", key, "EK Root", world.root_key, extensions=((UNKNOWN_CRITICAL, True),)
    )
    return _chain(world, _ek_leaf(world, "EK Intermediate", key), intermediate), world.roots


def _sha1_signed_leaf(world: World) -> tuple[UnverifiedEnrollment, TrustRoots]:
    leaf = _ek_leaf(world, "EK Root", world.root_key)
    return _chain(world, _resigned_with_sha1(leaf, world.root_key)), world.roots


def _issuer_lacks_key_cert_sign(world: World) -> tuple[UnverifiedEnrollment, TrustRoots]:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    intermediate = _ca(
        "EK Intermediate", key, "EK Root", world.root_key, extensions=((usage, True),)
    )
    return _chain(world, _ek_leaf(world, "EK Intermediate", key), intermediate), world.roots


CHAIN_POLICY_REFUSALS: list[Any] = [
    pytest.param(_path_length_violated, "path length constraint", id="path-length"),
    pytest.param(
        _critical_unknown_on_leaf,
        r"99999\.1: certificate contains unaccounted-for critical extensions\) and",
        id="critical-unknown-leaf",
    ),
    pytest.param(
        _critical_unknown_on_intermediate, "critical extension", id="critical-unknown-intermediate"
    ),
    pytest.param(
        _sha1_signed_leaf,
        r"forbidden signature algorithm 1\.2\.840\.10045\.4\.1\) and",  # ecdsa-with-SHA1
        id="sha1-signed",
    ),
    pytest.param(_issuer_lacks_key_cert_sign, "keyCertSign", id="issuer-without-keycertsign"),
]


@pytest.mark.parametrize(("make", "reason"), CHAIN_POLICY_REFUSALS)
def test_ek_chain_policy_refusals(
    world: World, make: Callable[[World], tuple[UnverifiedEnrollment, TrustRoots]], reason: str
) -> None:
    enrollment, roots = make(world)
    with pytest.raises(EvidenceError, match=f"EK not trusted: .*{reason}"):
        begin_enrollment(enrollment, roots, now=NOW)


def test_ek_certificate_extensions_real_ones_carry_are_admitted(world: World) -> None:
    # A TCG EK certificate: no subject, a critical SAN with a directoryName, the EK
    # certificate EKU (not TLS), certificate policies marked critical (as Intel and STM
    # intermediates do), no SKI/AKI.
    policies = x509.CertificatePolicies(
        [x509.PolicyInformation(x509.ObjectIdentifier("1.2.3"), None)]
    )
    key = ec.generate_private_key(ec.SECP256R1())
    intermediate = _ca(
        "EK Intermediate", key, "EK Root", world.root_key, extensions=((policies, True),)
    )
    leaf = _ek_leaf(
        world,
        "EK Intermediate",
        key,
        (x509.ExtendedKeyUsage([TCG_KP_EK_CERTIFICATE]), False),
        (policies, True),
    )
    challenge, pending = begin_enrollment(_chain(world, leaf, intermediate), world.roots, now=NOW)
    assert pending.tpm_manufacturer == "IBM"
    assert challenge.challenge_id == pending.challenge_id


# --- measured boot: the event log replayed and appraised ---------------------------------

LOG_PCRS = list(range(10))
BOOT_CLASS = ReferenceClass.model_validate(
    {
        "class": "fleet",
        "secure_boot": True,
        "measured_boot": True,
        "event_log": {
            "db": [hashlib.sha256(eventlogs.DB).hexdigest()],
            "dbx_revisions": {hashlib.sha256(eventlogs.DBX).hexdigest(): 371},
            "min_dbx_revision": 300,
            "boot": [
                {"name": "shim", "digests": [hashlib.sha256(eventlogs.SHIM).hexdigest()]},
                {"name": "grub", "digests": [hashlib.sha256(eventlogs.GRUB).hexdigest()]},
                {"name": "kernel", "digests": [hashlib.sha256(eventlogs.KERNEL).hexdigest()]},
            ],
            "min_crtm_version": "1.0",
        },
    }
)


def booted(
    world: World,
    challenge: Challenge,
    events: list[eventlogs.LogEvent],
    pcrs: list[int] = LOG_PCRS,
    others: dict[int, bytes] | None = None,
) -> Answer:
    """An answer quoting sha256 PCRs ``pcrs`` as ``events`` extended them (``others``:
    values of PCRs something else extended)."""
    replayed = {**eventlogs.replay(events), **(others or {})}
    values = {i: replayed.get(i, bytes(32)) for i in pcrs}
    secret = activate(world.ek, ak_name(world.enrollment.ak_public), challenge.credential)
    quote = attest(challenge.nonce, digest_of(values, pcrs), pcrs=pcrs)
    return Answer(secret, quote, sign(world.ak, quote), {(SHA256, i): v for i, v in values.items()})


def boot_pass(world: World, log: bytes, events: list[eventlogs.LogEvent], **kwargs: Any) -> Posture:
    challenge, pending = start(world)
    reference = kwargs.pop("reference", ReferenceValues(classes=(BOOT_CLASS,)))
    return one_pass(
        pending, booted(world, challenge, events), reference=reference, event_log=log, **kwargs
    ).posture


def test_a_log_that_replays_and_passes_the_class_gives_the_boot_facts(world: World) -> None:
    events = eventlogs.standard_boot()
    posture = boot_pass(world, eventlogs.crypto_agile(events), events)
    chain = hashlib.sha256(
        b"".join(
            hashlib.sha256(i).digest() for i in (eventlogs.SHIM, eventlogs.GRUB, eventlogs.KERNEL)
        )
    ).hexdigest()
    assert (posture.device_class, posture.secure_boot, posture.measured_boot_ok) == (
        "fleet",
        True,
        True,
    )
    assert (posture.boot_chain, posture.dbx_revision, posture.crtm_version) == (
        chain,
        371,
        "1.0.2",
    )


def test_quoted_pcrs_past_9_are_not_replayed(world: World) -> None:
    """PCR 10 holds IMA's measurements, 11 and up the OS's: not the boot log's."""
    events = eventlogs.standard_boot()
    challenge, pending = start(world)
    others = {10: hashlib.sha256(b"ima").digest(), 11: hashlib.sha256(b"uki").digest()}
    answer_ = booted(world, challenge, events, pcrs=list(range(12)), others=others)
    reference = ReferenceValues(classes=(BOOT_CLASS,))
    attested = one_pass(
        pending, answer_, reference=reference, event_log=eventlogs.crypto_agile(events)
    )
    assert attested.posture.device_class == "fleet"


def test_a_pcr_only_class_ignores_the_log_and_has_no_boot_facts(world: World) -> None:
    challenge, pending = start(world)
    log = eventlogs.crypto_agile(eventlogs.standard_boot())
    posture = one_pass(pending, answer(world, challenge), event_log=log[:50]).posture
    assert posture.device_class == "lab"
    assert (posture.boot_chain, posture.dbx_revision, posture.crtm_version) == (None, None, None)


def _changed_kernel() -> list[eventlogs.LogEvent]:
    events = eventlogs.standard_boot()
    return eventlogs.with_event(events, len(events) - 3, measured=b"another kernel")


MEASURED_BOOT_REFUSALS = [
    pytest.param(lambda events: b"", "fleet: no boot event log was sent", id="no-log"),
    pytest.param(
        lambda events: b"\x00" * 40, "fleet: the boot event log is malformed", id="malformed"
    ),
    pytest.param(
        lambda events: eventlogs.crypto_agile(_changed_kernel()),
        r"fleet: PCR 4 \(sha256\) does not replay",
        id="log-changed",
    ),
    pytest.param(
        lambda events: eventlogs.crypto_agile(events, banks=("sha1",)),
        "fleet: .*sha256",
        id="other-bank-only",
    ),
]


@pytest.mark.parametrize(("make_log", "message"), MEASURED_BOOT_REFUSALS)
def test_a_log_that_is_missing_malformed_or_does_not_replay_is_refused(
    world: World, make_log: Callable[[list[eventlogs.LogEvent]], bytes], message: str
) -> None:
    events = eventlogs.standard_boot()
    with pytest.raises(EvidenceError, match=f"matches no reference class: {message}"):
        boot_pass(world, make_log(events), events)


def test_a_log_that_replays_but_fails_the_class_is_refused_by_appraisal(world: World) -> None:
    events = eventlogs.standard_boot(secure_boot=False)
    with pytest.raises(EvidenceError, match=r"fleet: Secure Boot is off \(SecureBoot = 00\)"):
        boot_pass(world, eventlogs.crypto_agile(events), events)
    kernel = _changed_kernel()
    with pytest.raises(EvidenceError, match=r"fleet: boot application 3 \(kernel\) sha256 "):
        boot_pass(world, eventlogs.crypto_agile(kernel), kernel)


def test_the_quote_must_cover_pcrs_0_to_9_of_the_class_bank(world: World) -> None:
    events = eventlogs.standard_boot()
    challenge, pending = start(world)
    with pytest.raises(EvidenceError, match="required PCRs sha256:8,9"):
        one_pass(
            pending,
            booted(world, challenge, events, pcrs=list(range(8))),
            reference=ReferenceValues(classes=(BOOT_CLASS,)),
            event_log=eventlogs.crypto_agile(events),
        )
