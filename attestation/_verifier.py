"""The attestation verifier: enrollment → challenge → quote → verified attestation → posture.

A state machine without I/O, in the order the protocol allows and no other:

    UnverifiedEnrollment ──begin_enrollment──> Challenge (sent to the device)
                                             + PendingChallenge (kept by the server)
    PendingChallenge + evidence ──finish_attestation──> VerifiedAttestation
    VerifiedAttestation + a ReferenceClass ──appraise──> Posture (attestation._posture)
                        (every class of a bundle, in order: appraise_any)
    (a class with an [event_log]: + the boot event log ──check_replay──> appraise_boot)

An Attest is one call, :func:`verify_answer` (the two steps above), fed with what the
challenge store holds and returning what it must hold next:

    PendingChallenge + last TPM clock + evidence (+ event log) + ReferenceValues + now
        ──verify_answer──> Attested: the Posture, and ToPersist (the challenge used, the
                           quote's TPM clock), or EvidenceError (then ToPersist.refused)

Every step returns a verified value or raises (`EvidenceError` when evidence does not verify,
`ParseError` when it is malformed). There is no clock read: `now` (an aware UTC datetime) is
passed in; randomness is `os.urandom` unless a `random` callable is injected (tests). Reading
the pending challenge and the last clock before, and writing :class:`ToPersist` after (the
challenge used once, atomically: replay), are the caller's (``ChallengeStore.read`` and
``ChallengeStore.write``), as python-tuf's Updater does around its TrustedMetadataSet.

EK identity: the *EK hash* is SHA-256 of the DER SubjectPublicKeyInfo of the EK's public key
(`ek_key_hash`). It is what `TrustRoots.ek_allowlist` holds and what the EK certificate's key is
compared with, so it does not depend on TPMT_PUBLIC template details (attributes, policy).

EK certificates and intermediates are read by :mod:`attestation._der` (strictly when
`cryptography` accepts them, else from a canonical re-encoding: vendors such as Nuvoton
write unsorted multi-valued names). The chain is validated by
`cryptography.x509.verification` (`PolicyBuilder`, a client verifier, extension policies
that admit EK certificates: see `_verified_leaf`): pathLen, name constraints, unknown
critical extensions and weak signature algorithms are refused. Only a chain with a
re-encoded certificate is walked by hand, its signatures checked over the original
tbsCertificate bytes. `check_ek_root` is what makes a certificate usable as a root (a CA;
a self-signature that verifies).

Quote hash policy: `finish_attestation(accepted_hashes=…)` refuses a quote signed with, or
covering a PCR bank in, a hash not listed ("quote signed with sha1, which this appraisal
does not accept"); `DEFAULT_QUOTE_HASHES` leaves SHA-1 out.

Boot event log: read only for a class with an ``[event_log]`` section, and parsed once per
answer. Such a class refuses a device that sent no log, a malformed log, a log that does not
replay to the quoted PCRs 0-9 of the class's bank (naming the first PCR that differs: the
quote's PCR digest covers those values, so the log's events are the ones that were
measured), and a log whose events break the class's rules
(``attestation._measured_boot.appraise_boot``, naming the first). A PCR-only class ignores
the log.

TPM manufacturer: read from a *verified* EK certificate only (one that chained to a root):
TCG EK certificates name it in the subjectAltName, a directoryName with the attribute
tcg-at-tpmManufacturer (2.23.133.2.1, a value like ``id:00001014``). Known vendor ids become
their TCG short names (``IBM``, ``INTC``, …); others stay as the id string; no certificate,
or none with the attribute, gives "".
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from attestation._credential import make_credential, parse_ek_public, to_tpm2_tools_file
from attestation._der import LoadedCertificate, load_certificate, verify_signed_by
from attestation._errors import CredentialError, EventLogError, EvidenceError, ParseError
from attestation._eventlog import EventLog, check_replay, parse_event_log
from attestation._measured_boot import LOG_PCRS, BootFacts, appraise_boot
from attestation._posture import MANUFACTURER_PATTERN, Posture
from attestation._reference import ReferenceClass, ReferenceValues
from attestation._tpm import (
    ALG_SHA256,
    ALG_SHA384,
    ALG_SHA512,
    ATTR_DECRYPT,
    ATTR_FIXED_PARENT,
    ATTR_FIXED_TPM,
    ATTR_RESTRICTED,
    ATTR_SENSITIVE_DATA_ORIGIN,
    ATTR_SIGN,
    ECC_NIST_P256,
    ECC_NIST_P384,
    HASH_IDS,
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
    "Attested",
    "Challenge",
    "PendingChallenge",
    "ToPersist",
    "TrustRoots",
    "UnverifiedEnrollment",
    "VerifiedAttestation",
    "appraise",
    "appraise_any",
    "begin_enrollment",
    "check_ek_root",
    "check_quote_hashes",
    "ek_key_hash",
    "finish_attestation",
    "tpm_manufacturer",
    "verify_answer",
]

SECRET_SIZE: Final = 32
NONCE_SIZE: Final = 32
DEFAULT_TTL: Final = timedelta(seconds=60)
QUOTE_HASHES: Final[Mapping[str, int]] = HASH_IDS
"""Hash names a quote policy may list -> TPM_ALG id (the hash table of attestation._tpm)."""
DEFAULT_QUOTE_HASHES: Final = frozenset({ALG_SHA256, ALG_SHA384, ALG_SHA512})
"""The quote signature and PCR bank hashes accepted unless configured: SHA-1 is not (a
chosen-prefix collision costs little, and a TPM that can sign with SHA-256 should)."""
_MAX_CHAIN: Final = 8
_MIN_RSA_BITS: Final = 2048
_AK_CURVES: Final = frozenset({ECC_NIST_P256, ECC_NIST_P384})


TCG_AT_TPM_MANUFACTURER: Final = x509.ObjectIdentifier("2.23.133.2.1")
TPM_VENDORS: Final[Mapping[int, str]] = MappingProxyType(
    {
        0x00001014: "IBM",  # what swtpm reports
        0x414D4400: "AMD",
        0x474F4F47: "GOOG",
        0x49465800: "IFX",
        0x494E5443: "INTC",
        0x4D534654: "MSFT",
        0x4E544300: "NTC",
        0x53544D20: "STM",
    }
)
"""TCG TPM vendor ids (tcg-at-tpmManufacturer) -> the TCG short vendor name."""
_VENDOR_ID = re.compile(r"^id:([0-9A-Fa-f]{8})$")


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
    tpm_manufacturer: str = ""
    """From the verified EK certificate ("IBM", or the raw ``id:…``); "" when unknown."""


@dataclass(frozen=True)
class VerifiedAttestation:
    """A quote that verified: same TPM as the trusted EK, fresh, and these PCR values."""

    ek_hash: bytes
    ak_name: bytes
    pcrs: Mapping[tuple[int, int], bytes]  # (bank alg, index) -> value, the quoted ones only
    selection: tuple[PcrSelection, ...]
    firmware_version: int
    clock_info: ClockInfo
    tpm_manufacturer: str = ""


@dataclass(frozen=True)
class ToPersist:
    """What the challenge store must hold once an answer has been judged: challenge
    `challenge_id` used (at `used_at`; once, whoever else answers it), and, for an answer
    that verified, the (resetCount, clock) of its quote as the device's last TPM clock
    (keyed by `ek_hash`; it never moves backwards)."""

    challenge_id: str
    ek_hash: bytes
    used_at: datetime
    tpm_clock: tuple[int, int] | None = None

    @classmethod
    def refused(cls, pending: PendingChallenge, now: datetime) -> ToPersist:
        """For an answer refused: its challenge used all the same, no clock."""
        return cls(pending.challenge_id, pending.ek_hash, now)


@dataclass(frozen=True)
class Attested:
    """An answer that verified and matched a reference class: the device's posture, what
    verified, and what the challenge store must hold now."""

    posture: Posture
    verified: VerifiedAttestation
    persist: ToPersist


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
        return parse_ek_public(ek_public).public_key()
    except CredentialError as exc:
        raise EvidenceError(f"the EK is not usable: {exc}") from exc


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime (UTC)")


def check_ek_root(root: LoadedCertificate) -> None:
    """Check a certificate can serve as an EK trust root: a CA (basicConstraints, with
    keyCertSign when keyUsage is present) and, when it is self-issued, with a
    self-signature that verifies over its original bytes. Raises EvidenceError saying
    which."""
    cert = root.certificate
    name = cert.subject.rfc4514_string()
    if not _is_ca(cert):
        raise EvidenceError(f"{name!r} is not a CA certificate (basicConstraints, keyUsage)")
    if cert.subject == cert.issuer:
        try:
            verify_signed_by(root, cert.public_key())
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise EvidenceError(f"{name!r}: its key is unreadable: {exc}") from exc
        except EvidenceError as exc:
            raise EvidenceError(f"{name!r}: self-signature: {exc}") from exc


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
    except (x509.ExtensionNotFound, ValueError):  # absent or unreadable: not a CA
        return False
    if not constraints.ca:
        return False
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return usage.key_cert_sign


def _issued_by(cert: LoadedCertificate, issuer: x509.Certificate) -> bool:
    """Name match and a valid signature by `issuer` over `cert`'s original tbsCertificate
    bytes (any error is 'not issued by'). Names compare as values: the order of a
    multi-valued component's attributes does not matter."""
    if cert.certificate.issuer != issuer.subject:
        return False
    try:
        verify_signed_by(cert, issuer.public_key())
    except (EvidenceError, ValueError, UnsupportedAlgorithm):
        return False
    return True


def _key_cert_sign(_policy: Policy, _cert: x509.Certificate, usage: x509.KeyUsage | None) -> None:
    if usage is not None and not usage.key_cert_sign:
        raise ValueError("an issuer's keyUsage lacks keyCertSign")


_EK_CA_POLICY: Final = (
    ExtensionPolicy.permit_all()
    .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, None)
    .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _key_cert_sign)
    .may_be_present(x509.CertificatePolicies, Criticality.AGNOSTIC, None)
)
"""Issuers (roots included): basicConstraints CA required (the verifier checks cA and
pathLen), keyCertSign when keyUsage is present, certificatePolicies admitted even when
critical (Intel's and STMicro's EK intermediates mark it so). No AKI/SKI requirement."""
_EK_EE_POLICY: Final = ExtensionPolicy.permit_all().may_be_present(
    x509.CertificatePolicies, Criticality.AGNOSTIC, None
)
"""EK certificates: no TLS EKU (theirs is tcg-kp-EKCertificate), an empty subject with a
critical SAN of TPM directoryName attributes, often no SKI/AKI."""
_CHAIN_HASHES: Final = (hashes.SHA256, hashes.SHA384, hashes.SHA512)


def _verified_leaf(
    leaf: LoadedCertificate,
    intermediates: Sequence[LoadedCertificate],
    roots: Sequence[x509.Certificate],
    now: datetime,
) -> tuple[x509.Certificate | None, str]:
    """The EK certificate when it chains to one of `roots` at `now`, else None and why.

    Path validation is `cryptography.x509.verification` with the EK extension policies
    above: signatures issuer by issuer, names, validity, basicConstraints cA and pathLen,
    name constraints, critical extensions nobody accounted for, signature algorithms (no
    SHA-1), RSA keys of at least 2048 bits, at most `_MAX_CHAIN` certificates.

    The one fallback: a certificate that `cryptography` could read only re-encoded
    (:mod:`attestation._der`: Nuvoton's unsorted multi-valued names) has a signature over
    bytes the verifier never sees, so a chain with one is walked by `_walk_reencoded`.
    """
    if leaf.reencoded or any(c.reencoded for c in intermediates):
        return _walk_reencoded(leaf, intermediates, roots, now)
    verifier = (
        PolicyBuilder()
        .store(Store(list(roots)))
        .time(now)
        .max_chain_depth(_MAX_CHAIN)
        .extension_policies(ca_policy=_EK_CA_POLICY, ee_policy=_EK_EE_POLICY)
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf.certificate, [c.certificate for c in intermediates])
    except VerificationError as exc:
        return None, _refusal(exc)
    return leaf.certificate, ""


_FORBIDDEN_ALGORITHM = re.compile(r"Forbidden signature algorithm: .*?oid: ([0-9.]+) \}")
_ENCOUNTERED = re.compile(r" \(encountered processing <Certificate.*\)$")


def _refusal(exc: VerificationError) -> str:
    """The verifier's reason, without its Rust debug forms: an algorithm by its OID, and no
    certificate repr."""
    text = _ENCOUNTERED.sub("", str(exc))
    match = _FORBIDDEN_ALGORITHM.search(text)
    if match is not None:
        text = f"{text[: match.start()]}forbidden signature algorithm {match.group(1)}"
    return text


def _strong_hash(cert: x509.Certificate) -> bool:
    try:
        return isinstance(cert.signature_hash_algorithm, _CHAIN_HASHES)
    except UnsupportedAlgorithm:  # an algorithm cryptography does not know
        return False


def _walk_reencoded(
    leaf: LoadedCertificate,
    intermediates: Sequence[LoadedCertificate],
    roots: Sequence[x509.Certificate],
    now: datetime,
) -> tuple[x509.Certificate | None, str]:
    """The narrow fallback for chains with a re-encoded certificate (see `_verified_leaf`):
    signatures over each certificate's original tbsCertificate bytes, issuer by issuer, with
    SHA-256/384/512 only; names; validity at `now`; basicConstraints CA (with keyCertSign
    when keyUsage is present) on every issuer. Raises EvidenceError for a certificate that
    is not valid at `now`."""
    _check_validity(leaf.certificate, now, "EK certificate")
    current = leaf
    for _ in range(_MAX_CHAIN):
        if not _strong_hash(current.certificate):
            return None, "a certificate's signature algorithm is not SHA-256/384/512"
        for root in roots:
            if _is_ca(root) and _issued_by(current, root):
                _check_validity(root, now, "root")
                return leaf.certificate, ""
        step = next(
            (
                c
                for c in intermediates
                if c.certificate != current.certificate
                and _is_ca(c.certificate)
                and _issued_by(current, c.certificate)
            ),
            None,
        )
        if step is None:
            return None, "no issuer among the intermediates and roots"
        _check_validity(step.certificate, now, "intermediate")
        current = step
    return None, f"longer than {_MAX_CHAIN} certificates"


def tpm_manufacturer(certificate: x509.Certificate) -> str:
    """The TPM manufacturer an EK certificate names (tcg-at-tpmManufacturer in a
    subjectAltName directoryName): a TCG short name ("IBM") for a known vendor id, else the
    id string as written; "" when absent or not printable. Trust it only from a certificate
    that verified."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ""
    except ValueError:  # a malformed extension: no claim rather than a refusal
        return ""
    for directory in san.value.get_values_for_type(x509.DirectoryName):
        for attribute in directory.get_attributes_for_oid(TCG_AT_TPM_MANUFACTURER):
            value = attribute.value
            if not isinstance(value, str) or not re.fullmatch(MANUFACTURER_PATTERN, value):
                continue
            match = _VENDOR_ID.match(value)
            if match is not None:
                return TPM_VENDORS.get(int(match.group(1), 16), value)
            return value
    return ""


def _check_ek_trust(
    enrollment: UnverifiedEnrollment, roots: TrustRoots, now: datetime
) -> tuple[bytes, str]:
    """The EK hash and the TPM manufacturer ("" unless a verified certificate names it)."""
    ek_hash = ek_key_hash(enrollment.ek_public)
    if enrollment.ek_certificate is not None and roots.ek_roots:
        loaded = load_certificate(enrollment.ek_certificate, "the EK certificate")
        intermediates = [
            load_certificate(d, "an EK intermediate") for d in enrollment.ek_intermediates
        ]
        leaf, refusal = _verified_leaf(loaded, intermediates, roots.ek_roots, now)
        if leaf is not None:
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
            return ek_hash, tpm_manufacturer(leaf)
        if ek_hash not in roots.ek_allowlist:
            raise EvidenceError(
                f"EK not trusted: the EK certificate does not chain to a configured root "
                f"({refusal}) and the EK is not in the allow-list (EK hash {ek_hash.hex()})"
            )
    if ek_hash in roots.ek_allowlist:
        return ek_hash, ""
    raise EvidenceError(
        "EK not trusted: no EK certificate chaining to a configured root and not in the "
        f"allow-list (EK hash {ek_hash.hex()})"
    )


def _check_ak(ak: PublicArea) -> None:
    required = (
        ("fixedTPM", ATTR_FIXED_TPM),
        ("fixedParent", ATTR_FIXED_PARENT),
        ("sensitiveDataOrigin", ATTR_SENSITIVE_DATA_ORIGIN),
        ("restricted", ATTR_RESTRICTED),
        ("sign", ATTR_SIGN),
    )
    for name, attribute in required:
        if not ak.has(attribute):
            raise EvidenceError(f"the AK lacks the {name} attribute")
    if ak.has(ATTR_DECRYPT):
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

    The pending challenge carries the TPM manufacturer when a verified EK certificate names
    it. Raises EvidenceError ("EK not trusted…", or naming the AK attribute), ParseError for
    malformed bytes.
    """
    _require_aware(now)
    ek_hash, manufacturer = _check_ek_trust(enrollment, roots, now)
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
        challenge_id, secret, nonce, enrollment.ak_public, ek_hash, expires_at, manufacturer
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
    accepted_hashes: frozenset[int] = DEFAULT_QUOTE_HASHES,
) -> VerifiedAttestation:
    """Verify a device's answer to `pending`; return what it proves or raise EvidenceError.

    `quote` is the TPMS_ATTEST (``tpm2_quote -m``), `signature` the TPMT_SIGNATURE
    (``-s``), `pcr_values` maps (bank alg, index) to the value the device read;
    `required_pcrs` maps a bank alg to the indices the quote must cover; `last_clock` is the
    (resetCount, clock) of this AK's previous accepted quote; `accepted_hashes` are the
    TPM_ALG ids the quote may be signed with and its PCR banks may use (SHA-1 is not, by
    default: "quote signed with sha1, which this appraisal does not accept").
    """
    _require_aware(now)
    if now > pending.expires_at:
        raise EvidenceError("challenge expired")
    if not hmac.compare_digest(activated_secret, pending.secret):
        raise EvidenceError("the activated secret is wrong: the AK is not on the EK's TPM")
    ak = parse_public_2b(pending.ak_public)
    sig = parse_signature(signature)
    # Before the signature is checked: a downgraded hash is refused whatever it signs.
    if sig.hash_alg not in accepted_hashes:
        raise EvidenceError(
            f"quote signed with {_alg_label(sig.hash_alg)}, which this appraisal does not accept"
        )
    verify_quote_signature(ak, quote, sig)
    attest = parse_attest(quote)
    check_quote_hashes({bank.hash_alg for bank in attest.pcr_select if bank.pcrs}, accepted_hashes)
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
        tpm_manufacturer=pending.tpm_manufacturer,
    )


def _alg_label(alg: int) -> str:
    try:
        return hash_name(alg)
    except ParseError:
        return f"hash 0x{alg:04x}"


def check_quote_hashes(banks: Iterable[int], accepted_hashes: frozenset[int]) -> None:
    """Refuse PCR banks (TPM_ALG ids) whose hash the appraisal does not accept: EvidenceError
    naming the first such bank ("PCR bank sha1, which this appraisal does not accept, …")."""
    for alg in sorted(banks):
        if alg not in accepted_hashes:
            raise EvidenceError(
                f"PCR bank {_alg_label(alg)}, which this appraisal does not accept, is quoted "
                "or required"
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


def appraise(
    verified: VerifiedAttestation,
    reference: ReferenceClass,
    log: EventLog | EventLogError | None = None,
) -> Posture:
    """Compare a verified attestation with one device class's reference values.

    Every golden PCR must have been quoted with that value, and the firmware must be at least
    the class's `min_firmware`; otherwise EvidenceError naming the PCR (or the firmware).
    `secure_boot`, `measured_boot_ok` and `region` of the posture are the class's. A class
    with an ``[event_log]`` also needs `log` (the parsed boot event log, or the error its
    parsing raised): it must replay to the quoted PCRs and pass the class's rules, and the
    posture's `secure_boot` and boot facts are then the log's. To try every class of a
    bundle, use :func:`appraise_any`.
    """
    golden = reference.golden()
    if not golden and reference.event_log is None:  # a validated class never; fail closed
        raise EvidenceError(f"reference class {reference.name!r} has no golden PCR values")
    for (alg, index), value in sorted(golden.items()):
        label = f"PCR {hash_name(alg)}:{index}"
        quoted = verified.pcrs.get((alg, index))
        if quoted is None:
            raise EvidenceError(f"{label} has a reference value but was not quoted")
        if not hmac.compare_digest(quoted, value):
            raise EvidenceError(f"{label} does not match its reference value")
    if verified.firmware_version < reference.min_firmware:
        raise EvidenceError(
            f"firmware version 0x{verified.firmware_version:x} is below the minimum "
            f"0x{reference.min_firmware:x}"
        )
    boot = None if reference.event_log is None else _appraise_log(verified, reference, log)
    return Posture(
        attested=True,
        device_class=reference.name,
        secure_boot=reference.secure_boot if boot is None else boot.secure_boot,
        measured_boot_ok=reference.measured_boot,
        firmware_version=verified.firmware_version,
        tpm_manufacturer=verified.tpm_manufacturer,
        ek_hash=verified.ek_hash,
        region=reference.region,
        boot_chain=None if boot is None else boot.boot_chain,
        dbx_revision=None if boot is None else boot.dbx_revision,
        crtm_version=None if boot is None else boot.crtm_version,
    )


def _appraise_log(
    verified: VerifiedAttestation, reference: ReferenceClass, log: EventLog | EventLogError | None
) -> BootFacts:
    """Replay the log against the quoted PCRs of the class's bank, then appraise it."""
    policy = reference.event_log
    assert policy is not None
    if log is None:
        raise EvidenceError("no boot event log was sent, and this class appraises it")
    if isinstance(log, EventLogError):
        raise EvidenceError(f"the boot event log is malformed: {log}")
    alg = HASH_IDS[policy.bank]
    # PCRs 0-9 only: the appraisal reads events of 0-7, and a quote may cover PCRs the
    # boot log does not describe (10: IMA; 11 and up: the OS's own measurements).
    quoted = {i: verified.pcrs[(alg, i)] for i in LOG_PCRS if (alg, i) in verified.pcrs}
    missing = sorted(set(LOG_PCRS) - set(quoted))
    if missing:  # required_pcrs asks for them; fail closed all the same
        raise EvidenceError(f"PCRs {policy.bank}:{missing} were not quoted: the log cannot replay")
    try:
        check_replay(log, policy.bank, quoted)
    except EventLogError as exc:
        raise EvidenceError(str(exc)) from exc
    return appraise_boot(log, policy, secure_boot=reference.secure_boot)


def parsed_log(event_log: bytes) -> EventLog | EventLogError | None:
    """The boot event log parsed (None when empty; the error when malformed), what
    :func:`appraise` takes."""
    if not event_log:
        return None
    try:
        return parse_event_log(event_log)
    except EventLogError as exc:
        return exc


def appraise_any(
    verified: VerifiedAttestation, reference: ReferenceValues, event_log: bytes = b""
) -> Posture:
    """Appraise against each class in order; return the posture of the first that matches.
    `event_log` is the boot event log the device sent (parsed only if a class reads it).

    Raises EvidenceError when there is no class at all, or when none matches (the message
    says, for each class, why not).
    """
    if not reference.classes:
        raise EvidenceError("no reference values are configured: no device can be appraised")
    needed = any(candidate.event_log is not None for candidate in reference.classes)
    log = parsed_log(event_log) if needed else None
    reasons: list[str] = []
    for candidate in reference.classes:
        try:
            return appraise(verified, candidate, log)
        except EvidenceError as exc:
            reasons.append(f"{candidate.name}: {exc}")
    raise EvidenceError("matches no reference class: " + "; ".join(reasons))


# --- one pass ----------------------------------------------------------------------------


def verify_answer(
    pending: PendingChallenge,
    *,
    activated_secret: bytes,
    quote: bytes,
    signature: bytes,
    pcr_values: Mapping[tuple[int, int], bytes],
    reference: ReferenceValues,
    last_clock: tuple[int, int] | None,
    now: datetime,
    accepted_hashes: frozenset[int] = DEFAULT_QUOTE_HASHES,
    event_log: bytes = b"",
) -> Attested:
    """An Attest's pure steps in one: :func:`finish_attestation` (the quote must cover every
    PCR some class of `reference` names; `last_clock` is what the store holds for this
    device), then :func:`appraise_any` (with `event_log`, the device's boot event log, if
    it sent one). Returns the posture and what to persist (the
    challenge used, this quote's clock).

    Raises EvidenceError (the answer does not verify, the clock went backwards, no class
    matches) or ParseError (malformed bytes); the caller then persists
    ``ToPersist.refused(pending, now)``.
    """
    verified = finish_attestation(
        pending,
        activated_secret=activated_secret,
        quote=quote,
        signature=signature,
        pcr_values=pcr_values,
        now=now,
        required_pcrs=reference.required_pcrs(),
        last_clock=last_clock,
        accepted_hashes=accepted_hashes,
    )
    posture = appraise_any(verified, reference, event_log)
    clock = (verified.clock_info.reset_count, verified.clock_info.clock)
    return Attested(posture, verified, ToPersist(pending.challenge_id, pending.ek_hash, now, clock))
