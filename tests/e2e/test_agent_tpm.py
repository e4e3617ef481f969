"""The agent's ``Tpm`` against a manufactured swtpm (an EK certificate from a local CA).

The verifier runs in-process on nothing but what ``Tpm`` returns: the EK certificate
chains to the local CA's root, the credential activates and the quote verifies (appraisal
is tested with the verifier). An EK whose certificate chains elsewhere is refused; a dead
TCTI or an inactive PCR bank is a readable ``TpmError``. The whole agent against a real
``docket serve`` is in test_attest_flow.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pki import PKI
from swtpm import ProvisionedState, SoftwareTpm, free_port_pair

from attestation._errors import EvidenceError
from attestation._verifier import (
    TrustRoots,
    UnverifiedEnrollment,
    begin_enrollment,
    ek_key_hash,
    finish_attestation,
)
from sdk.agent import Tpm, TpmError, pcr_selection

pytestmark = pytest.mark.e2e

SHA256 = 0x000B
PCRS = range(8)
SELECTION = pcr_selection({"sha256": PCRS})


@pytest.fixture
def tpm(swtpm: SoftwareTpm) -> Iterator[Tpm]:
    with Tpm(swtpm.env["TPM2TOOLS_TCTI"]) as agent_tpm:
        yield agent_tpm


def _pem(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _der(path: Path) -> bytes:
    return _pem(path).public_bytes(serialization.Encoding.DER)


def _spki_hash(cert: x509.Certificate) -> bytes:
    return hashlib.sha256(
        cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).digest()


def test_ek_certificate_is_the_eks_and_chains_to_the_local_ca(
    tpm: Tpm, provisioned_tpm: ProvisionedState
) -> None:
    ek_public, ek_certificate = tpm.create_ek()
    assert ek_certificate is not None
    cert = x509.load_der_x509_certificate(ek_certificate)  # padding removed: exact DER
    assert _spki_hash(cert) == ek_key_hash(ek_public)
    issuer = _pem(provisioned_tpm.issuer_cert)
    root = _pem(provisioned_tpm.root_cert)
    cert.verify_directly_issued_by(issuer)
    issuer.verify_directly_issued_by(root)
    root.verify_directly_issued_by(root)  # self-signed: a trust anchor


def test_verifier_accepts_what_the_tpm_class_produces(
    tpm: Tpm, provisioned_tpm: ProvisionedState
) -> None:
    now = datetime.now(UTC)
    ek_public, ek_certificate = tpm.create_ek()
    ak_public = tpm.create_ak()
    enrollment = UnverifiedEnrollment(
        ek_public, ek_certificate, ak_public, (_der(provisioned_tpm.issuer_cert),)
    )
    roots = TrustRoots(ek_roots=[_pem(provisioned_tpm.root_cert)])
    challenge, pending = begin_enrollment(enrollment, roots, now=now)

    secret = tpm.activate(challenge.credential)
    quote, signature = tpm.quote(challenge.nonce, SELECTION)
    values = tpm.pcrread(SELECTION)

    assert sorted(values) == [(SHA256, i) for i in PCRS]
    verified = finish_attestation(
        pending,
        activated_secret=secret,
        quote=quote,
        signature=signature,
        pcr_values=values,
        now=now + timedelta(seconds=1),
        required_pcrs={SHA256: frozenset(PCRS)},
    )
    assert dict(verified.pcrs) == values
    assert verified.ek_hash == ek_key_hash(ek_public)
    assert verified.tpm_manufacturer == "IBM"  # swtpm's manufacturer id


def test_ek_certificate_from_another_ca_is_refused(
    tpm: Tpm, provisioned_tpm: ProvisionedState, pki: PKI
) -> None:
    ek_public, ek_certificate = tpm.create_ek()
    enrollment = UnverifiedEnrollment(
        ek_public, ek_certificate, tpm.create_ak(), (_der(provisioned_tpm.issuer_cert),)
    )
    with pytest.raises(EvidenceError, match="EK not trusted"):
        begin_enrollment(enrollment, TrustRoots(ek_roots=[_pem(pki.ca)]), now=datetime.now(UTC))


def test_dead_tcti_is_a_readable_tpm_error() -> None:
    port = free_port_pair()  # nothing listens there
    with Tpm(f"swtpm:host=127.0.0.1,port={port}") as dead, pytest.raises(TpmError) as caught:
        dead.create_ek()
    message = str(caught.value)
    assert message.startswith("tpm2_createek failed")
    assert "Connection refused" in message
    assert "\n" not in message


def test_inactive_pcr_bank_is_a_tpm_error(tpm: Tpm) -> None:
    # swtpm_setup activated only the sha256 bank
    with pytest.raises(TpmError, match="is every bank of the selection active"):
        tpm.pcrread("sha1:0")


def test_activate_before_keys_is_refused(tpm: Tpm) -> None:
    with pytest.raises(TpmError, match="create the EK"):
        tpm.activate(b"credential")
