"""TPM2_MakeCredential in Python: KDF vectors, round trips through an activation written here
from the spec (Part 1 §24), and cross-checks against ``tpm2_makecredential -T none``."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from hypothesis import given
from hypothesis import strategies as st

from attestation._credential import (
    Credential,
    kdfa,
    kdfe,
    make_credential,
    parse_ek_public,
    to_tpm2_tools_file,
)
from attestation._errors import CredentialError, ParseError
from attestation._tpm import parse_public_2b

# --- KDF known answers: google/go-tpm legacy/tpm2/test/kdf_test.go (KDFe vectors there come
# from the Microsoft reference TPM simulator; the 521-bit KDFa one from Part 1's example).

KDFA_VECTORS = [
    pytest.param(
        "sha256",
        b"yolo\x00",
        b"IDENTITY",
        b"kek\x00",
        b"yoyo\x00",
        128,
        "d2d72cc7a8a5eb09e8c79012e2da9f22",
        id="sha256-128",
    ),
    pytest.param(
        "sha1",
        b"ca\x00",
        b"IDENTITY",
        b"abc\x00",
        b"",
        256,
        "83f354afcf923de2112e0891434cd0bdc8acbf01b811c0e8cd062ded39e31f7f",
        id="sha1-256",
    ),
    pytest.param(
        "sha1",
        bytes.fromhex("271fa08bbdc5060ec3dfa928ff9b73123a12da0c"),
        b"KDFSELFTESTLABEL",
        bytes.fromhex("ce244f395dca7391"),
        bytes.fromhex("da504031ddf12e83"),
        521,
        "01714e865072c1e4c40b3670281112632fc9ecba25e66af68d18a2b62de9cbb4"
        "4521da2bc9a496862eb3f306949f9efe8a9e1ccbce3b4d668ffd75c9394ba594"
        "58fe",
        id="sha1-521-not-multiple-of-8",
    ),
]

KDFE_VECTORS = [
    pytest.param(
        "sha256",
        "69fd74d052a5cd9d6addf4ea791f4737eb297246dce604f6385c1392e0fb56b9",
        "c29f8cff1ce054ed5945abd393ee2eed3f67437d9db07b932156c65d32921373",
        "107937dc44e5bb5094d3d30a55efac77b6db3253ba42dabc804446b93864e055",
        256,
        "b15267e3f960f8f8f3b94ff3fc64119f6876974f984f82d50bd54abc7a6406e8",
        id="p256-sha256",
    ),
    pytest.param(
        "sha1",
        "15f6ca836a6792ec4ab2c98984d98cd4b80fe96c0f4026d5e75c6f4f",
        "122fdd7505e1ded5811eac3835116c9c1cd5bfc6857484ba31530fb8",
        "5827b4214300636ed615e7560dd7aac4bb94c7c273dff110d2c3808a",
        160,
        "3c1e8e76de44af9efeea6ea7ce6b43396359e1c2",
        id="p224-sha1",
    ),
    pytest.param(
        "sha256",
        "9ec0691d3c5d35fbb2dcf082b0bb4d1df07ee0c5bf27251fffa973ee339e5e62",
        "68d62d3449e0db8c1af57adba15343bc34f2a6e76a9750f476e61862db8f0bec",
        "aab7cab361d8f31d0f6a98cc3c11bbe9983bf91fc4c53e90d5cb10eb74fd5c3a",
        100,
        "050054d3d778059120af6d0313",
        id="shorter-than-hash",
    ),
]


@pytest.mark.parametrize(("alg", "key", "label", "u", "v", "bits", "expected"), KDFA_VECTORS)
def test_kdfa_known_answers(
    alg: str, key: bytes, label: bytes, u: bytes, v: bytes, bits: int, expected: str
) -> None:
    assert kdfa(alg, key, label, u, v, bits).hex() == expected
    # The terminating NUL is implied: passing it explicitly derives the same bytes.
    assert kdfa(alg, key, label + b"\x00", u, v, bits).hex() == expected


@pytest.mark.parametrize(("alg", "z", "u", "v", "bits", "expected"), KDFE_VECTORS)
def test_kdfe_known_answers(alg: str, z: str, u: str, v: str, bits: int, expected: str) -> None:
    args = (bytes.fromhex(z), b"DUPLICATE", bytes.fromhex(u), bytes.fromhex(v), bits)
    assert kdfe(alg, *args).hex() == expected


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: kdfa("md5", b"k", b"L", b"", b"", 128), id="kdfa-unknown-hash"),
        pytest.param(lambda: kdfa("sha256", b"k", b"", b"", b"", 128), id="kdfa-empty-label"),
        pytest.param(lambda: kdfa("sha256", b"k", b"L", b"", b"", 0), id="kdfa-zero-bits"),
        pytest.param(lambda: kdfe("sha3", b"z", b"L", b"", b"", 128), id="kdfe-unknown-hash"),
        pytest.param(lambda: kdfe("sha256", b"z", b"L", b"", b"", 0), id="kdfe-zero-bits"),
    ],
)
def test_kdf_rejects_bad_parameters(call: Callable[[], bytes]) -> None:
    with pytest.raises(CredentialError):
        call()


# --- EK public areas built here, with their private keys for activation.

ATTRS_EK = 0x000300B2  # fixedTPM fixedParent sensitiveDataOrigin adminWithPolicy restricted decrypt
AES128_CFB = struct.pack(">HHH", 0x0006, 128, 0x0043)
NULL = struct.pack(">H", 0x0010)
CURVE_IDS = {"secp256r1": 0x0003, "secp384r1": 0x0004}


def tpm2b(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def rsa_ek_public(
    key: rsa.RSAPrivateKey, *, attrs: int = ATTRS_EK, sym: bytes = AES128_CFB, scheme: bytes = NULL
) -> bytes:
    n = key.public_key().public_numbers().n.to_bytes(key.key_size // 8)
    params = sym + scheme + struct.pack(">HI", key.key_size, 0)
    return tpm2b(struct.pack(">HHI", 0x0001, 0x000B, attrs) + tpm2b(bytes(32)) + params + tpm2b(n))


def ecc_ek_public(key: ec.EllipticCurvePrivateKey, *, name_alg: int = 0x000B) -> bytes:
    numbers = key.public_key().public_numbers()
    size = (key.curve.key_size + 7) // 8
    params = AES128_CFB + NULL + struct.pack(">H", CURVE_IDS[key.curve.name]) + NULL
    unique = tpm2b(numbers.x.to_bytes(size)) + tpm2b(numbers.y.to_bytes(size))
    head = struct.pack(">HHI", 0x0023, name_alg, ATTRS_EK) + tpm2b(bytes(32))
    return tpm2b(head + params + unique)


def ak_name(tag: bytes = b"ak") -> bytes:
    return b"\x00\x0b" + hashlib.sha256(tag).digest()


class ActivationError(Exception):
    pass


@dataclass
class Cursor:
    data: bytes
    pos: int = 0

    def sized(self) -> bytes:
        (n,) = struct.unpack_from(">H", self.data, self.pos)
        self.pos += 2 + n
        return self.data[self.pos - n : self.pos]


def activate(
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    name: bytes,
    credential: Credential,
) -> bytes:
    """TPM2_ActivateCredential for an SHA-256 / AES-128-CFB EK, from Part 1 §24 and Part 3."""
    secret_body = Cursor(credential.encrypted_secret).sized()
    if isinstance(private, rsa.RSAPrivateKey):
        oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), b"IDENTITY\x00")
        seed = private.decrypt(secret_body, oaep)
    else:
        point = Cursor(secret_body)
        x, y = point.sized(), point.sized()
        ephemeral = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x), int.from_bytes(y), private.curve
        ).public_key()
        z = private.exchange(ec.ECDH(), ephemeral)
        size = (private.curve.key_size + 7) // 8
        ek_x = private.public_key().public_numbers().x.to_bytes(size)
        seed = kdfe("sha256", z, b"IDENTITY", x, ek_x, 256)
    id_object = Cursor(Cursor(credential.credential_blob).sized())
    integrity = id_object.sized()
    enc_identity = id_object.data[id_object.pos :]
    hmac_key = kdfa("sha256", seed, b"INTEGRITY", b"", b"", 256)
    expected = hmac.digest(hmac_key, enc_identity + name, "sha256")
    if not hmac.compare_digest(integrity, expected):
        raise ActivationError("integrity HMAC mismatch")
    sym_key = kdfa("sha256", seed, b"STORAGE", name, b"", 128)
    decryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).decryptor()
    plain = decryptor.update(enc_identity) + decryptor.finalize()
    return Cursor(plain).sized()


def parse_tpm2_tools_file(data: bytes) -> Credential:
    assert data[:8] == bytes.fromhex("badcc0de00000001")
    cursor = Cursor(data, 8)
    blob = cursor.sized()
    secret = cursor.sized()
    assert cursor.pos == len(data)
    return Credential(tpm2b(blob), tpm2b(secret))


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


ECC_CURVES = [pytest.param(ec.SECP256R1(), id="p256"), pytest.param(ec.SECP384R1(), id="p384")]
SECRET = bytes(range(32))


def test_rsa_round_trip(rsa_key: rsa.RSAPrivateKey) -> None:
    credential = make_credential(rsa_ek_public(rsa_key), ak_name(), SECRET)
    assert activate(rsa_key, ak_name(), credential) == SECRET
    assert len(credential.encrypted_secret) == 2 + 256


@pytest.mark.parametrize("curve", ECC_CURVES)
def test_ecc_round_trip(curve: ec.EllipticCurve) -> None:
    key = ec.generate_private_key(curve)
    credential = make_credential(ecc_ek_public(key), ak_name(), b"short secret")
    assert activate(key, ak_name(), credential) == b"short secret"


def test_rsa_wrong_ak_name_fails_integrity(rsa_key: rsa.RSAPrivateKey) -> None:
    credential = make_credential(rsa_ek_public(rsa_key), ak_name(b"ak"), SECRET)
    with pytest.raises(ActivationError):
        activate(rsa_key, ak_name(b"another ak"), credential)


def test_ecc_wrong_ak_name_fails_integrity() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    credential = make_credential(ecc_ek_public(key), ak_name(b"ak"), SECRET)
    with pytest.raises(ActivationError):
        activate(key, ak_name(b"another ak"), credential)


def test_fixed_randomness_is_deterministic(rsa_key: rsa.RSAPrivateKey) -> None:
    ecc = ec.generate_private_key(ec.SECP256R1())
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    ecc_public = ecc_ek_public(ecc)
    first = make_credential(ecc_public, ak_name(), SECRET, ephemeral_key=ephemeral)
    again = make_credential(ecc_public, ak_name(), SECRET, ephemeral_key=ephemeral)
    assert first == again
    # OAEP is randomised, but with the seed fixed the identity blob is not.
    seed = bytes(32)
    rsa_public = rsa_ek_public(rsa_key)
    one = make_credential(rsa_public, ak_name(), SECRET, seed=seed)
    two = make_credential(rsa_public, ak_name(), SECRET, seed=seed)
    assert one.credential_blob == two.credential_blob
    assert one.encrypted_secret != two.encrypted_secret


def test_tpm2_tools_file_layout() -> None:
    credential = Credential(credential_blob=b"\x00\x02ab", encrypted_secret=b"\x00\x01c")
    assert (
        to_tpm2_tools_file(credential) == bytes.fromhex("badcc0de00000001") + b"\x00\x02ab\x00\x01c"
    )


# --- tpm2-tools' own offline MakeCredential, activated by the same code as ours.

needs_tpm2_tools = pytest.mark.skipif(
    shutil.which("tpm2_makecredential") is None, reason="tpm2-tools not installed"
)


def tpm2_tools_make_credential(tmp_path: Path, ek_public: bytes, name: bytes) -> Credential:
    (tmp_path / "ek.pub").write_bytes(ek_public)
    (tmp_path / "secret.bin").write_bytes(SECRET)
    subprocess.run(
        [
            "tpm2_makecredential",
            "-T",
            "none",
            "-u",
            str(tmp_path / "ek.pub"),
            "-s",
            str(tmp_path / "secret.bin"),
            "-n",
            name.hex(),
            "-o",
            str(tmp_path / "out.cred"),
        ],
        check=True,
        capture_output=True,
    )
    return parse_tpm2_tools_file((tmp_path / "out.cred").read_bytes())


@needs_tpm2_tools
def test_activation_reads_tpm2_tools_rsa_credential(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    theirs = tpm2_tools_make_credential(tmp_path, rsa_ek_public(rsa_key), ak_name())
    assert activate(rsa_key, ak_name(), theirs) == SECRET
    ours = make_credential(rsa_ek_public(rsa_key), ak_name(), SECRET)
    assert len(ours.credential_blob) == len(theirs.credential_blob)
    assert len(ours.encrypted_secret) == len(theirs.encrypted_secret)


@needs_tpm2_tools
def test_activation_reads_tpm2_tools_ecc_credential(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    theirs = tpm2_tools_make_credential(tmp_path, ecc_ek_public(key), ak_name())
    assert activate(key, ak_name(), theirs) == SECRET
    ours = make_credential(ecc_ek_public(key), ak_name(), SECRET)
    assert len(ours.credential_blob) == len(theirs.credential_blob)
    # TPM2B_ENCRYPTED_SECRET(TPMS_ECC_POINT): ours has full-width coordinates; tpm2-tools
    # drops leading zero bytes (about 1 credential in 128 is a byte or two shorter).
    assert len(ours.encrypted_secret) == 2 + 2 * (2 + 32)
    assert len(theirs.encrypted_secret) <= len(ours.encrypted_secret)


# --- Refusals.


def _rsa_variant(key: rsa.RSAPrivateKey, **kwargs: object) -> bytes:
    return rsa_ek_public(key, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("variant", "error"),
    [
        pytest.param({"attrs": 0x00020072}, CredentialError, id="not-restricted"),
        pytest.param({"sym": NULL}, CredentialError, id="no-symmetric"),
        pytest.param(
            {"sym": struct.pack(">HHH", 0x0006, 128, 0x0044)}, CredentialError, id="aes-cbc"
        ),
        pytest.param({"scheme": struct.pack(">HH", 0x0017, 0x000B)}, CredentialError, id="oaep"),
    ],
)
def test_unsupported_ek_is_refused(
    rsa_key: rsa.RSAPrivateKey, variant: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        make_credential(_rsa_variant(rsa_key, **variant), ak_name(), SECRET)


@pytest.mark.parametrize(
    ("name", "secret", "error"),
    [
        pytest.param(b"\x00", SECRET, ParseError, id="name-too-short"),
        pytest.param(b"\x00\x0b" + bytes(20), SECRET, ParseError, id="name-wrong-length"),
        pytest.param(b"\x00\x12" + bytes(32), SECRET, CredentialError, id="name-unknown-alg"),
        pytest.param(ak_name(), bytes(33), CredentialError, id="secret-too-long"),
        pytest.param(ak_name(), b"", CredentialError, id="secret-empty"),
    ],
)
def test_bad_name_or_secret_is_refused(
    rsa_key: rsa.RSAPrivateKey, name: bytes, secret: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error):
        make_credential(rsa_ek_public(rsa_key), name, secret)


def test_randomness_of_the_wrong_kind_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    ecc = ecc_ek_public(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(CredentialError):
        make_credential(ecc, ak_name(), SECRET, seed=bytes(32))
    with pytest.raises(CredentialError):
        make_credential(
            rsa_ek_public(rsa_key),
            ak_name(),
            SECRET,
            ephemeral_key=ec.generate_private_key(ec.SECP256R1()),
        )
    with pytest.raises(CredentialError):
        make_credential(rsa_ek_public(rsa_key), ak_name(), SECRET, seed=bytes(16))


def test_truncated_or_padded_ek_public_is_a_parse_error(rsa_key: rsa.RSAPrivateKey) -> None:
    public = rsa_ek_public(rsa_key)
    for cut in range(len(public)):
        with pytest.raises(ParseError):
            parse_ek_public(public[:cut])
    with pytest.raises(ParseError):
        parse_ek_public(public + b"\x00")


@given(st.binary(max_size=600))
def test_parser_raises_only_its_own_errors(data: bytes) -> None:
    with contextlib.suppress(ParseError, CredentialError):
        parse_ek_public(data)


def test_ek_public_is_read_by_the_one_tpm_parser() -> None:
    # swtpm's RSA EK (fixtures/ek.pub): the MakeCredential view is _tpm's PublicArea itself.
    data = (Path(__file__).parent / "fixtures" / "ek.pub").read_bytes()
    assert parse_ek_public(data) == parse_public_2b(data)


def test_ek_with_an_unknown_name_alg_is_a_parse_error(rsa_key: rsa.RSAPrivateKey) -> None:
    public = bytearray(rsa_ek_public(rsa_key))
    public[4:6] = b"\x00\x12"  # nameAlg (after size and type)
    with pytest.raises(ParseError, match="TPMT_PUBLIC nameAlg: unknown hash algorithm 0x0012"):
        parse_ek_public(bytes(public))
