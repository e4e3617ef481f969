"""The attestation verifier: enrollment → challenge → quote → verified attestation → posture.

A state machine without I/O, in the order the protocol allows and no other:

    UnverifiedEnrollment ──begin_enrollment──> Challenge (sent to the device)
                                             + PendingChallenge (kept by the server)
    PendingChallenge + evidence ──finish_attestation──> VerifiedAttestation
    VerifiedAttestation + reference values ──appraise──> Posture

Every step returns a verified value or raises (`EvidenceError` when evidence does not verify,
`ParseError` when it is malformed). There is no clock read: `now` (an aware UTC datetime) is
passed in; randomness is `os.urandom` unless a `random` callable is injected (tests). Storing
the pending challenge, consuming it once (replay) and keeping the last clock per AK are the
caller's concern.

EK identity: the *EK hash* is SHA-256 of the DER SubjectPublicKeyInfo of the EK's public key
(`ek_key_hash`). It is what `TrustRoots.ek_allowlist` holds and what the EK certificate's key is
compared with, so it does not depend on TPMT_PUBLIC template details (attributes, policy).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from attestation._credential import make_credential, parse_ek_public, to_tpm2_tools_file
from attestation._errors import AttestationError, CredentialError, EvidenceError, ParseError
from attestation._tpm import (
    ALG_SHA1,
    ALG_SHA256,
    ALG_SHA384,
    ALG_SHA512,
    ECC_NIST_P256,
    ECC_NIST_P384,
    ClockInfo,
    EccParameters,
    PcrSelection,
    PublicArea,
    hash_name,
    parse_attest,
    parse_public_2b,
    parse_signature,
    pcr_digest,
    verify_quote_signature,
)

__all__ = [
    "Challenge",
    "PendingChallenge",
    "Posture",
    "TrustRoots",
    "UnverifiedEnrollment",
    "VerifiedAttestation",
    "appraise",
    "begin_enrollment",
    "ek_key_hash",
    "finish_attestation",
]

SECRET_SIZE: Final = 32
NONCE_SIZE: Final = 32
DEFAULT_TTL: Final = timedelta(seconds=60)
_MAX_CHAIN: Final = 8
_MIN_RSA_BITS: Final = 2048
_AK_CURVES: Final = frozenset({ECC_NIST_P256, ECC_NIST_P384})
_BANKS: Final[dict[str, int]] = {
    "sha1": ALG_SHA1,
    "sha256": ALG_SHA256,
    "sha384": ALG_SHA384,
    "sha512": ALG_SHA512,
}
_SECURE_BOOT_PCR: Final = 7


# --- inputs and outputs ------------------------------------------------------------------


@dataclass(frozen=True)
class UnverifiedEnrollment:
    """What a device sends to enroll; nothing in it is trusted yet.

    `ek_public` and `ak_public` are TPM2B_PUBLIC bytes (``tpm2_createek -u``,
    ``tpm2_createak -u``); `ek_certificate` is the DER EK certificate from the TPM's NV, if
    any; `ek_intermediates` are DER certificates between it and a root (untrusted helpers
    for chain building).
    """

    ek_public: bytes
    ek_certificate: bytes | None
    ak_public: bytes
    ek_intermediates: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class TrustRoots:
    """EK manufacturer roots, and EKs trusted without a certificate (by `ek_key_hash`)."""

    ek_roots: Sequence[x509.Certificate] = ()
    ek_allowlist: frozenset[bytes] = frozenset()


@dataclass(frozen=True)
class Challenge:
    """What the server sends back: the credential to activate and the nonce to quote.

    `credential` is the file ``tpm2_activatecredential -i`` reads.
    """

    challenge_id: str
    credential: bytes
    nonce: bytes
    expires_at: datetime


@dataclass(frozen=True)
class PendingChallenge:
    """What the server keeps until the device answers (consume it once: replay is the store's)."""

    challenge_id: str
    secret: bytes = field(repr=False)
    nonce: bytes
    ak_public: bytes
    ek_hash: bytes
    expires_at: datetime


@dataclass(frozen=True)
class VerifiedAttestation:
    """A quote that verified: same TPM as the trusted EK, fresh, and these PCR values."""

    ek_hash: bytes
    ak_name: bytes
    pcrs: Mapping[tuple[int, int], bytes]  # (bank alg, index) -> value, the quoted ones only
    selection: tuple[PcrSelection, ...]
    firmware_version: int
    clock_info: ClockInfo


@dataclass(frozen=True)
class Posture:
    """The appraised state of a device, what credentials and policy see."""

    attested: bool
    device_class: str
    secure_boot: bool
    firmware_version: int
    ek_hash: bytes


# --- enrollment --------------------------------------------------------------------------


def ek_key_hash(ek_public: bytes) -> bytes:
    """SHA-256 of the DER SubjectPublicKeyInfo of the key in an EK's TPM2B_PUBLIC."""
    return _spki_hash(_ek_key(ek_public))


def _spki_hash(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bytes:
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()


def _ek_key(ek_public: bytes) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    try:
        return parse_ek_public(ek_public).public_key
    except CredentialError as exc:
        raise EvidenceError(f"the EK is not usable: {exc}") from exc


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime (UTC)")


def _load_der(data: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise ParseError(f"{what} is not a DER X.509 certificate: {exc}") from exc


def _check_validity(cert: x509.Certificate, now: datetime, what: str) -> None:
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise EvidenceError(
            f"EK not trusted: {what} {cert.subject.rfc4514_string()!r} is not valid at "
            f"{now.isoformat()} ({cert.not_valid_before_utc.isoformat()} to "
            f"{cert.not_valid_after_utc.isoformat()})"
        )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    if not constraints.ca:
        return False
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return usage.key_cert_sign


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Name match and a valid signature by `issuer` (any error is 'not issued by')."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _chains_to_root(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    now: datetime,
) -> bool:
    """A manual path check: TPM EK certificates often carry extensions (critical SAN with a
    directoryName, TPM-specific policies) that cryptography's path validator refuses, so the
    chain is walked here — signatures issuer by issuer, names, validity at `now`, and
    basicConstraints CA (with keyCertSign when keyUsage is present) on every issuer."""
    _check_validity(leaf, now, "EK certificate")
    current = leaf
    for _ in range(_MAX_CHAIN):
        for root in roots:
            if _is_ca(root) and _issued_by(current, root):
                _check_validity(root, now, "root")
                return True
        step = next(
            (c for c in intermediates if c != current and _is_ca(c) and _issued_by(current, c)),
            None,
        )
        if step is None:
            return False
        _check_validity(step, now, "intermediate")
        current = step
    return False


def _check_ek_trust(enrollment: UnverifiedEnrollment, roots: TrustRoots, now: datetime) -> bytes:
    ek_hash = ek_key_hash(enrollment.ek_public)
    if enrollment.ek_certificate is not None and roots.ek_roots:
        leaf = _load_der(enrollment.ek_certificate, "the EK certificate")
        intermediates = [_load_der(d, "an EK intermediate") for d in enrollment.ek_intermediates]
        if _chains_to_root(leaf, intermediates, roots.ek_roots, now):
            try:
                cert_key = leaf.public_key()
            except (ValueError, UnsupportedAlgorithm) as exc:
                raise EvidenceError(f"EK not trusted: certificate key unreadable: {exc}") from exc
            if not isinstance(cert_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
                raise EvidenceError("EK not trusted: the certificate key is not RSA or ECC")
            if not hmac.compare_digest(_spki_hash(cert_key), ek_hash):
                raise EvidenceError(
                    "EK not trusted: the EK certificate's key is not the EK public key"
                )
            return ek_hash
    if ek_hash in roots.ek_allowlist:
        return ek_hash
    raise EvidenceError(
        "EK not trusted: no EK certificate chaining to a configured root and not in the "
        f"allow-list (EK hash {ek_hash.hex()})"
    )


def _check_ak(ak: PublicArea) -> None:
    required = (
        ("fixedTPM", ak.fixed_tpm),
        ("fixedParent", ak.fixed_parent),
        ("sensitiveDataOrigin", ak.sensitive_data_origin),
        ("restricted", ak.restricted),
        ("sign", ak.sign),
    )
    for name, present in required:
        if not present:
            raise EvidenceError(f"the AK lacks the {name} attribute")
    if ak.decrypt:
        raise EvidenceError("the AK has the decrypt attribute: an AK only signs")
    params = ak.parameters
    if isinstance(params, EccParameters):
        if params.curve_id not in _AK_CURVES:
            raise EvidenceError(f"the AK curve 0x{params.curve_id:04x} is not P-256 or P-384")
    elif params.key_bits < _MIN_RSA_BITS:
        raise EvidenceError(f"the AK is RSA {params.key_bits}: at least {_MIN_RSA_BITS} needed")
    ak.public_key()  # a ParseError now rather than at the quote


def begin_enrollment(
    enrollment: UnverifiedEnrollment,
    roots: TrustRoots,
    *,
    now: datetime,
    ttl: timedelta = DEFAULT_TTL,
    random: Callable[[int], bytes] = os.urandom,
) -> tuple[Challenge, PendingChallenge]:
    """Check the EK is trusted and the AK is a proper AK, then make the challenge.

    Raises EvidenceError ("EK not trusted…", or naming the AK attribute), ParseError for
    malformed bytes.
    """
    _require_aware(now)
    ek_hash = _check_ek_trust(enrollment, roots, now)
    ak = parse_public_2b(enrollment.ak_public)
    _check_ak(ak)
    secret = random(SECRET_SIZE)
    nonce = random(NONCE_SIZE)
    challenge_id = random(16).hex()
    try:
        credential = make_credential(enrollment.ek_public, ak.name(), secret)
    except CredentialError as exc:
        raise EvidenceError(f"cannot make a credential for this EK and AK: {exc}") from exc
    expires_at = now + ttl
    challenge = Challenge(challenge_id, to_tpm2_tools_file(credential), nonce, expires_at)
    pending = PendingChallenge(
        challenge_id, secret, nonce, enrollment.ak_public, ek_hash, expires_at
    )
    return challenge, pending


# --- the answer --------------------------------------------------------------------------


def finish_attestation(
    pending: PendingChallenge,
    *,
    activated_secret: bytes,
    quote: bytes,
    signature: bytes,
    pcr_values: Mapping[tuple[int, int], bytes],
    now: datetime,
    required_pcrs: Mapping[int, frozenset[int]] | None = None,
    last_clock: tuple[int, int] | None = None,
) -> VerifiedAttestation:
    """Verify a device's answer to `pending`; return what it proves or raise EvidenceError.

    `quote` is the TPMS_ATTEST (``tpm2_quote -m``), `signature` the TPMT_SIGNATURE
    (``-s``), `pcr_values` maps (bank alg, index) to the value the device read;
    `required_pcrs` maps a bank alg to the indices the quote must cover; `last_clock` is the
    (resetCount, clock) of this AK's previous accepted quote.
    """
    _require_aware(now)
    if now > pending.expires_at:
        raise EvidenceError("challenge expired")
    if not hmac.compare_digest(activated_secret, pending.secret):
        raise EvidenceError("the activated secret is wrong: the AK is not on the EK's TPM")
    ak = parse_public_2b(pending.ak_public)
    sig = parse_signature(signature)
    verify_quote_signature(ak, quote, sig)
    attest = parse_attest(quote)
    if not hmac.compare_digest(attest.extra_data, pending.nonce):
        raise EvidenceError("the quote's extraData is not the challenge nonce")
    _check_required(attest.pcr_select, required_pcrs or {})
    expected = pcr_digest(attest.pcr_select, pcr_values, sig.hash_alg)
    if not hmac.compare_digest(expected, attest.pcr_digest):
        raise EvidenceError("the PCR values do not match the quote's pcrDigest")
    _check_clock(attest.clock_info, last_clock)
    quoted = {
        (bank.hash_alg, index): pcr_values[(bank.hash_alg, index)]
        for bank in attest.pcr_select
        for index in sorted(bank.pcrs)
    }
    return VerifiedAttestation(
        ek_hash=pending.ek_hash,
        ak_name=ak.name(),
        pcrs=MappingProxyType(quoted),
        selection=attest.pcr_select,
        firmware_version=attest.firmware_version,
        clock_info=attest.clock_info,
    )


def _check_required(
    selection: Sequence[PcrSelection], required: Mapping[int, frozenset[int]]
) -> None:
    selected: dict[int, set[int]] = {}
    for bank in selection:
        selected.setdefault(bank.hash_alg, set()).update(bank.pcrs)
    for alg, indices in required.items():
        missing = sorted(set(indices) - selected.get(alg, set()))
        if missing:
            raise EvidenceError(
                f"the quote does not cover required PCRs {hash_name(alg)}:"
                + ",".join(str(i) for i in missing)
            )


def _check_clock(clock: ClockInfo, last: tuple[int, int] | None) -> None:
    if last is None:
        return
    last_reset, last_clock = last
    if clock.reset_count < last_reset:
        raise EvidenceError(
            f"the TPM resetCount went backwards ({clock.reset_count} < {last_reset})"
        )
    if clock.reset_count == last_reset and clock.clock < last_clock:
        raise EvidenceError(f"the TPM clock went backwards ({clock.clock} < {last_clock})")


# --- appraisal ---------------------------------------------------------------------------


def _golden(reference: Mapping[str, Any]) -> dict[tuple[int, int], bytes]:
    """The golden PCR values of a reference; AttestationError when malformed or empty."""
    banks = reference.get("pcrs")
    if not isinstance(banks, Mapping):
        raise AttestationError("reference values: 'pcrs' must be a table of banks")
    golden: dict[tuple[int, int], bytes] = {}
    try:
        for bank_name, values in banks.items():
            alg = _BANKS[bank_name]
            for index, value in values.items():
                digest = bytes.fromhex(value)
                if len(digest) != hashlib.new(bank_name).digest_size:
                    raise ValueError(f"{bank_name}:{index} has {len(digest)} bytes")
                golden[(alg, int(index))] = digest
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise AttestationError(f"reference values: malformed 'pcrs': {exc!r}") from exc
    if not golden:
        raise AttestationError("reference values: no golden PCRs (an empty reference fails)")
    return golden


def appraise(verified: VerifiedAttestation, reference: Mapping[str, Any]) -> Posture:
    """Compare a verified attestation with a device class's reference values.

    `reference` is ``{"class": str, "pcrs": {"sha256": {index: hex}}, "min_firmware": int |
    None}``. Every golden PCR must have been quoted with that value, and the firmware must
    be at least `min_firmware`; otherwise EvidenceError naming the PCR (or the firmware).
    A malformed or empty reference raises AttestationError (fail closed).
    """
    device_class = reference.get("class")
    if not isinstance(device_class, str) or not device_class:
        raise AttestationError("reference values: 'class' must be a non-empty string")
    min_firmware = reference.get("min_firmware")
    if min_firmware is not None and (
        not isinstance(min_firmware, int) or isinstance(min_firmware, bool)
    ):
        raise AttestationError("reference values: 'min_firmware' must be an integer or None")
    golden = _golden(reference)
    for (alg, index), value in sorted(golden.items()):
        label = f"PCR {hash_name(alg)}:{index}"
        quoted = verified.pcrs.get((alg, index))
        if quoted is None:
            raise EvidenceError(f"{label} has a reference value but was not quoted")
        if not hmac.compare_digest(quoted, value):
            raise EvidenceError(f"{label} does not match its reference value")
    if min_firmware is not None and verified.firmware_version < min_firmware:
        raise EvidenceError(
            f"firmware version 0x{verified.firmware_version:x} is below the minimum "
            f"0x{min_firmware:x}"
        )
    secure_boot = any(index == _SECURE_BOOT_PCR for _alg, index in golden)
    return Posture(
        attested=True,
        device_class=device_class,
        secure_boot=secure_boot,
        firmware_version=verified.firmware_version,
        ek_hash=verified.ek_hash,
    )
