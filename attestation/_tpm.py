"""TPM 2.0 structures: strict parsers and pure verification helpers.

Parsers read the big-endian marshalling of TPM 2.0 Library Part 2 and return frozen
dataclasses. They are strict: every length is checked, trailing bytes are rejected and an
unknown algorithm, tag or curve is a `ParseError`. Nothing here does I/O. This is the one
place TPM structures are parsed (the AK's and the EK's TPM2B_PUBLIC alike) and the one hash
table (`HASHES`: TPM_ALG_ID -> name, `cryptography` class, digest size) every other module
of the package reads.

    HASHES / HASH_IDS / hash_algorithm   TPM_ALG_ID <-> hash name, class, digest size
    parse_public / parse_public_2b   TPMT_PUBLIC / TPM2B_PUBLIC      -> PublicArea
    parse_attest                     TPMS_ATTEST (quotes only)       -> Attest
    parse_signature                  TPMT_SIGNATURE                  -> Signature
    parse_pcr_selection              TPML_PCR_SELECTION              -> tuple[PcrSelection, ...]
    verify_quote_signature           AK + attest bytes + signature   -> None or EvidenceError
    pcr_digest                       selection + PCR values          -> digest bytes
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, TypeAlias

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from attestation._errors import EvidenceError, ParseError

# TPM_ALG_ID values (Part 2, table 9).
ALG_RSA: Final = 0x0001
ALG_SHA1: Final = 0x0004
ALG_AES: Final = 0x0006
ALG_MGF1: Final = 0x0007
ALG_SHA256: Final = 0x000B
ALG_SHA384: Final = 0x000C
ALG_SHA512: Final = 0x000D
ALG_NULL: Final = 0x0010
ALG_SM4: Final = 0x0013
ALG_RSASSA: Final = 0x0014
ALG_RSAES: Final = 0x0015
ALG_RSAPSS: Final = 0x0016
ALG_OAEP: Final = 0x0017
ALG_ECDSA: Final = 0x0018
ALG_ECDH: Final = 0x0019
ALG_ECDAA: Final = 0x001A
ALG_SM2: Final = 0x001B
ALG_ECSCHNORR: Final = 0x001C
ALG_ECMQV: Final = 0x001D
ALG_KDF1_SP800_56A: Final = 0x0020
ALG_KDF2: Final = 0x0021
ALG_KDF1_SP800_108: Final = 0x0022
ALG_ECC: Final = 0x0023
ALG_CAMELLIA: Final = 0x0026
ALG_CTR: Final = 0x0040
ALG_OFB: Final = 0x0041
ALG_CBC: Final = 0x0042
ALG_CFB: Final = 0x0043
ALG_ECB: Final = 0x0044

# TPM_ECC_CURVE values.
ECC_NIST_P256: Final = 0x0003
ECC_NIST_P384: Final = 0x0004
ECC_NIST_P521: Final = 0x0005

TPM_GENERATED_VALUE: Final = 0xFF544347
TPM_ST_ATTEST_QUOTE: Final = 0x8018

# objectAttributes bits (TPMA_OBJECT, Part 2 §8.3).
ATTR_FIXED_TPM: Final = 1 << 1
ATTR_ST_CLEAR: Final = 1 << 2
ATTR_FIXED_PARENT: Final = 1 << 4
ATTR_SENSITIVE_DATA_ORIGIN: Final = 1 << 5
ATTR_USER_WITH_AUTH: Final = 1 << 6
ATTR_ADMIN_WITH_POLICY: Final = 1 << 7
ATTR_NO_DA: Final = 1 << 10
ATTR_ENCRYPTED_DUPLICATION: Final = 1 << 11
ATTR_RESTRICTED: Final = 1 << 16
ATTR_DECRYPT: Final = 1 << 17
ATTR_SIGN: Final = 1 << 18


@dataclass(frozen=True)
class TpmHash:
    """One TPM hash algorithm: its TPM_ALG_ID, its hashlib name, its `cryptography` class
    and its digest size in bytes."""

    alg_id: int
    name: str
    algorithm: type[hashes.HashAlgorithm]
    digest_size: int

    def new(self) -> hashes.HashAlgorithm:
        """A `cryptography` instance of this hash (for HMAC, KDFs, signatures)."""
        return self.algorithm()


HASHES: Final[Mapping[int, TpmHash]] = MappingProxyType(
    {
        h.alg_id: h
        for h in (
            TpmHash(ALG_SHA1, "sha1", hashes.SHA1, 20),
            TpmHash(ALG_SHA256, "sha256", hashes.SHA256, 32),
            TpmHash(ALG_SHA384, "sha384", hashes.SHA384, 48),
            TpmHash(ALG_SHA512, "sha512", hashes.SHA512, 64),
        )
    }
)
"""The one hash table of the package: TPM_ALG_ID -> TpmHash, in ascending id order."""
HASH_IDS: Final[Mapping[str, int]] = MappingProxyType({h.name: h.alg_id for h in HASHES.values()})
"""Hash name ("sha256") -> TPM_ALG_ID, in the order of `HASHES`."""
_CURVES: Final[dict[int, type[ec.EllipticCurve]]] = {
    ECC_NIST_P256: ec.SECP256R1,
    ECC_NIST_P384: ec.SECP384R1,
    ECC_NIST_P521: ec.SECP521R1,
}
_SYM_ALGS: Final = frozenset({ALG_AES, ALG_SM4, ALG_CAMELLIA})
_SYM_MODES: Final = frozenset({ALG_CTR, ALG_OFB, ALG_CBC, ALG_CFB, ALG_ECB, ALG_NULL})
_RSA_SCHEMES: Final = frozenset({ALG_RSASSA, ALG_RSAPSS, ALG_OAEP})  # all with a hashAlg
_ECC_SCHEMES: Final = frozenset({ALG_ECDSA, ALG_ECDH, ALG_SM2, ALG_ECSCHNORR, ALG_ECMQV})
_KDF_SCHEMES: Final = frozenset({ALG_MGF1, ALG_KDF1_SP800_56A, ALG_KDF2, ALG_KDF1_SP800_108})

# Buffer bounds from the TPMU unions (largest digest, name, key sizes).
_MAX_DIGEST: Final = 64
_MAX_NAME: Final = 2 + _MAX_DIGEST
_MAX_DATA: Final = 2 + _MAX_DIGEST
_MAX_RSA_BYTES: Final = 512
_MAX_ECC_BYTES: Final = 66
_MAX_PCR_BANKS: Final = 16
_MAX_SIZEOF_SELECT: Final = 4


def hash_algorithm(alg: int) -> TpmHash:
    """The entry of `HASHES` for a TPM_ALG_ID; raises ParseError when unknown."""
    try:
        return HASHES[alg]
    except KeyError:
        raise ParseError(f"unknown hash algorithm 0x{alg:04x}") from None


def hash_name(alg: int) -> str:
    """The hashlib name of a TPM hash algorithm; raises ParseError when unknown."""
    return hash_algorithm(alg).name


def digest_size(alg: int) -> int:
    """The digest size in bytes of a TPM hash algorithm; raises ParseError when unknown."""
    return hash_algorithm(alg).digest_size


class _Reader:
    """A cursor over bytes that raises ParseError instead of reading past the end."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = bytes(data)
        self._pos = 0
        self._what = what

    def take(self, n: int) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise ParseError(
                f"{self._what}: truncated at offset {self._pos} (need {n} more bytes, "
                f"have {len(self._data) - self._pos})"
            )
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "big")

    def tpm2b(self, max_size: int, label: str) -> bytes:
        size = self.u16()
        if size > max_size:
            raise ParseError(f"{self._what}: {label} of {size} bytes exceeds {max_size}")
        return self.take(size)

    @property
    def offset(self) -> int:
        return self._pos

    def slice(self, start: int, end: int) -> bytes:
        return self._data[start:end]

    def finish(self) -> None:
        extra = len(self._data) - self._pos
        if extra:
            raise ParseError(f"{self._what}: {extra} trailing bytes")


def _hash_alg(r: _Reader, label: str) -> int:
    alg = r.u16()
    if alg not in HASHES:
        raise ParseError(f"{label}: unknown hash algorithm 0x{alg:04x}")
    return alg


# --- TPMT_PUBLIC -------------------------------------------------------------------------


@dataclass(frozen=True)
class SymDef:
    """TPMT_SYM_DEF_OBJECT: `algorithm` is ALG_NULL for a key without a symmetric part."""

    algorithm: int
    key_bits: int = 0
    mode: int = ALG_NULL


@dataclass(frozen=True)
class Scheme:
    """A TPMT_*_SCHEME: `hash_alg` is ALG_NULL when the scheme is null or has no hash."""

    scheme: int
    hash_alg: int = ALG_NULL
    count: int = 0  # ECDAA only


@dataclass(frozen=True)
class RsaParameters:
    """TPMS_RSA_PARMS; `exponent` is the effective exponent (0 on the wire means 65537)."""

    symmetric: SymDef
    scheme: Scheme
    key_bits: int
    exponent: int


@dataclass(frozen=True)
class EccParameters:
    """TPMS_ECC_PARMS."""

    symmetric: SymDef
    scheme: Scheme
    curve_id: int
    kdf: Scheme


@dataclass(frozen=True)
class EccPoint:
    """TPMS_ECC_POINT: big-endian coordinates."""

    x: bytes
    y: bytes


@dataclass(frozen=True)
class PublicArea:
    """A parsed TPMT_PUBLIC. `raw` holds the marshalled bytes that `name()` hashes."""

    type: int
    name_alg: int
    object_attributes: int
    auth_policy: bytes
    parameters: RsaParameters | EccParameters
    unique: bytes | EccPoint  # RSA modulus or ECC point
    raw: bytes = field(repr=False)

    def has(self, attributes: int) -> bool:
        """Whether every TPMA_OBJECT bit in ``attributes`` (``ATTR_…``, or'ed) is set."""
        return self.object_attributes & attributes == attributes

    def name(self) -> bytes:
        """The TPM name: nameAlg (2 bytes) || H_nameAlg(marshalled TPMT_PUBLIC)."""
        return (
            self.name_alg.to_bytes(2, "big")
            + hashlib.new(hash_name(self.name_alg), self.raw).digest()
        )

    def public_key(self) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
        """The key as a cryptography object; raises ParseError if it is not a valid key."""
        params = self.parameters
        try:
            if isinstance(params, RsaParameters):
                modulus = self.unique
                if not isinstance(modulus, bytes) or len(modulus) * 8 != params.key_bits:
                    raise ParseError(f"RSA modulus is not {params.key_bits} bits")
                n = int.from_bytes(modulus, "big")
                return rsa.RSAPublicNumbers(params.exponent, n).public_key()
            point = self.unique
            curve = _CURVES[params.curve_id]()
            size = (curve.key_size + 7) // 8
            if not isinstance(point, EccPoint) or len(point.x) != size or len(point.y) != size:
                raise ParseError(f"ECC point coordinates are not {size} bytes")
            return ec.EllipticCurvePublicNumbers(
                int.from_bytes(point.x, "big"), int.from_bytes(point.y, "big"), curve
            ).public_key()
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise ParseError(f"invalid public key: {exc}") from exc


def _sym_def(r: _Reader) -> SymDef:
    alg = r.u16()
    if alg == ALG_NULL:
        return SymDef(ALG_NULL)
    if alg not in _SYM_ALGS:
        raise ParseError(f"TPMT_PUBLIC: unknown symmetric algorithm 0x{alg:04x}")
    key_bits = r.u16()
    mode = r.u16()
    if mode not in _SYM_MODES:
        raise ParseError(f"TPMT_PUBLIC: unknown symmetric mode 0x{mode:04x}")
    return SymDef(alg, key_bits, mode)


def _rsa_scheme(r: _Reader) -> Scheme:
    scheme = r.u16()
    if scheme in (ALG_NULL, ALG_RSAES):
        return Scheme(scheme)
    if scheme not in _RSA_SCHEMES:
        raise ParseError(f"TPMT_PUBLIC: unknown RSA scheme 0x{scheme:04x}")
    return Scheme(scheme, _hash_alg(r, "RSA scheme"))


def _ecc_scheme(r: _Reader) -> Scheme:
    scheme = r.u16()
    if scheme == ALG_NULL:
        return Scheme(scheme)
    if scheme == ALG_ECDAA:
        return Scheme(scheme, _hash_alg(r, "ECDAA scheme"), r.u16())
    if scheme not in _ECC_SCHEMES:
        raise ParseError(f"TPMT_PUBLIC: unknown ECC scheme 0x{scheme:04x}")
    return Scheme(scheme, _hash_alg(r, "ECC scheme"))


def _kdf_scheme(r: _Reader) -> Scheme:
    scheme = r.u16()
    if scheme == ALG_NULL:
        return Scheme(scheme)
    if scheme not in _KDF_SCHEMES:
        raise ParseError(f"TPMT_PUBLIC: unknown KDF scheme 0x{scheme:04x}")
    return Scheme(scheme, _hash_alg(r, "KDF scheme"))


def _read_public(r: _Reader) -> PublicArea:
    start = r.offset
    key_type = r.u16()
    if key_type not in (ALG_RSA, ALG_ECC):
        raise ParseError(f"TPMT_PUBLIC: unsupported key type 0x{key_type:04x}")
    name_alg = _hash_alg(r, "TPMT_PUBLIC nameAlg")
    attributes = r.u32()
    auth_policy = r.tpm2b(_MAX_DIGEST, "authPolicy")
    parameters: RsaParameters | EccParameters
    unique: bytes | EccPoint
    if key_type == ALG_RSA:
        symmetric = _sym_def(r)
        scheme = _rsa_scheme(r)
        key_bits = r.u16()
        exponent = r.u32() or 65537
        parameters = RsaParameters(symmetric, scheme, key_bits, exponent)
        unique = r.tpm2b(_MAX_RSA_BYTES, "RSA modulus")
    else:
        symmetric = _sym_def(r)
        scheme = _ecc_scheme(r)
        curve_id = r.u16()
        if curve_id not in _CURVES:
            raise ParseError(f"TPMT_PUBLIC: unknown ECC curve 0x{curve_id:04x}")
        parameters = EccParameters(symmetric, scheme, curve_id, _kdf_scheme(r))
        x = r.tpm2b(_MAX_ECC_BYTES, "ECC x")
        unique = EccPoint(x, r.tpm2b(_MAX_ECC_BYTES, "ECC y"))
    raw = r.slice(start, r.offset)
    return PublicArea(key_type, name_alg, attributes, auth_policy, parameters, unique, raw)


def parse_public(data: bytes) -> PublicArea:
    """Parse a bare TPMT_PUBLIC (RSA or ECC); raises ParseError when malformed."""
    r = _Reader(data, "TPMT_PUBLIC")
    public = _read_public(r)
    r.finish()
    return public


def parse_public_2b(data: bytes) -> PublicArea:
    """Parse a TPM2B_PUBLIC (what ``tpm2_createak -u`` writes); raises ParseError."""
    r = _Reader(data, "TPM2B_PUBLIC")
    size = r.u16()
    inner = r.take(size)
    r.finish()
    return parse_public(inner)


# --- TPML_PCR_SELECTION ------------------------------------------------------------------


@dataclass(frozen=True)
class PcrSelection:
    """One TPMS_PCR_SELECTION: a hash bank and the PCR indices selected in it."""

    hash_alg: int
    pcrs: frozenset[int]
    size_of_select: int = 3


def _read_pcr_selection(r: _Reader) -> tuple[PcrSelection, ...]:
    count = r.u32()
    if count > _MAX_PCR_BANKS:
        raise ParseError(f"TPML_PCR_SELECTION: {count} banks exceeds {_MAX_PCR_BANKS}")
    banks = []
    for _ in range(count):
        alg = _hash_alg(r, "TPMS_PCR_SELECTION")
        size = r.u8()
        if size > _MAX_SIZEOF_SELECT:
            raise ParseError(f"TPMS_PCR_SELECTION: sizeofSelect {size} too large")
        bitmap = r.take(size)
        # Byte i, bit j selects PCR 8*i + j (Part 2 §10.6.1).
        pcrs = frozenset(8 * i + j for i, b in enumerate(bitmap) for j in range(8) if b >> j & 1)
        banks.append(PcrSelection(alg, pcrs, size))
    return tuple(banks)


def parse_pcr_selection(data: bytes) -> tuple[PcrSelection, ...]:
    """Parse a TPML_PCR_SELECTION; raises ParseError when malformed."""
    r = _Reader(data, "TPML_PCR_SELECTION")
    selection = _read_pcr_selection(r)
    r.finish()
    return selection


# --- TPMS_ATTEST -------------------------------------------------------------------------


@dataclass(frozen=True)
class ClockInfo:
    """TPMS_CLOCK_INFO."""

    clock: int
    reset_count: int
    restart_count: int
    safe: bool


@dataclass(frozen=True)
class Attest:
    """A parsed TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE (not yet verified)."""

    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    pcr_select: tuple[PcrSelection, ...]
    pcr_digest: bytes


def parse_attest(data: bytes) -> Attest:
    """Parse a TPMS_ATTEST holding a quote.

    Raises ParseError when malformed, when the magic is not TPM_GENERATED_VALUE or when
    the attestation type is anything but TPM_ST_ATTEST_QUOTE.
    """
    r = _Reader(data, "TPMS_ATTEST")
    magic = r.u32()
    if magic != TPM_GENERATED_VALUE:
        raise ParseError(f"TPMS_ATTEST: magic 0x{magic:08x} is not TPM_GENERATED_VALUE")
    attest_type = r.u16()
    if attest_type != TPM_ST_ATTEST_QUOTE:
        raise ParseError(f"TPMS_ATTEST: unsupported attestation type 0x{attest_type:04x}")
    signer = r.tpm2b(_MAX_NAME, "qualifiedSigner")
    extra_data = r.tpm2b(_MAX_DATA, "extraData")
    clock = r.u64()
    reset_count = r.u32()
    restart_count = r.u32()
    safe = r.u8()
    if safe > 1:
        raise ParseError(f"TPMS_ATTEST: clockInfo.safe is {safe}, not YES/NO")
    firmware = r.u64()
    selection = _read_pcr_selection(r)
    digest = r.tpm2b(_MAX_DIGEST, "pcrDigest")
    r.finish()
    clock_info = ClockInfo(clock, reset_count, restart_count, bool(safe))
    return Attest(magic, attest_type, signer, extra_data, clock_info, firmware, selection, digest)


# --- TPMT_SIGNATURE ----------------------------------------------------------------------


@dataclass(frozen=True)
class RsaSignature:
    """TPMS_SIGNATURE_RSA under RSASSA or RSAPSS."""

    sig_alg: int
    hash_alg: int
    sig: bytes


@dataclass(frozen=True)
class EcdsaSignature:
    """TPMS_SIGNATURE_ECDSA: big-endian r and s."""

    hash_alg: int
    r: bytes
    s: bytes

    @property
    def sig_alg(self) -> int:
        return ALG_ECDSA


Signature: TypeAlias = RsaSignature | EcdsaSignature


def parse_signature(data: bytes) -> Signature:
    """Parse a TPMT_SIGNATURE (RSASSA, RSAPSS or ECDSA); raises ParseError."""
    r = _Reader(data, "TPMT_SIGNATURE")
    sig_alg = r.u16()
    sig: Signature
    if sig_alg in (ALG_RSASSA, ALG_RSAPSS):
        hash_alg = _hash_alg(r, "TPMT_SIGNATURE")
        sig = RsaSignature(sig_alg, hash_alg, r.tpm2b(_MAX_RSA_BYTES, "RSA signature"))
    elif sig_alg == ALG_ECDSA:
        hash_alg = _hash_alg(r, "TPMT_SIGNATURE")
        sig_r = r.tpm2b(_MAX_ECC_BYTES, "ECDSA r")
        sig = EcdsaSignature(hash_alg, sig_r, r.tpm2b(_MAX_ECC_BYTES, "ECDSA s"))
    else:
        raise ParseError(f"TPMT_SIGNATURE: unsupported signature algorithm 0x{sig_alg:04x}")
    r.finish()
    return sig


# --- verification ------------------------------------------------------------------------


def verify_quote_signature(ak: PublicArea, attest_bytes: bytes, sig: Signature) -> None:
    """Check that `sig` is the AK's signature over `attest_bytes` (a marshalled TPMS_ATTEST).

    The AK must be a restricted signing key (only then does TPM_GENERATED_VALUE mean the
    TPM made the structure), the signature algorithm must fit the key type and, when the
    key has a scheme, equal it in algorithm and hash. Raises EvidenceError otherwise or
    when the signature does not verify; ParseError when the AK is not a valid key.
    """
    if not ak.has(ATTR_SIGN | ATTR_RESTRICTED):
        raise EvidenceError("the AK is not a restricted signing key")
    scheme = ak.parameters.scheme
    if scheme.scheme != ALG_NULL and (sig.sig_alg, sig.hash_alg) != (
        scheme.scheme,
        scheme.hash_alg,
    ):
        raise EvidenceError(
            f"signature scheme 0x{sig.sig_alg:04x}/0x{sig.hash_alg:04x} is not the AK's "
            f"0x{scheme.scheme:04x}/0x{scheme.hash_alg:04x}"
        )
    algorithm = hash_algorithm(sig.hash_alg).new()
    key = ak.public_key()
    try:
        if isinstance(sig, RsaSignature):
            if not isinstance(key, rsa.RSAPublicKey):
                raise EvidenceError("an RSA signature cannot come from an ECC AK")
            pad: padding.AsymmetricPadding
            if sig.sig_alg == ALG_RSAPSS:
                # TPMs use a salt as long as the digest; older ones the maximum. Both verify.
                pad = padding.PSS(padding.MGF1(algorithm), padding.PSS.AUTO)
            else:
                pad = padding.PKCS1v15()
            key.verify(sig.sig, attest_bytes, pad, algorithm)
        else:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise EvidenceError("an ECDSA signature cannot come from an RSA AK")
            der = encode_dss_signature(int.from_bytes(sig.r, "big"), int.from_bytes(sig.s, "big"))
            key.verify(der, attest_bytes, ec.ECDSA(algorithm))
    except InvalidSignature:
        raise EvidenceError("the quote signature does not verify with the AK") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise EvidenceError(f"the quote signature cannot be checked: {exc}") from exc


def pcr_digest(
    selection: Sequence[PcrSelection],
    values: Mapping[tuple[int, int], bytes],
    hash_alg: int,
) -> bytes:
    """The digest a quote carries for `selection`: H(concatenated PCR values).

    `values` maps (bank hash alg, PCR index) to the PCR value. Values are concatenated
    bank by bank in selection order, ascending PCR index within a bank, and hashed with
    `hash_alg` — the quote's signing scheme hash, not the banks' hash. Raises EvidenceError
    when a selected PCR has no value or a value of the wrong length; ParseError when an
    algorithm is unknown.
    """
    h = hashlib.new(hash_name(hash_alg))
    for bank in selection:
        size = digest_size(bank.hash_alg)
        for index in sorted(bank.pcrs):
            try:
                value = values[(bank.hash_alg, index)]
            except KeyError:
                raise EvidenceError(
                    f"no value for PCR {hash_name(bank.hash_alg)}:{index}"
                ) from None
            if len(value) != size:
                raise EvidenceError(
                    f"PCR {hash_name(bank.hash_alg)}:{index} is {len(value)} bytes, not {size}"
                )
            h.update(value)
    return h.digest()
