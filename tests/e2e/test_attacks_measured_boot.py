"""Attacks on measured-boot appraisal, against a real ``docket serve`` and swtpm.

The server's only class, ``fleet``, appraises the standard boot's event log (tests/e2e/
booted.py). The attacker drives its own TPM (the agent's driver, by hand) and sends what it
likes: a good log with a quote over other PCRs, a good log for a TPM that booted something
else, a log too big to read, a log that replays only in a bank the class does not appraise.
One test per attack, each named after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import eventlogs
import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from e2e.booted import booted, serve_fleet
from e2e.docket_process import Docket
from swtpm import ProvisionedState, SoftwareTpm

from sdk.agent import Tpm
from sdk.v1 import attestation_pb2 as pb
from sdk.v1 import attestation_pb2_grpc as pb_grpc

pytestmark = pytest.mark.e2e

GOOD = eventlogs.standard_boot()
EVIL = eventlogs.standard_boot(images=(eventlogs.SHIM, eventlogs.GRUB, b"evil kernel"))


@pytest.fixture
def docket(provisioned_tpm: ProvisionedState, tmp_path: Path) -> Iterator[Docket]:
    yield from serve_fleet(provisioned_tpm, tmp_path)


Attack = Callable[[list[eventlogs.LogEvent]], "Attacker"]


@pytest.fixture
def attack(
    docket: Docket, swtpm: SoftwareTpm, provisioned_tpm: ProvisionedState, tmp_path: Path
) -> Attack:
    """An attacker whose TPM booted the events given."""

    def make(boot: list[eventlogs.LogEvent]) -> Attacker:
        booted(swtpm, boot, tmp_path)
        return Attacker(docket, swtpm, provisioned_tpm)

    return make


def _csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER)


class Attacker:
    """A device answering challenges as it likes, through the agent's TPM driver."""

    def __init__(self, docket: Docket, swtpm: SoftwareTpm, provisioned: ProvisionedState):
        self.docket = docket
        self.tpm = Tpm(swtpm.env["TPM2TOOLS_TCTI"])
        self.issuer = x509.load_pem_x509_certificate(provisioned.issuer_cert.read_bytes())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{docket.grpc_port}")
        self.stub = pb_grpc.AttestationStub(self.channel)

    def __enter__(self) -> Attacker:
        self.tpm.__enter__()
        self.ek_public, self.ek_certificate = self.tpm.create_ek()
        self.ak_public = self.tpm.create_ak()
        return self

    def __exit__(self, *exc: object) -> None:
        self.channel.close()
        self.tpm.__exit__(None, None, None)

    def challenge(self) -> pb.ChallengeResponse:
        return self.stub.Challenge(
            pb.ChallengeRequest(
                ek_public=self.ek_public,
                ek_certificate=self.ek_certificate or b"",
                ek_intermediates=[self.issuer.public_bytes(serialization.Encoding.DER)],
                ak_public=self.ak_public,
            )
        )

    def answer(
        self,
        challenge: pb.ChallengeResponse,
        log: bytes,
        *,
        selection: str = "sha256:0,1,2,3,4,5,6,7,8,9",
        values: dict[int, bytes] | None = None,
    ) -> pb.AttestRequest:
        """An answer quoting ``selection``, claiming ``values`` (default: what the TPM
        holds), with ``log``."""
        quote, signature = self.tpm.quote(challenge.nonce, selection)
        read = {index: value for (_, index), value in self.tpm.pcrread(selection).items()}
        claimed = read if values is None else {**read, **values}
        return pb.AttestRequest(
            challenge_id=challenge.challenge_id,
            activated_secret=self.tpm.activate(challenge.credential),
            quote=quote,
            signature=signature,
            pcr_values=[
                pb.PcrValue(hash=selection.split(":")[0], index=i, value=v)
                for i, v in sorted(claimed.items())
            ],
            csr=_csr(),
            event_log=log,
        )

    def refused(self, request: pb.AttestRequest) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as caught:
            self.stub.Attest(request, timeout=60)
        return caught.value.code(), caught.value.details() or ""


def test_a_good_log_with_a_quote_over_other_pcrs_is_refused(attack: Attack) -> None:
    # The TPM booted the evil kernel; PCRs 10-12 say nothing about the boot.
    with attack(EVIL) as attacker:
        challenge = attacker.challenge()
        assert [(s.hash, list(s.pcrs)) for s in challenge.pcrs] == [("sha256", list(range(10)))]
        request = attacker.answer(
            challenge, eventlogs.crypto_agile(GOOD), selection="sha256:10,11,12"
        )
        code, details = attacker.refused(request)
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert details == "the quote does not cover required PCRs sha256:0,1,2,3,4,5,6,7,8,9"


def test_a_good_log_from_a_tpm_that_booted_another_kernel_is_refused(attack: Attack) -> None:
    good = eventlogs.crypto_agile(GOOD)
    with attack(EVIL) as attacker:
        # The PCR values the TPM quoted: the log does not replay to them.
        code, details = attacker.refused(attacker.answer(attacker.challenge(), good))
        assert code is grpc.StatusCode.PERMISSION_DENIED
        assert "fleet: PCR 4 (sha256) does not replay" in details
        # The PCR values the good log gives: not what the quote signed.
        replayed = {i: v for i, v in eventlogs.replay(GOOD).items() if i < 10}
        forged = attacker.answer(attacker.challenge(), good, values=replayed)
        code, details = attacker.refused(forged)
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert details == "the PCR values do not match the quote's pcrDigest"


def test_a_huge_event_log_is_refused_before_it_is_read(docket: Docket, attack: Attack) -> None:
    good = eventlogs.crypto_agile(GOOD)
    with attack(GOOD) as attacker:
        challenge = attacker.challenge()
        # A valid log padded past the bound: refused before the challenge is even read.
        request = attacker.answer(challenge, good + bytes((1 << 20) + 1 - len(good)))
        code, details = attacker.refused(request)
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert details == "event_log: 1048577 bytes, more than the 1048576 accepted"
        # Past gRPC's message limit: refused by the transport.
        request.event_log = bytes(5 << 20)
        code, _ = attacker.refused(request)
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
        # The same challenge, answered with the log as it is, is still good: nothing was
        # read or used.
        request.event_log = good
        issued = attacker.stub.Attest(request, timeout=60)
    assert issued.posture.device_class == "fleet"
    refusals = [e for e in docket.audit_entries("attestation") if e["decision"] == "deny"]
    assert refusals[0]["detail"]["reason"] == details


def test_a_log_that_replays_only_in_another_bank_is_refused(attack: Attack) -> None:
    # The TPM's sha256 bank holds the evil boot. A sha1-only log of the good boot would
    # replay in a bank that held the good boot, but the class appraises sha256.
    with attack(EVIL) as attacker:
        sha1_only = eventlogs.crypto_agile(GOOD, banks=("sha1",))
        code, details = attacker.refused(attacker.answer(attacker.challenge(), sha1_only))
        assert code is grpc.StatusCode.PERMISSION_DENIED
        assert "fleet: the log has no sha256" in details
        # Both banks, sha1 digests of the good boot, sha256 of the evil one as measured:
        # the sha256 replay holds and the evil kernel is what the appraisal sees.
        mixed = [
            eventlogs.LogEvent(
                g.pcr,
                g.type,
                g.data,
                digests={"sha1": g.digest("sha1"), "sha256": e.digest("sha256")},
            )
            for g, e in zip(GOOD, EVIL, strict=True)
        ]
        code, details = attacker.refused(
            attacker.answer(attacker.challenge(), eventlogs.crypto_agile(mixed))
        )
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert "fleet: boot application 3 (kernel) sha256" in details
