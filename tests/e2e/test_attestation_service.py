"""The attestation service against a real TPM: swtpm manufactured with an EK certificate by
a private local CA, driven by the device agent's ``Tpm``; the service with a real challenge
store and audit log (SQLite) and its clock in the test's hands.

Issuance, then every refusal the issue names: wrong nonce, replayed challenge, tampered
quote, PCRs not matching the reference, EK not chaining to a trusted root, AK without
``restricted``, wrong activated secret, expired challenge, TPM clock going back; and an
allow-listed EK without a certificate. Each refusal is a durable ``attestation`` entry
with decision ``deny`` and the reason.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from swtpm import ProvisionedState, SoftwareTpm

from attestation._ca import JWT_POSTURE_CLAIM, CertificateAuthority
from attestation._errors import EvidenceError
from attestation._reference import ReferenceValues, load_reference, parse_reference
from attestation._store import ChallengeStore
from attestation._verifier import TrustRoots, UnverifiedEnrollment, ek_key_hash
from audit import AuditLog
from engine._service.attest import AttestationService, Evidence, device_spiffe_id
from sdk.agent import Tpm

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SHA256 = 0x000B
# The EK certificates swtpm_setup makes are valid from when they are made: start the
# test's clock at the real time, then move it by hand.
T0 = datetime.now(UTC) + timedelta(minutes=5)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Device:
    swtpm: SoftwareTpm
    tpm: Tpm
    enrollment: UnverifiedEnrollment

    def answer(
        self, challenge_id: str, credential: bytes, nonce: bytes, selection: str
    ) -> Evidence:
        secret = self.tpm.activate(credential)
        quote, signature = self.tpm.quote(nonce, selection)
        return Evidence(
            challenge_id=challenge_id,
            activated_secret=secret,
            quote=quote,
            signature=signature,
            pcr_values=self.tpm.pcrread(selection),
            csr=_csr(),
        )


def _csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.DER)


@pytest.fixture
def device(swtpm: SoftwareTpm) -> Iterator[Device]:
    with Tpm(swtpm.env["TPM2TOOLS_TCTI"]) as tpm:
        ek_public, ek_certificate = tpm.create_ek()
        assert ek_certificate is not None, "swtpm_setup made no EK certificate"
        enrollment = UnverifiedEnrollment(ek_public, ek_certificate, tpm.create_ak())
        yield Device(swtpm, tpm, enrollment)


def _roots(provisioned: ProvisionedState) -> TrustRoots:
    # The operator trusts the manufacturer's CA certificates: the local CA's root and the
    # intermediate that signs EK certificates.
    certs = [
        *x509.load_pem_x509_certificates(provisioned.root_cert.read_bytes()),
        *x509.load_pem_x509_certificates(provisioned.issuer_cert.read_bytes()),
    ]
    return TrustRoots(tuple(certs))


@dataclass
class Harness:
    service: AttestationService
    audit: AuditLog
    clock: Clock
    reference: list[ReferenceValues]

    def entries(self) -> list[dict[str, object]]:
        return [
            json.loads(row.payload)
            for row in self.audit.store.entries()
            if row.payload is not None and row.kind in ("attestation", "certificate")
        ]

    def last_refusal(self) -> dict[str, object]:
        (*_, last) = self.entries()
        assert last["kind"] == "attestation"
        assert last["decision"] == "deny"
        return last


@pytest.fixture
def harness(provisioned_tpm: ProvisionedState, tmp_path: Path) -> Iterator[Harness]:
    url = f"sqlite:///{tmp_path / 'docket.db'}"
    audit = AuditLog.open(url, keys=tmp_path / "keys").start()
    store = ChallengeStore(url)
    clock = Clock()
    reference = [load_reference(ROOT / "policies" / "reference")]
    service = AttestationService(
        CertificateAuthority.create("docket.local", T0 - timedelta(days=1)),
        _roots(provisioned_tpm),
        store,
        audit,
        lambda: reference[0],
        clock=clock,
    )
    try:
        yield Harness(service, audit, clock, reference)
    finally:
        store.close()
        audit.close()


def _challenge(harness: Harness, device: Device) -> tuple[str, bytes, bytes, str]:
    challenged = harness.service.challenge(device.enrollment, caller=None)
    challenge = challenged.challenge
    selection = "+".join(
        f"sha256:{','.join(str(i) for i in sorted(indices))}"
        for alg, indices in challenged.pcrs.items()
        if alg == SHA256
    )
    return challenge.challenge_id, challenge.credential, challenge.nonce, selection


def test_issues_credentials_as_dev_and_records_them(harness: Harness, device: Device) -> None:
    challenge_id, credential, nonce, selection = _challenge(harness, device)
    assert selection == "sha256:0,1,2,3,4,5,6,7"
    harness.clock.now += timedelta(seconds=2)
    issued = harness.service.attest(
        device.answer(challenge_id, credential, nonce, selection), caller=None
    )
    ek_hash = ek_key_hash(device.enrollment.ek_public)
    assert issued.spiffe_id == device_spiffe_id("docket.local", ek_hash)
    posture = issued.posture
    assert (posture.attested, posture.device_class, posture.secure_boot) == (True, "dev", False)
    assert posture.tpm_manufacturer  # from the EK certificate's subjectAltName
    claims = harness.service.ca.verify_jwt(issued.jwt, "docket", harness.clock.now)
    assert claims[JWT_POSTURE_CLAIM]["device_class"] == "dev"
    assert harness.service.ca.verify_svid(issued.leaf, harness.clock.now) == (
        issued.spiffe_id,
        posture.claims(),
    )
    lifetime = issued.leaf.not_valid_after_utc - harness.clock.now
    assert timedelta(minutes=59, seconds=59) <= lifetime <= timedelta(hours=1)
    kinds = [(e["kind"], e["decision"], e["detail"]) for e in harness.entries()]  # type: ignore[index]
    assert [k[:2] for k in kinds] == [
        ("attestation", "allow"),
        ("certificate", "allow"),
        ("certificate", "allow"),
    ]
    assert all(d["device_class"] == "dev" for _, _, d in kinds[1:])  # type: ignore[index]
    assert kinds[0][2]["posture"]["device_class"] == "dev"  # type: ignore[index]


def test_quote_over_another_nonce_is_refused(harness: Harness, device: Device) -> None:
    challenge_id, credential, _, selection = _challenge(harness, device)
    evidence = device.answer(challenge_id, credential, bytes(32), selection)
    with pytest.raises(EvidenceError, match="nonce"):
        harness.service.attest(evidence, caller=None)
    assert "nonce" in str(harness.last_refusal()["detail"])


def test_replayed_challenge_is_refused(harness: Harness, device: Device) -> None:
    challenge_id, credential, nonce, selection = _challenge(harness, device)
    evidence = device.answer(challenge_id, credential, nonce, selection)
    harness.service.attest(evidence, caller=None)
    with pytest.raises(EvidenceError, match="already used"):
        harness.service.attest(evidence, caller=None)
    refusal = harness.last_refusal()
    assert "already used" in str(refusal["detail"])


def test_tampered_quote_is_refused(harness: Harness, device: Device) -> None:
    challenge_id, credential, nonce, selection = _challenge(harness, device)
    evidence = device.answer(challenge_id, credential, nonce, selection)
    quote = bytearray(evidence.quote)
    quote[-40] ^= 0x01  # inside the clock info / PCR digest
    with pytest.raises(EvidenceError, match="signature"):
        harness.service.attest(replace(evidence, quote=bytes(quote)), caller=None)
    harness.last_refusal()


def test_pcr_values_not_matching_the_reference_are_refused(
    harness: Harness, device: Device
) -> None:
    strict = (
        'class = "golden"\nsecure_boot = false\nmeasured_boot = true\n'
        '[pcrs.sha256]\n0 = "' + "ab" * 32 + '"\n'
    )
    harness.reference[0] = parse_reference({"golden.toml": strict.encode()})
    challenge_id, credential, nonce, selection = _challenge(harness, device)
    assert selection == "sha256:0"
    evidence = device.answer(challenge_id, credential, nonce, selection)
    with pytest.raises(EvidenceError, match="golden: PCR sha256:0 does not match"):
        harness.service.attest(evidence, caller=None)
    refusal = harness.last_refusal()
    assert refusal["subject"] == device_spiffe_id(
        "docket.local", ek_key_hash(device.enrollment.ek_public)
    )


def test_ek_not_chaining_to_a_trusted_root_is_refused(
    harness: Harness, device: Device, tmp_path: Path
) -> None:
    other = CertificateAuthority.create("elsewhere.example", T0 - timedelta(days=1))
    harness.service.roots = TrustRoots((other.root,))
    with pytest.raises(EvidenceError, match="EK"):
        harness.service.challenge(device.enrollment, caller=None)
    assert harness.last_refusal()["action"] == "challenge"


def test_ak_without_restricted_is_refused(harness: Harness, device: Device) -> None:
    # A real signing key that is not restricted: it could sign a forged TPMS_ATTEST.
    cwd = device.tpm.directory
    env = device.swtpm.env
    for argv in (
        ["tpm2_createprimary", "-C", "o", "-G", "ecc", "-c", "primary.ctx"],
        [
            "tpm2_create",
            *("-C", "primary.ctx", "-G", "ecc:ecdsa-sha256"),
            *("-a", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign"),
            *("-u", "loose.pub", "-r", "loose.priv"),
        ],
    ):
        subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True)
        subprocess.run(["tpm2_flushcontext", "-t"], cwd=cwd, env=env, check=True)
    loose = replace(device.enrollment, ak_public=(cwd / "loose.pub").read_bytes())
    with pytest.raises(EvidenceError, match="restricted"):
        harness.service.challenge(loose, caller=None)
    assert "restricted" in str(harness.last_refusal()["detail"])


def test_wrong_activated_secret_is_refused(harness: Harness, device: Device) -> None:
    first_id, first_credential, _, selection = _challenge(harness, device)
    second_id, _, second_nonce, _ = _challenge(harness, device)
    # The first challenge's secret, with a quote over the second's nonce.
    evidence = device.answer(second_id, first_credential, second_nonce, selection)
    with pytest.raises(EvidenceError, match="activated secret"):
        harness.service.attest(evidence, caller=None)
    assert first_id != second_id
    harness.last_refusal()


def test_expired_challenge_is_refused(harness: Harness, device: Device) -> None:
    challenge_id, credential, nonce, selection = _challenge(harness, device)
    evidence = device.answer(challenge_id, credential, nonce, selection)
    harness.clock.now += timedelta(seconds=61)
    with pytest.raises(EvidenceError, match="expired"):
        harness.service.attest(evidence, caller=None)
    harness.last_refusal()


def test_tpm_clock_going_backwards_is_refused(harness: Harness, device: Device) -> None:
    challenge_id, credential, nonce, selection = _challenge(harness, device)
    old = device.answer(challenge_id, credential, nonce, selection)  # quoted first…
    newer_id, newer_credential, newer_nonce, _ = _challenge(harness, device)
    harness.service.attest(
        device.answer(newer_id, newer_credential, newer_nonce, selection), caller=None
    )
    with pytest.raises(EvidenceError, match="clock went backwards"):
        harness.service.attest(old, caller=None)  # …answered last


def test_allow_listed_ek_without_a_certificate_attests(harness: Harness, tmp_path: Path) -> None:
    # A swtpm never manufactured: no EK certificate, trusted by the hash of its EK.
    (tmp_path / "bare").mkdir()
    swtpm = SoftwareTpm.start(tmp_path / "bare")
    try:
        with Tpm(swtpm.env["TPM2TOOLS_TCTI"]) as tpm:
            ek_public, ek_certificate = tpm.create_ek()
            assert ek_certificate is None
            bare = Device(swtpm, tpm, UnverifiedEnrollment(ek_public, None, tpm.create_ak()))
            with pytest.raises(EvidenceError, match="EK not trusted"):
                harness.service.challenge(bare.enrollment, caller=None)
            harness.service.roots = TrustRoots((), frozenset({ek_key_hash(ek_public)}))
            challenge_id, credential, nonce, selection = _challenge(harness, bare)
            issued = harness.service.attest(
                bare.answer(challenge_id, credential, nonce, selection), caller=None
            )
    finally:
        swtpm.stop()
    assert issued.posture.device_class == "dev"
    assert issued.posture.tpm_manufacturer == ""  # nothing vouches for the maker
