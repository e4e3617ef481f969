"""The certificate authority: chains that verify with cryptography's X.509 verifier, the
SVID profile, refusals, JWT-SVIDs, rotation overlap and the files on disk."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import DNSName, IPAddress
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from attestation._ca import (
    JWT_POSTURE_CLAIM,
    MAX_JWT_TTL,
    MAX_SVID_TTL,
    POSTURE_EXTENSION,
    CAError,
    CertificateAuthority,
    RevocationList,
    TokenError,
    jwk_thumbprint,
    load_revocations,
    parse_spiffe_id,
)
from attestation._ca.authority import _posture_extension, _read_posture

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TD = "example.org"
SPIFFE_ID = "spiffe://example.org/ns/prod/sa/web"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create(TD, NOW)


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def verify_client(
    ca: CertificateAuthority, leaf: x509.Certificate, *chain: x509.Certificate, at: datetime = NOW
) -> list[x509.GeneralName]:
    verifier = PolicyBuilder().store(Store([ca.root])).time(at).build_client_verifier()
    return list(verifier.verify(leaf, list(chain)).subjects or [])


# --- RFC 7638 ----------------------------------------------------------------------------


def test_jwk_thumbprint_matches_pyjwt_rendering(key: ec.EllipticCurvePrivateKey) -> None:
    # Independent rendering: pyjwt's JWK export, hashed over the required members only.
    exported = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    required = {name: exported[name] for name in ("crv", "kty", "x", "y")}
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True).encode()
    digest = hashes.Hash(hashes.SHA256())
    digest.update(canonical)
    expected = base64.urlsafe_b64encode(digest.finalize()).rstrip(b"=").decode()
    assert jwk_thumbprint(key.public_key()) == expected


# --- SPIFFE IDs ----------------------------------------------------------------------------

SPIFFE_IDS = [
    pytest.param("spiffe://example.org/a", ("example.org", "/a"), id="one-segment"),
    pytest.param("spiffe://example.org/ns/x/sa/y", ("example.org", "/ns/x/sa/y"), id="nested"),
    pytest.param("spiffe://td-1_x.io/A.b-c_d", ("td-1_x.io", "/A.b-c_d"), id="allowed-chars"),
    pytest.param("spiffe://example.org", None, id="no-path"),
    pytest.param("spiffe://example.org/", None, id="empty-path"),
    pytest.param("spiffe://example.org/a/", None, id="trailing-slash"),
    pytest.param("spiffe://example.org/a//b", None, id="empty-segment"),
    pytest.param("spiffe://example.org/a/../b", None, id="dot-dot"),
    pytest.param("spiffe://example.org/./b", None, id="dot"),
    pytest.param("spiffe://example.org/a?x=1", None, id="query"),
    pytest.param("spiffe://example.org/a#f", None, id="fragment"),
    pytest.param("SPIFFE://example.org/a", None, id="uppercase-scheme"),
    pytest.param("spiffe://Example.org/a", None, id="uppercase-trust-domain"),
    pytest.param("spiffe://example.org:8080/a", None, id="port"),
    pytest.param("spiffe://user@example.org/a", None, id="userinfo"),
    pytest.param("https://example.org/a", None, id="other-scheme"),
    pytest.param("spiffe:///a", None, id="empty-trust-domain"),
    pytest.param("spiffe://example.org/a b", None, id="space"),
    pytest.param("spiffe://example.org/" + "a" * 2100, None, id="too-long"),
]


@pytest.mark.parametrize(("spiffe_id", "expected"), SPIFFE_IDS)
def test_parse_spiffe_id(spiffe_id: str, expected: tuple[str, str] | None) -> None:
    if expected is None:
        with pytest.raises(CAError):
            parse_spiffe_id(spiffe_id)
    else:
        assert parse_spiffe_id(spiffe_id) == expected


# --- the CA certificates -------------------------------------------------------------------


def test_root_and_intermediate_profile(ca: CertificateAuthority) -> None:
    root, issuing = ca.root, ca.issuing_certificate
    for cert, path_length, lifetime in [
        (root, 1, timedelta(days=3652)),
        (issuing, 0, timedelta(days=365)),
    ]:
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        assert basic.critical
        assert basic.value.ca
        assert basic.value.path_length == path_length
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
        assert usage.critical
        assert usage.value.key_cert_sign
        assert usage.value.crl_sign
        assert cert.not_valid_after_utc == NOW + lifetime
        assert cert.not_valid_before_utc == NOW - timedelta(minutes=1)
    root.verify_directly_issued_by(root)
    issuing.verify_directly_issued_by(root)


# --- X.509-SVIDs ---------------------------------------------------------------------------


def _csr(key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ignored")]))
        .sign(key, hashes.SHA256())
    )


SUBJECTS: list[Any] = [
    pytest.param(lambda k: k.public_key(), id="public-key"),
    pytest.param(_csr, id="csr"),
]


@pytest.mark.parametrize("subject", SUBJECTS)
@pytest.mark.parametrize("server", [False, True], ids=["client", "client+server"])
def test_svid_profile_and_chain(
    ca: CertificateAuthority,
    key: ec.EllipticCurvePrivateKey,
    subject: Callable[[ec.EllipticCurvePrivateKey], Any],
    server: bool,
) -> None:
    leaf, issuing = ca.issue_svid(subject(key), SPIFFE_ID, now=NOW, server=server)
    assert issuing == ca.issuing_certificate
    assert leaf.public_key() == key.public_key()
    assert verify_client(ca, leaf, issuing) == [x509.UniformResourceIdentifier(SPIFFE_ID)]

    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier(SPIFFE_ID)]
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_cert_sign
    basic = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical
    assert not basic.value.ca
    eku = set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    expected = {ExtendedKeyUsageOID.CLIENT_AUTH}
    if server:
        expected.add(ExtendedKeyUsageOID.SERVER_AUTH)
    assert eku == expected
    ski = leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    issuer_ski = issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == issuer_ski.digest
    assert 0 < leaf.serial_number < 2**128
    assert leaf.not_valid_before_utc == NOW - timedelta(minutes=1)
    assert leaf.not_valid_after_utc == NOW + timedelta(hours=1)


def test_svid_serials_differ(ca: CertificateAuthority, key: ec.EllipticCurvePrivateKey) -> None:
    serials = {ca.issue_svid(key.public_key(), SPIFFE_ID, now=NOW)[0].serial_number for _ in "abc"}
    assert len(serials) == 3


TTLS = [
    pytest.param(timedelta(minutes=10), NOW + timedelta(minutes=10), id="under-cap"),
    pytest.param(timedelta(hours=24), NOW + MAX_SVID_TTL, id="at-cap"),
    pytest.param(timedelta(days=30), NOW + MAX_SVID_TTL, id="capped"),
]


@pytest.mark.parametrize(("ttl", "not_after"), TTLS)
def test_svid_ttl_cap(
    ca: CertificateAuthority, key: ec.EllipticCurvePrivateKey, ttl: timedelta, not_after: datetime
) -> None:
    leaf, _ = ca.issue_svid(key.public_key(), SPIFFE_ID, now=NOW, ttl=ttl)
    assert leaf.not_valid_after_utc == not_after


def test_svid_never_outlives_intermediate(
    ca: CertificateAuthority, key: ec.EllipticCurvePrivateKey
) -> None:
    late = ca.issuing_certificate.not_valid_after_utc - timedelta(hours=2)
    leaf, _ = ca.issue_svid(key.public_key(), SPIFFE_ID, now=late, ttl=timedelta(hours=20))
    assert leaf.not_valid_after_utc == ca.issuing_certificate.not_valid_after_utc


def _bad_csr(key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    der = bytearray(_csr(key).public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the signature's last INTEGER
    return x509.load_der_x509_csr(bytes(der))


REFUSED: list[Any] = [
    pytest.param(lambda k: k.public_key(), "spiffe://other.org/a", {}, id="foreign-trust-domain"),
    pytest.param(lambda k: k.public_key(), "spiffe://example.org", {}, id="no-path"),
    pytest.param(lambda k: k.public_key(), "spiffe://example.org/a?b", {}, id="query"),
    pytest.param(lambda k: k.public_key(), "spiffe://example.org/a#b", {}, id="fragment"),
    pytest.param(lambda k: k.public_key(), "SPIFFE://example.org/a", {}, id="uppercase-scheme"),
    pytest.param(_bad_csr, SPIFFE_ID, {}, id="csr-bad-signature"),
    pytest.param(lambda k: k.public_key(), SPIFFE_ID, {"ttl": timedelta(0)}, id="zero-ttl"),
    pytest.param(
        lambda k: k.public_key(), SPIFFE_ID, {"now": datetime(2025, 3, 1)}, id="naive-now"
    ),
    pytest.param(
        lambda k: rsa.generate_private_key(65537, 1024).public_key(),
        SPIFFE_ID,
        {},
        id="rsa-1024",
    ),
]


@pytest.mark.parametrize(("subject", "spiffe_id", "kwargs"), REFUSED)
def test_svid_refused(
    ca: CertificateAuthority,
    key: ec.EllipticCurvePrivateKey,
    subject: Callable[[ec.EllipticCurvePrivateKey], Any],
    spiffe_id: str,
    kwargs: dict[str, Any],
) -> None:
    with pytest.raises(CAError):
        ca.issue_svid(subject(key), spiffe_id, **{"now": NOW, **kwargs})


def test_create_refuses_bad_trust_domain() -> None:
    with pytest.raises(CAError, match="trust domain"):
        CertificateAuthority.create("Example.org", NOW)


# --- server certificates -------------------------------------------------------------------


def test_server_cert_chains_with_dns_and_ip(ca: CertificateAuthority) -> None:
    credential = ca.issue_server_cert(
        ["webhook.docket.svc", "127.0.0.1"], now=NOW, ttl=timedelta(days=30)
    )
    leaf, issuing = credential.chain
    builder = PolicyBuilder().store(Store([ca.root])).time(NOW)
    for subject in (DNSName("webhook.docket.svc"), IPAddress(ipaddress.ip_address("127.0.0.1"))):
        builder.build_server_verifier(subject).verify(leaf, [issuing])
    eku = list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert eku == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert leaf.not_valid_after_utc == NOW + timedelta(days=30)
    assert credential.key.public_key() == leaf.public_key()
    assert credential.chain_pem().count(b"BEGIN CERTIFICATE") == 2


@pytest.mark.parametrize(
    "names", [[], ["bad name"], ["a.*.example"]], ids=["none", "space", "mid-wildcard"]
)
def test_server_cert_refused(ca: CertificateAuthority, names: list[str]) -> None:
    with pytest.raises(CAError):
        ca.issue_server_cert(names, now=NOW)


# --- JWT-SVIDs -----------------------------------------------------------------------------


def test_jwt_round_trip(ca: CertificateAuthority) -> None:
    posture = {"tpm": {"pcr_policy": "prod"}, "secure_boot": True}
    token = ca.issue_jwt(SPIFFE_ID, ["svc-a", "svc-b"], now=NOW, claims=posture)
    claims = ca.verify_jwt(token, "svc-b", NOW + timedelta(minutes=4))
    assert claims["sub"] == SPIFFE_ID
    assert claims["aud"] == ["svc-a", "svc-b"]
    assert claims[JWT_POSTURE_CLAIM] == posture
    assert claims["exp"] == int((NOW + MAX_JWT_TTL).timestamp())

    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    (jwk,) = ca.jwks()["keys"]
    assert header["kid"] == jwk["kid"]
    assert {k: jwk[k] for k in ("kty", "crv", "alg", "use")} == {
        "kty": "EC",
        "crv": "P-256",
        "alg": "ES256",
        "use": "sig",
    }
    # A third party verifies with the published JWK alone.
    public = jwt.PyJWK(jwk)
    assert (
        jwt.decode(
            token, public, algorithms=["ES256"], audience="svc-a", options={"verify_exp": False}
        )["sub"]
        == SPIFFE_ID
    )


@pytest.mark.parametrize(
    ("ttl", "lifetime"),
    [(timedelta(minutes=1), timedelta(minutes=1)), (timedelta(hours=1), MAX_JWT_TTL)],
    ids=["under-cap", "capped"],
)
def test_jwt_exp_cap(ca: CertificateAuthority, ttl: timedelta, lifetime: timedelta) -> None:
    token = ca.issue_jwt(SPIFFE_ID, "svc", now=NOW, ttl=ttl)
    assert ca.verify_jwt(token, "svc", NOW)["exp"] == int((NOW + lifetime).timestamp())


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _forged(ca: CertificateAuthority, alg: str) -> str:
    kid = ca.jwks()["keys"][0]["kid"]
    payload = {"sub": SPIFFE_ID, "aud": "svc", "exp": int((NOW + MAX_JWT_TTL).timestamp())}
    if alg == "none":
        return jwt.encode(payload, "", algorithm="none", headers={"kid": kid})
    if alg == "HS256":
        # The classic confusion: the public key's bytes used as an HMAC secret. pyjwt refuses
        # to make such a token, so it is assembled by hand.
        secret = ca.issuing_certificate.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        header = {"alg": "HS256", "typ": "JWT", "kid": kid}
        signing_input = b".".join(_b64(json.dumps(part).encode()) for part in (header, payload))
        mac = hmac.new(secret, signing_input, hashlib.sha256).digest()
        return (signing_input + b"." + _b64(mac)).decode()
    other = ec.generate_private_key(ec.SECP256R1())
    headers = {"kid": kid if alg == "ES256-wrong-key" else jwk_thumbprint(other.public_key())}
    return jwt.encode(payload, other, algorithm="ES256", headers=headers)


JWT_REFUSED: list[Any] = [
    pytest.param(lambda ca: ca.issue_jwt(SPIFFE_ID, "svc", now=NOW), "other", NOW, id="wrong-aud"),
    pytest.param(
        lambda ca: ca.issue_jwt(SPIFFE_ID, "svc", now=NOW),
        "svc",
        NOW + MAX_JWT_TTL,
        id="expired",
    ),
    pytest.param(lambda ca: _forged(ca, "none"), "svc", NOW, id="alg-none"),
    pytest.param(lambda ca: _forged(ca, "HS256"), "svc", NOW, id="alg-hs256"),
    pytest.param(lambda ca: _forged(ca, "ES256-unknown-kid"), "svc", NOW, id="unknown-kid"),
    pytest.param(lambda ca: _forged(ca, "ES256-wrong-key"), "svc", NOW, id="bad-signature"),
    pytest.param(lambda ca: "not.a.jwt", "svc", NOW, id="malformed"),
]


@pytest.mark.parametrize(("make", "audience", "at"), JWT_REFUSED)
def test_jwt_refused(
    ca: CertificateAuthority,
    make: Callable[[CertificateAuthority], str],
    audience: str,
    at: datetime,
) -> None:
    with pytest.raises(TokenError):
        ca.verify_jwt(make(ca), audience, at)


@pytest.mark.parametrize(
    ("spiffe_id", "audience"),
    [("spiffe://other.org/a", "svc"), (SPIFFE_ID, []), (SPIFFE_ID, "")],
    ids=["foreign-trust-domain", "no-audience", "empty-audience"],
)
def test_jwt_issue_refused(
    ca: CertificateAuthority, spiffe_id: str, audience: str | list[str]
) -> None:
    with pytest.raises(CAError):
        ca.issue_jwt(spiffe_id, audience, now=NOW)


# --- rotation ------------------------------------------------------------------------------


def test_rotation_overlap_then_prune(key: ec.EllipticCurvePrivateKey) -> None:
    before = CertificateAuthority.create(TD, NOW)
    old_leaf, old_issuing = before.issue_svid(
        key.public_key(), SPIFFE_ID, now=NOW, ttl=MAX_SVID_TTL
    )
    old_token = before.issue_jwt(SPIFFE_ID, "svc", now=NOW)
    old_kid = jwt.get_unverified_header(old_token)["kid"]

    rotated_at = NOW + timedelta(minutes=1)
    after = before.rotate(rotated_at)
    assert after.issuing_certificate != old_issuing
    assert before.issuing_certificate == old_issuing  # rotate returns a new value
    new_leaf, new_issuing = after.issue_svid(key.public_key(), SPIFFE_ID, now=rotated_at)
    new_issuing.verify_directly_issued_by(after.root)

    # During the overlap: both intermediates in the bundle and the JWKS.
    bundle = x509.load_pem_x509_certificates(after.trust_bundle())
    assert bundle == [after.root, new_issuing, old_issuing]
    kids = [k["kid"] for k in after.jwks()["keys"]]
    assert len(kids) == 2
    assert old_kid in kids
    assert after.verify_jwt(old_token, "svc", rotated_at)["sub"] == SPIFFE_ID
    assert verify_client(after, old_leaf, old_issuing, at=rotated_at)
    assert verify_client(after, new_leaf, new_issuing, at=rotated_at)
    # New tokens carry the new key id.
    new_token = after.issue_jwt(SPIFFE_ID, "svc", now=rotated_at)
    assert jwt.get_unverified_header(new_token)["kid"] != old_kid

    # Pruned only once the window (rotation + the longest SVID lifetime) has passed.
    assert after.prune(rotated_at + MAX_SVID_TTL - timedelta(seconds=1)).retired
    pruned = after.prune(rotated_at + MAX_SVID_TTL)
    assert not pruned.retired
    assert x509.load_pem_x509_certificates(pruned.trust_bundle()) == [pruned.root, new_issuing]
    assert [k["kid"] for k in pruned.jwks()["keys"]] == [
        jwt.get_unverified_header(new_token)["kid"]
    ]
    with pytest.raises(TokenError, match="key id"):
        pruned.verify_jwt(old_token, "svc", rotated_at)
    # Every credential the old intermediate signed had expired by the end of the window.
    assert old_leaf.not_valid_after_utc <= rotated_at + MAX_SVID_TTL


# --- files ---------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_private_files_and_loads_back(tmp_path: Path) -> None:
    directory = tmp_path / "data" / "ca"
    created = CertificateAuthority.init(directory, TD, NOW)
    assert _mode(directory) == 0o700
    for name in ("root.key", "issuing.key"):
        assert _mode(directory / name) == 0o600
    loaded = CertificateAuthority.load(directory)
    assert loaded.trust_domain == TD
    assert loaded.root == created.root
    assert loaded.issuing_certificate == created.issuing_certificate
    assert loaded.jwks() == created.jwks()


def test_init_refuses_existing_ca(tmp_path: Path) -> None:
    CertificateAuthority.init(tmp_path / "ca", TD, NOW)
    before = (tmp_path / "ca" / "root.pem").read_bytes()
    with pytest.raises(CAError, match="already exists"):
        CertificateAuthority.init(tmp_path / "ca", TD, NOW)
    assert (tmp_path / "ca" / "root.pem").read_bytes() == before


def test_load_missing_or_corrupt(tmp_path: Path) -> None:
    with pytest.raises(CAError, match="docket ca init"):
        CertificateAuthority.load(tmp_path / "nothing")
    CertificateAuthority.init(tmp_path / "ca", TD, NOW)
    other = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ca" / "issuing.key").write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(CAError, match="does not match"):
        CertificateAuthority.load(tmp_path / "ca")


def test_rotation_survives_save_and_load(tmp_path: Path) -> None:
    directory = tmp_path / "ca"
    rotated = CertificateAuthority.init(directory, TD, NOW).rotate(NOW + timedelta(hours=1))
    rotated.save(directory)
    loaded = CertificateAuthority.load(directory)
    assert loaded.trust_bundle() == rotated.trust_bundle()
    assert loaded.jwks() == rotated.jwks()
    # A retired key signs nothing more: its private half is gone, its certificate stays.
    assert not list(directory.glob("retired-*.key"))
    assert len(list(directory.glob("retired-*.pem"))) == 1
    state = json.loads((directory / "ca.json").read_text())
    (item,) = state["retired"]
    assert datetime.fromisoformat(item["retired_at"]) == NOW + timedelta(hours=1)
    assert datetime.fromisoformat(item["retire_after"]) == NOW + timedelta(hours=1) + MAX_SVID_TTL

    pruned = loaded.prune(NOW + timedelta(hours=1) + MAX_SVID_TTL)
    pruned.save(directory)
    assert not list(directory.glob("retired-*"))
    assert CertificateAuthority.load(directory).jwks() == pruned.jwks()


# --- the posture extension and verify_svid -------------------------------------------------

DEVICE = "spiffe://example.org/device/" + "ab" * 32


@pytest.mark.parametrize(
    "claims",
    [
        {"attested": True, "device_class": "dev", "secure_boot": False},
        # long enough for a multi-byte DER length
        {"attested": True, "device_class": "x" * 300, "ek_hash": "ab" * 32},
    ],
)
def test_svid_carries_posture_that_verify_svid_reads(
    ca: CertificateAuthority, key: ec.EllipticCurvePrivateKey, claims: dict[str, Any]
) -> None:
    leaf, _ = ca.issue_svid(_csr(key), DEVICE, now=NOW, posture=claims)
    extension = leaf.extensions.get_extension_for_oid(POSTURE_EXTENSION)
    assert not extension.critical
    assert ca.verify_svid(leaf, NOW) == (DEVICE, claims)


def test_posture_extension_is_a_der_utf8string_of_canonical_json() -> None:
    extension = _posture_extension({"b": 1, "a": "é"})
    text = b'{"a":"\\u00e9","b":1}'
    assert extension.value == b"\x0c" + bytes([len(text)]) + text
    long = _posture_extension({"k": "x" * 300}).value
    assert long[:4] == b"\x0c\x82\x01\x34"  # a two-byte definite length: 308


@pytest.mark.parametrize(
    ("der", "message"),
    [
        pytest.param(b"\x13\x02{}", "not a DER UTF8String", id="printable-string"),
        pytest.param(b"\x0c\x03{}", "not a DER UTF8String", id="length-past-the-end"),
        pytest.param(b"\x0c\x02{} ", "not a DER UTF8String", id="trailing-byte"),
        pytest.param(b"\x0c\x80{}\x00\x00", "not a DER UTF8String", id="indefinite-length"),
        pytest.param(b"\x0c\x81\x02{}", "not a DER UTF8String", id="non-minimal-length"),
        pytest.param(b"\x0c\x02\xff\xfe", "not a DER UTF8String", id="not-utf8"),
        pytest.param(b"", "not a DER UTF8String", id="empty"),
        pytest.param(b"\x0c\x03{a}", "not JSON", id="not-json"),
        pytest.param(b"\x0c\x02[]", "not a JSON object", id="json-array"),
    ],
)
def test_malformed_posture_extension_is_refused(der: bytes, message: str) -> None:
    with pytest.raises(TokenError, match=f"posture extension is {message}"):
        _read_posture(der)


def test_verify_svid_without_posture(
    ca: CertificateAuthority, key: ec.EllipticCurvePrivateKey
) -> None:
    leaf, _ = ca.issue_svid(_csr(key), DEVICE, now=NOW)
    assert ca.verify_svid(leaf, NOW) == (DEVICE, None)


def test_verify_svid_after_rotation(
    ca: CertificateAuthority, key: ec.EllipticCurvePrivateKey
) -> None:
    leaf, _ = ca.issue_svid(_csr(key), DEVICE, now=NOW, posture={"attested": True})
    rotated = ca.rotate(NOW)
    assert rotated.verify_svid(leaf, NOW + timedelta(minutes=5))[1] == {"attested": True}
    pruned = rotated.prune(NOW + MAX_SVID_TTL + timedelta(seconds=1))
    with pytest.raises(TokenError, match="signature is not this CA's"):
        pruned.verify_svid(leaf, NOW + timedelta(minutes=5))


def test_verify_svid_refuses(ca: CertificateAuthority, key: ec.EllipticCurvePrivateKey) -> None:
    leaf, _ = ca.issue_svid(_csr(key), DEVICE, now=NOW, posture={"attested": True})
    with pytest.raises(TokenError, match="not valid now"):
        ca.verify_svid(leaf, NOW + timedelta(hours=2))
    with pytest.raises(TokenError, match="not valid now"):
        ca.verify_svid(leaf, NOW - timedelta(hours=1))
    # A CA with the same trust domain (and so the same intermediate subject) but other keys.
    other = CertificateAuthority.create(TD, NOW)
    with pytest.raises(TokenError, match="signature is not this CA's"):
        other.verify_svid(leaf, NOW)
    foreign = CertificateAuthority.create("other.example", NOW)
    with pytest.raises(TokenError, match="not issued by this CA"):
        foreign.verify_svid(leaf, NOW)


# --- retirement (issue 14, finding 6) -------------------------------------------------------


def test_retired_key_credentials_minted_after_retirement_are_refused(
    ca: CertificateAuthority, key: ec.EllipticCurvePrivateKey
) -> None:
    rotated_at = NOW + timedelta(minutes=10)
    after = ca.rotate(rotated_at)
    late = rotated_at + timedelta(seconds=1)
    # The attacker kept the old key (``ca``) and mints with it after the rotation.
    late_token = ca.issue_jwt(SPIFFE_ID, "svc", now=late)
    late_leaf, _ = ca.issue_svid(key.public_key(), SPIFFE_ID, now=late)
    with pytest.raises(TokenError, match="retired"):
        after.verify_jwt(late_token, "svc", late)
    with pytest.raises(TokenError, match="retired"):
        after.verify_svid(late_leaf, late)
    # Minted up to the rotation: accepted within the window.
    on_time_token = ca.issue_jwt(SPIFFE_ID, "svc", now=rotated_at)
    on_time_leaf, _ = ca.issue_svid(key.public_key(), SPIFFE_ID, now=rotated_at)
    assert after.verify_jwt(on_time_token, "svc", late)["sub"] == SPIFFE_ID
    assert after.verify_svid(on_time_leaf, late)[0] == SPIFFE_ID


def test_retired_key_leaves_jwks_and_bundle_when_its_credentials_expired(
    ca: CertificateAuthority, key: ec.EllipticCurvePrivateKey
) -> None:
    rotated_at = NOW + timedelta(minutes=10)
    after = ca.rotate(rotated_at)
    old_kid = jwk_thumbprint(ca.issuing.public_key)
    kids = lambda at: [k["kid"] for k in after.jwks(at)["keys"]]  # noqa: E731
    assert old_kid in kids(rotated_at + MAX_JWT_TTL - timedelta(seconds=1))
    assert old_kid not in kids(rotated_at + MAX_JWT_TTL)
    bundle = lambda at: x509.load_pem_x509_certificates(after.trust_bundle(at))  # noqa: E731
    assert ca.issuing_certificate in bundle(rotated_at + MAX_SVID_TTL - timedelta(seconds=1))
    assert ca.issuing_certificate not in bundle(rotated_at + MAX_SVID_TTL)
    # Verification drops it at the same moments, without a prune.
    token = ca.issue_jwt(SPIFFE_ID, "svc", now=rotated_at)
    with pytest.raises(TokenError, match="key id"):
        after.verify_jwt(token, "svc", rotated_at + MAX_JWT_TTL)


def test_svid_over_the_lifetime_cap_is_refused(
    ca: CertificateAuthority, key: ec.EllipticCurvePrivateKey
) -> None:
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.issuing_certificate.subject)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(NOW)
        .not_valid_after(NOW + MAX_SVID_TTL * 30)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(SPIFFE_ID)]), False
        )
        .sign(ca.issuing.key, hashes.SHA256())  # type: ignore[arg-type]
    )
    with pytest.raises(TokenError, match="lifetime"):
        ca.verify_svid(leaf, NOW + timedelta(hours=1))


def test_ca_json_of_before_issue_14_loads_with_its_retirement_time(tmp_path: Path) -> None:
    directory = tmp_path / "ca"
    rotated_at = NOW + timedelta(hours=1)
    CertificateAuthority.init(directory, TD, NOW).rotate(rotated_at).save(directory)
    state = json.loads((directory / "ca.json").read_text())
    for item in state["retired"]:
        del item["retired_at"]  # what issue 13's ca.json held
    (directory / "ca.json").write_text(json.dumps(state))
    (retired,) = CertificateAuthority.load(directory).retired
    assert retired.retired_at == rotated_at


# --- the revocation list --------------------------------------------------------------------

EK = "ab" * 32


def test_revoke_names_normalises_and_counts_versions(ca: CertificateAuthority) -> None:
    empty = RevocationList.empty(TD)
    one = empty.revoke("device", EK.upper(), " stolen ", NOW)
    two = one.revoke("serial", "0x00ABC", "leak", NOW)
    three = two.revoke("spiffe_id", SPIFFE_ID, "re-imaged", NOW)
    assert [each.version for each in (empty, one, two, three)] == [0, 1, 2, 3]
    assert [(r.kind, r.value, r.reason) for r in three.revoked] == [
        ("device", EK, "stolen"),
        ("serial", "abc", "leak"),
        ("spiffe_id", SPIFFE_ID, "re-imaged"),
    ]
    assert empty.revoked == ()  # a value: revoke returns a new list


@pytest.mark.parametrize(
    ("kind", "value", "words"),
    [
        ("device", "ab" * 31, "64 hex digits"),
        ("device", "zz" * 32, "64 hex digits"),
        ("serial", "xyz", "hex"),
        ("serial", "1" * 41, "hex"),
        ("spiffe_id", "spiffe://other.org/x", "trust domain"),
        ("spiffe_id", "not-a-spiffe-id", "SPIFFE ID"),
    ],
)
def test_revoke_refuses_malformed_values(kind: str, value: str, words: str) -> None:
    with pytest.raises(CAError, match=words):
        RevocationList.empty(TD).revoke(kind, value, "why", NOW)  # type: ignore[arg-type]


def test_revoke_refuses_no_reason_and_a_duplicate() -> None:
    with pytest.raises(CAError, match="reason"):
        RevocationList.empty(TD).revoke("device", EK, "  ", NOW)
    once = RevocationList.empty(TD).revoke("device", EK, "stolen", NOW)
    with pytest.raises(CAError, match="already revoked"):
        once.revoke("device", EK, "again", NOW)


def test_refuses_by_device_spiffe_id_and_serial() -> None:
    device = f"spiffe://{TD}/device/{EK}"
    listed = (
        RevocationList.empty(TD)
        .revoke("device", EK, "stolen", NOW)
        .revoke("spiffe_id", SPIFFE_ID, "re-imaged", NOW)
        .revoke("serial", "abc", "leak", NOW)
    )
    later = NOW + timedelta(hours=1)
    assert listed.refuses(device, None, later) is not None  # a device: whenever issued
    assert listed.refuses(SPIFFE_ID, None, NOW) is not None  # up to the revocation…
    assert listed.refuses(SPIFFE_ID, None, later) is None  # …not after it
    assert listed.refuses(f"spiffe://{TD}/other", 0xABC, later) is not None
    assert listed.refuses(f"spiffe://{TD}/other", 0xABD, NOW) is None
    assert listed.device(bytes.fromhex(EK)) is not None
    assert listed.device(bytes(32)) is None


def test_revocation_list_is_signed_by_the_root_and_verifies(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    listed = RevocationList.empty(TD).revoke("device", EK, "stolen", NOW)
    document = ca.sign_revocations(listed)
    assert ca.verify_revocations(document) == listed
    # A relying party needs only the root certificate (docket ca bundle) and PyJWT.
    served = json.loads(document)
    compact = ".".join(served[p] for p in ("protected", "payload", "signature"))
    assert jwt.get_unverified_header(compact)["kid"] == jwk_thumbprint(
        ca.root.public_key()  # type: ignore[arg-type]
    )
    payload = jwt.api_jws.decode(compact, ca.root.public_key(), algorithms=["ES256"])  # type: ignore[arg-type]
    assert json.loads(payload)["revoked"][0]["value"] == EK
    # It survives rotations: the root signs it, not an issuing key.
    assert ca.rotate(NOW).verify_revocations(document) == listed


def test_forged_revocation_lists_do_not_verify(ca: CertificateAuthority) -> None:
    listed = RevocationList.empty(TD).revoke("device", EK, "stolen", NOW)
    document = json.loads(ca.sign_revocations(listed))
    emptied = base64.urlsafe_b64encode(RevocationList.empty(TD).model_dump_json().encode()).rstrip(
        b"="
    )
    other = CertificateAuthority.create(TD, NOW)
    forgeries = {
        "payload swapped": json.dumps({**document, "payload": emptied.decode()}).encode(),
        "another CA's root": other.sign_revocations(listed),
        "not JSON": b"revoked: none",
        "extra member": json.dumps({**document, "header": {}}).encode(),
    }
    for forged in forgeries.values():
        with pytest.raises(CAError, match="does not verify"):
            ca.verify_revocations(forged)
    with pytest.raises(CAError, match="another trust domain"):
        ca.sign_revocations(RevocationList.empty("other.org"))


def test_load_revocations_without_a_file_is_the_empty_list(tmp_path: Path) -> None:
    directory = tmp_path / "ca"
    ca = CertificateAuthority.init(directory, TD, NOW)
    listed, document = load_revocations(directory, ca)
    assert listed == RevocationList.empty(TD)
    assert ca.verify_revocations(document) == listed
    revoked = listed.revoke("device", EK, "stolen", NOW)
    ca.save_revocations(directory, revoked)
    assert load_revocations(directory, ca)[0] == revoked
