"""TPM2_MakeCredential off the TPM (TPM 2.0 Library, Part 1 §24 "Credential Protection").

A verifier proves that an attestation key (AK) lives on the same TPM as an endorsement key
(EK): it wraps a secret so that only ``TPM2_ActivateCredential`` on that TPM, with that EK and
an AK of that name loaded, gives it back.

- A seed is shared with the EK: RSA-OAEP encrypted to it (label ``"IDENTITY\\0"``), or, for an
  ECC EK, derived by ECDH with an ephemeral key and KDFe (label ``"IDENTITY"``).
- ``symKey = KDFa(nameAlg, seed, "STORAGE", akName, "", symKeyBits)``;
  ``encIdentity = AES-CFB(symKey, IV=0, TPM2B_DIGEST(secret))``.
- ``hmacKey = KDFa(nameAlg, seed, "INTEGRITY", "", "", digestBits)``;
  ``integrityHMAC = HMAC(nameAlg, hmacKey, encIdentity || akName)``.

``nameAlg`` and the symmetric algorithm are the EK's, read from its ``TPM2B_PUBLIC`` by
:mod:`attestation._tpm` (the one TPM parser and hash table).
Errors: ``ParseError`` for malformed bytes, ``CredentialError`` for keys or algorithms this
module does not support.
"""

from __future__ import annotations

import hmac
import os
import struct
from dataclasses import dataclass

from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode

from attestation._errors import CredentialError, ParseError
from attestation._tpm import (
    ALG_AES,
    ALG_CFB,
    ALG_NULL,
    ATTR_DECRYPT,
    ATTR_RESTRICTED,
    HASH_IDS,
    HASHES,
    EccPoint,
    PublicArea,
    TpmHash,
    hash_algorithm,
    parse_public_2b,
)

__all__ = [
    "Credential",
    "kdfa",
    "kdfe",
    "make_credential",
    "parse_ek_public",
    "to_tpm2_tools_file",
]

# tpm2-tools' file header (lib/files.c files_write_header): magic, then a version.
_TPM2_TOOLS_MAGIC = 0xBADCC0DE
_TPM2_TOOLS_CREDENTIAL_VERSION = 1


def _hash(hash_alg: str) -> TpmHash:
    try:
        return HASHES[HASH_IDS[hash_alg]]
    except KeyError:
        raise CredentialError(f"unsupported hash algorithm {hash_alg!r}") from None


def _c_string(label: bytes) -> bytes:
    """The label as the TPM hashes it: with one terminating NUL (added when missing)."""
    if not label:
        raise CredentialError("a KDF label must not be empty")
    return label if label.endswith(b"\x00") else label + b"\x00"


def _mask(out: bytes, bits: int) -> bytes:
    """`out` (ceil(bits/8) bytes) with the unused high bits of the first byte cleared."""
    if bits % 8:
        out = bytes([out[0] & ((1 << (bits % 8)) - 1)]) + out[1:]
    return out


def kdfa(
    hash_alg: str, key: bytes, label: bytes, context_u: bytes, context_v: bytes, bits: int
) -> bytes:
    """KDFa (Part 1 §11.4.10.2): SP 800-108 counter-mode KDF with HMAC-``hash_alg``.

    Each block is ``HMAC(key, counter_be32 || label || 0x00 || contextU || contextV ||
    bits_be32)``: `cryptography`'s ``KBKDFHMAC`` in counter mode, a 32-bit counter before
    the fixed input. The fixed input is given whole, because KBKDFHMAC would write the
    length as 8 times the bytes, which is not ``bits`` when ``bits`` is not a multiple of 8.
    ``label`` is given with or without its terminating NUL (``b"STORAGE"`` and
    ``b"STORAGE\\0"`` derive the same key), as in the reference implementation. When
    ``bits`` is not a multiple of 8 the high bits of the first byte are cleared.
    Raises ``CredentialError`` for an unknown hash, an empty label, or ``bits < 1``.
    """
    if bits < 1:
        raise CredentialError("KDFa needs bits >= 1")
    kdf = KBKDFHMAC(
        algorithm=_hash(hash_alg).new(),
        mode=Mode.CounterMode,
        length=(bits + 7) // 8,
        rlen=4,
        llen=None,
        location=CounterLocation.BeforeFixed,
        label=None,
        context=None,
        fixed=_c_string(label) + context_u + context_v + struct.pack(">I", bits),
    )
    return _mask(kdf.derive(key), bits)


def kdfe(hash_alg: str, z: bytes, label: bytes, party_u: bytes, party_v: bytes, bits: int) -> bytes:
    """KDFe (Part 1 §11.4.10.3): SP 800-56A concatenation KDF with ``hash_alg``.

    Each block is ``H(counter_be32 || Z || label || 0x00 || partyUInfo || partyVInfo)``:
    `cryptography`'s ``ConcatKDFHash`` with ``label || 0x00 || partyUInfo || partyVInfo`` as
    its otherInfo. ``label`` with or without its NUL, and ``bits`` masked, as for
    :func:`kdfa`. Raises ``CredentialError`` for an unknown hash, an empty label, or
    ``bits < 1``.
    """
    if bits < 1:
        raise CredentialError("KDFe needs bits >= 1")
    kdf = ConcatKDFHash(
        algorithm=_hash(hash_alg).new(),
        length=(bits + 7) // 8,
        otherinfo=_c_string(label) + party_u + party_v,
    )
    return _mask(kdf.derive(z), bits)


@dataclass(frozen=True)
class Credential:
    """The output of TPM2_MakeCredential, both fields marshalled with their size prefix.

    ``credential_blob`` is a TPM2B_ID_OBJECT: ``size || TPM2B_DIGEST(integrityHMAC) ||
    encIdentity``; ``encrypted_secret`` is a TPM2B_ENCRYPTED_SECRET (the OAEP-encrypted seed
    for an RSA EK, a TPMS_ECC_POINT of the ephemeral key for an ECC EK).
    """

    credential_blob: bytes
    encrypted_secret: bytes


def parse_ek_public(tpm2b_public: bytes) -> PublicArea:
    """Read an EK's TPM2B_PUBLIC (as ``tpm2_createek -u`` writes it) with
    :func:`attestation._tpm.parse_public_2b` and check MakeCredential can wrap to it.

    Raises ``ParseError`` for malformed bytes or an invalid key and ``CredentialError`` for
    a key that is not a restricted decryption (storage) key with AES-CFB and a NULL scheme.
    """
    ek = parse_public_2b(tpm2b_public)
    symmetric = ek.parameters.symmetric
    if symmetric.algorithm == ALG_NULL:
        raise CredentialError("the EK has no symmetric algorithm: it is not a storage key")
    scheme = ek.parameters.scheme.scheme
    if scheme != ALG_NULL:
        raise CredentialError(f"EK scheme 0x{scheme:04x}: a storage key has a NULL scheme")
    if (
        symmetric.algorithm != ALG_AES
        or symmetric.mode != ALG_CFB
        or symmetric.key_bits not in (128, 192, 256)
    ):
        raise CredentialError(
            f"EK symmetric 0x{symmetric.algorithm:04x}/{symmetric.key_bits}/"
            f"0x{symmetric.mode:04x}: only AES-CFB supported"
        )
    if not ek.has(ATTR_RESTRICTED | ATTR_DECRYPT):
        raise CredentialError("the EK is not a restricted decryption (storage) key")
    ek.public_key()  # a ParseError now for a modulus or point that is not a key
    return ek


def _check_name(ak_name: bytes) -> None:
    if len(ak_name) < 2:
        raise ParseError("an AK name is nameAlg (2 bytes) || digest")
    alg_id = struct.unpack(">H", ak_name[:2])[0]
    hash_alg = HASHES.get(alg_id)
    if hash_alg is None:
        raise CredentialError(f"unsupported AK name algorithm 0x{alg_id:04x}")
    if len(ak_name) - 2 != hash_alg.digest_size:
        raise ParseError(f"AK name digest of {len(ak_name) - 2} bytes for {hash_alg.name}")


def _tpm2b(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def _aes_cfb_encrypt(key: bytes, plaintext: bytes) -> bytes:
    """AES-CFB128 with a zero IV (Part 1 §24.4).

    CFB lives in ``cryptography.hazmat.decrepit`` (every version this package allows,
    cryptography >= 47, has it there; ``primitives``' CFB is deprecated).
    """
    encryptor = Cipher(algorithms.AES(key), CFB(bytes(16))).encryptor()
    return encryptor.update(plaintext) + encryptor.finalize()


def _seed_rsa(name_alg: TpmHash, key: rsa.RSAPublicKey, seed: bytes | None) -> tuple[bytes, bytes]:
    size = name_alg.digest_size
    if seed is None:
        seed = os.urandom(size)
    elif len(seed) != size:
        raise CredentialError(f"the seed for a {name_alg.name} EK is {size} bytes")
    algorithm = name_alg.new()
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=b"IDENTITY\x00")
    try:
        encrypted = key.encrypt(seed, oaep)
    except ValueError as exc:
        raise CredentialError(f"cannot OAEP-encrypt the seed to the EK: {exc}") from exc
    return seed, encrypted


def _seed_ecc(
    name_alg: TpmHash,
    ek_x: bytes,
    key: ec.EllipticCurvePublicKey,
    ephemeral_key: ec.EllipticCurvePrivateKey | None,
) -> tuple[bytes, bytes]:
    if ephemeral_key is None:
        ephemeral_key = ec.generate_private_key(key.curve)
    elif ephemeral_key.curve.name != key.curve.name:
        raise CredentialError("the ephemeral key is not on the EK's curve")
    size = (key.curve.key_size + 7) // 8
    z = ephemeral_key.exchange(ec.ECDH(), key)
    numbers = ephemeral_key.public_key().public_numbers()
    x = numbers.x.to_bytes(size)
    y = numbers.y.to_bytes(size)
    seed = kdfe(name_alg.name, z, b"IDENTITY", x, ek_x, name_alg.digest_size * 8)
    return seed, _tpm2b(x) + _tpm2b(y)


def make_credential(
    ek_public: bytes,
    ak_name: bytes,
    secret: bytes,
    *,
    seed: bytes | None = None,
    ephemeral_key: ec.EllipticCurvePrivateKey | None = None,
) -> Credential:
    """Wrap ``secret`` for the TPM holding ``ek_public`` and an AK named ``ak_name``.

    ``ek_public`` is the EK's TPM2B_PUBLIC; ``ak_name`` is the AK's name (nameAlg ||
    digest, as ``tpm2_createak -n`` writes it); ``secret`` is 1 to digest-size-of-nameAlg
    bytes. ``seed`` (RSA EK) and ``ephemeral_key`` (ECC EK) fix the randomness, for tests.
    Raises ``ParseError`` for malformed inputs, ``CredentialError`` for unsupported keys.
    """
    ek = parse_ek_public(ek_public)
    _check_name(ak_name)
    name_alg = hash_algorithm(ek.name_alg)
    digest_size = name_alg.digest_size
    if not 1 <= len(secret) <= digest_size:
        raise CredentialError(
            f"the secret must be 1 to {digest_size} bytes for a {name_alg.name} EK"
        )
    public_key = ek.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        if ephemeral_key is not None:
            raise CredentialError("ephemeral_key applies to an ECC EK only")
        seed, encrypted_seed = _seed_rsa(name_alg, public_key, seed)
    else:
        if seed is not None:
            raise CredentialError("the seed of an ECC EK is derived: pass ephemeral_key")
        ek_x = ek.unique.x if isinstance(ek.unique, EccPoint) else b""  # always a point here
        seed, encrypted_seed = _seed_ecc(name_alg, ek_x, public_key, ephemeral_key)

    key_bits = ek.parameters.symmetric.key_bits
    sym_key = kdfa(name_alg.name, seed, b"STORAGE", ak_name, b"", key_bits)
    enc_identity = _aes_cfb_encrypt(sym_key, _tpm2b(secret))
    hmac_key = kdfa(name_alg.name, seed, b"INTEGRITY", b"", b"", digest_size * 8)
    integrity = hmac.digest(hmac_key, enc_identity + ak_name, name_alg.name)
    id_object = _tpm2b(integrity) + enc_identity
    return Credential(_tpm2b(id_object), _tpm2b(encrypted_seed))


def to_tpm2_tools_file(credential: Credential) -> bytes:
    """The file ``tpm2_makecredential -o`` writes and ``tpm2_activatecredential -i`` reads.

    Big-endian magic 0xBADCC0DE, version 1, then the TPM2B_ID_OBJECT and the
    TPM2B_ENCRYPTED_SECRET (tpm2-tools tools/tpm2_makecredential.c, lib/files.c).
    """
    header = struct.pack(">II", _TPM2_TOOLS_MAGIC, _TPM2_TOOLS_CREDENTIAL_VERSION)
    return header + credential.credential_blob + credential.encrypted_secret
