"""The agent's TPM drivers against a manufactured swtpm (an EK certificate from a local CA),
each test with each driver: ``Tpm`` (tpm2-tools) and ``EsapiTpm`` (tpm2-pytss).

The verifier runs in-process on nothing but what the driver returns: the EK certificate
chains to the local CA's root, the credential activates and the quote verifies (appraisal
is tested with the verifier). An EK whose certificate chains elsewhere is refused; a dead
TCTI or an inactive PCR bank is a readable ``TpmError``. No transient object or session
is left loaded after a command. The two drivers' evidence verifies alike: the same EK and
certificate, AKs of one template, the same verified posture. The whole agent against a
real ``docket serve`` is in test_attest_flow.py.
"""

from __future__ import annotations

import hashlib
import struct
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
    VerifiedAttestation,
    begin_enrollment,
    ek_key_hash,
    finish_attestation,
)
from sdk.agent import EsapiTpm, Tpm, TpmError, pcr_selection
from sdk.agent._backend import open_tpm

pytestmark = pytest.mark.e2e

SHA256 = 0x000B
PCRS = range(8)
SELECTION = pcr_selection({"sha256": PCRS})


@pytest.fixture
def tpm(swtpm: SoftwareTpm, tpm_backend: str) -> Iterator[Tpm | EsapiTpm]:
    with open_tpm(swtpm.env["TPM2TOOLS_TCTI"], tpm_backend) as agent_tpm:
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
    tpm: Tpm | EsapiTpm, provisioned_tpm: ProvisionedState
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
    tpm: Tpm | EsapiTpm, provisioned_tpm: ProvisionedState
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
    tpm: Tpm | EsapiTpm, provisioned_tpm: ProvisionedState, pki: PKI
) -> None:
    ek_public, ek_certificate = tpm.create_ek()
    enrollment = UnverifiedEnrollment(
        ek_public, ek_certificate, tpm.create_ak(), (_der(provisioned_tpm.issuer_cert),)
    )
    with pytest.raises(EvidenceError, match="EK not trusted"):
        begin_enrollment(enrollment, TrustRoots(ek_roots=[_pem(pki.ca)]), now=datetime.now(UTC))


# how each driver says that nothing listens at the TCTI
DEAD_TCTI = {
    "tpm2-tools": ("tpm2_createek failed", "Connection refused"),
    "tpm2-pytss": ("cannot open the TPM at TCTI", "IO failure"),
}


def test_dead_tcti_is_a_readable_tpm_error(
    tpm_backend: str, capfd: pytest.CaptureFixture[str]
) -> None:
    start, cause = DEAD_TCTI[tpm_backend]
    port = free_port_pair()  # nothing listens there
    with (
        pytest.raises(TpmError) as caught,
        open_tpm(f"swtpm:host=127.0.0.1,port={port}", tpm_backend) as dead,
    ):
        dead.create_ek()
    message = str(caught.value)
    assert message.startswith(start)
    assert cause in message
    assert "\n" not in message
    assert capfd.readouterr().err == ""  # no log lines of tpm2-tss around the error


def test_inactive_pcr_bank_is_a_tpm_error(tpm: Tpm | EsapiTpm) -> None:
    # swtpm_setup activated only the sha256 bank
    with pytest.raises(TpmError, match="is every bank of the selection active"):
        tpm.pcrread("sha1:0")


def test_activate_before_keys_is_refused(tpm: Tpm | EsapiTpm) -> None:
    with pytest.raises(TpmError, match="create the EK"):
        tpm.activate(b"credential")


def _loaded(swtpm: SoftwareTpm, tmp_path: Path) -> dict[str, str]:
    """The TPM's loaded transient objects and sessions, as tpm2_getcap lists them."""
    return {
        kind: swtpm.run("tpm2_getcap", kind, cwd=tmp_path).stdout.strip()
        for kind in ("handles-transient", "handles-loaded-session")
    }


def test_every_command_leaves_no_transient_object_or_session(
    tpm: Tpm | EsapiTpm, swtpm: SoftwareTpm, provisioned_tpm: ProvisionedState, tmp_path: Path
) -> None:
    nothing = {"handles-transient": "", "handles-loaded-session": ""}
    ek_public, ek_certificate = tpm.create_ek()
    assert _loaded(swtpm, tmp_path) == nothing
    ak_public = tpm.create_ak()
    assert _loaded(swtpm, tmp_path) == nothing
    enrollment = UnverifiedEnrollment(
        ek_public, ek_certificate, ak_public, (_der(provisioned_tpm.issuer_cert),)
    )
    roots = TrustRoots(ek_roots=[_pem(provisioned_tpm.root_cert)])
    challenge, _ = begin_enrollment(enrollment, roots, now=datetime.now(UTC))
    tpm.activate(challenge.credential)
    assert _loaded(swtpm, tmp_path) == nothing
    tpm.quote(challenge.nonce, SELECTION)
    assert _loaded(swtpm, tmp_path) == nothing
    tpm.pcrread(SELECTION)
    assert _loaded(swtpm, tmp_path) == nothing


def _template(public: bytes) -> bytes:
    """A TPM2B_PUBLIC without its unique field (an ECC point, last): the AK's template."""
    (size,) = struct.unpack(">H", public[:2])
    assert size == len(public) - 2
    return public[: -(2 + 32 + 2 + 32)]  # TPMS_ECC_POINT: TPM2B x, TPM2B y (P-256)


@pytest.mark.usefixtures("tpm2_pytss")
def test_both_drivers_evidence_verifies_alike(
    swtpm: SoftwareTpm, provisioned_tpm: ProvisionedState
) -> None:
    """What the verifier gets from tpm2-pytss is what it gets from tpm2-tools: the same EK
    and certificate bytes, an AK of the same template, the same verified posture."""
    tcti = swtpm.env["TPM2TOOLS_TCTI"]
    roots = TrustRoots(ek_roots=[_pem(provisioned_tpm.root_cert)])
    evidence: dict[str, tuple[bytes, bytes | None, bytes, VerifiedAttestation]] = {}
    for driver in (Tpm, EsapiTpm):
        with driver(tcti) as tpm:
            ek_public, ek_certificate = tpm.create_ek()
            ak_public = tpm.create_ak()
            now = datetime.now(UTC)
            enrollment = UnverifiedEnrollment(
                ek_public, ek_certificate, ak_public, (_der(provisioned_tpm.issuer_cert),)
            )
            challenge, pending = begin_enrollment(enrollment, roots, now=now)
            quote, signature = tpm.quote(challenge.nonce, SELECTION)
            verified = finish_attestation(
                pending,
                activated_secret=tpm.activate(challenge.credential),
                quote=quote,
                signature=signature,
                pcr_values=tpm.pcrread(SELECTION),
                now=now + timedelta(seconds=1),
                required_pcrs={SHA256: frozenset(PCRS)},
            )
        evidence[driver.__name__] = (ek_public, ek_certificate, _template(ak_public), verified)
    tools, pytss = evidence["Tpm"], evidence["EsapiTpm"]
    assert tools[:3] == pytss[:3]
    for name in ("ek_hash", "selection", "firmware_version", "tpm_manufacturer"):
        assert getattr(tools[3], name) == getattr(pytss[3], name), name
    assert dict(tools[3].pcrs) == dict(pytss[3].pcrs)
    assert tools[3].ak_name != pytss[3].ak_name  # two AKs, each made fresh
