"""``docket.v1.Attestation`` over gRPC: Challenge and Attest, JwtChallenge and MintJwtSvid
on an :class:`AttestationService`.

Messages become verifier inputs here and results become messages; statuses come from
the one mapping in :mod:`engine._adapters.grpc_status` (malformed evidence
INVALID_ARGUMENT, evidence that does not verify PERMISSION_DENIED, the store or audit
log down UNAVAILABLE).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TypeVar

import grpc
from cryptography.hazmat.primitives import serialization
from google.protobuf import timestamp_pb2

from attestation import (
    ALG_SHA1,
    ALG_SHA256,
    ALG_SHA384,
    ALG_SHA512,
    MAX_EVENT_LOG_BYTES,
    ParseError,
    Posture,
    UnverifiedEnrollment,
    hash_name,
)
from engine._adapters.grpc_status import answer, caller_identity
from engine._service import tracing
from engine._service.attest import (
    DEFAULT_AUDIENCE,
    AttestationService,
    Evidence,
    Issued,
    JwtProof,
    check_audiences,
)
from engine._service.audit_entries import capped
from engine._service.metrics import Metrics
from sdk.v1 import attestation_pb2 as pb
from sdk.v1 import attestation_pb2_grpc as pb_grpc

_BANKS = {hash_name(alg): alg for alg in (ALG_SHA1, ALG_SHA256, ALG_SHA384, ALG_SHA512)}
MAX_PCR_VALUES = 4 * 24
MAX_SVID_BYTES = 16 * 1024
"""The longest DER X.509-SVID accepted (Docket's are under 1 KiB)."""
MAX_PROOF_SIGNATURE_BYTES = 256
MAX_CHALLENGE_ID = 128
T = TypeVar("T")
_SERVICE = pb.DESCRIPTOR.services_by_name["Attestation"].full_name
CHALLENGE = tracing.Call.grpc(_SERVICE, "Challenge")
ATTEST = tracing.Call.grpc(_SERVICE, "Attest")
JWT_CHALLENGE = tracing.Call.grpc(_SERVICE, "JwtChallenge")
MINT_JWT_SVID = tracing.Call.grpc(_SERVICE, "MintJwtSvid")


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _bank(name: str, field: str) -> int:
    alg = _BANKS.get(name)
    if alg is None:
        raise ParseError(f"{field}: unknown PCR bank {name!r}; one of {', '.join(_BANKS)}")
    return alg


def enrollment_from_proto(message: pb.ChallengeRequest) -> UnverifiedEnrollment:
    """The enrollment a ChallengeRequest carries. Raises ParseError when a part is missing."""
    if not message.ek_public:
        raise ParseError("ek_public: missing (the EK's TPM2B_PUBLIC, tpm2_createek -u)")
    if not message.ak_public:
        raise ParseError("ak_public: missing (the AK's TPM2B_PUBLIC, tpm2_createak -u)")
    return UnverifiedEnrollment(
        ek_public=message.ek_public,
        ek_certificate=message.ek_certificate or None,
        ak_public=message.ak_public,
        ek_intermediates=tuple(message.ek_intermediates),
    )


def selection_to_proto(pcrs: Mapping[int, Iterable[int]]) -> list[pb.PcrSelection]:
    """The PCR banks and indices a quote must cover, as the wire says them."""
    return [
        pb.PcrSelection(hash=hash_name(alg), pcrs=sorted(indices))
        for alg, indices in sorted(pcrs.items())
    ]


def evidence_from_proto(message: pb.AttestRequest) -> Evidence:
    """The evidence an AttestRequest carries. Raises ParseError naming the field at fault."""
    if not message.challenge_id:
        raise ParseError("challenge_id: missing")
    if len(message.pcr_values) > MAX_PCR_VALUES:
        raise ParseError(f"pcr_values: more than {MAX_PCR_VALUES}")
    values: dict[tuple[int, int], bytes] = {}
    for i, pcr in enumerate(message.pcr_values):
        key = (_bank(pcr.hash, f"pcr_values[{i}].hash"), pcr.index)
        if key in values:
            raise ParseError(f"pcr_values[{i}]: {pcr.hash}:{pcr.index} given twice")
        values[key] = pcr.value
    if not message.csr:
        raise ParseError("csr: missing (a DER PKCS#10 request for the device key)")
    if len(message.event_log) > MAX_EVENT_LOG_BYTES:  # refused before it is read
        raise ParseError(
            f"event_log: {len(message.event_log)} bytes, more than the {MAX_EVENT_LOG_BYTES} "
            "accepted"
        )
    return Evidence(
        challenge_id=message.challenge_id,
        activated_secret=message.activated_secret,
        quote=message.quote,
        signature=message.signature,
        pcr_values=values,
        csr=message.csr,
        audience=message.audience or DEFAULT_AUDIENCE,
        event_log=message.event_log,
    )


def svid_from_proto(svid: bytes) -> bytes:
    """The DER X.509-SVID of a JwtChallenge or MintJwtSvid request, bounded before it is
    read. Raises ParseError."""
    if not svid:
        raise ParseError("svid: missing (the device's X.509-SVID, a DER certificate)")
    if len(svid) > MAX_SVID_BYTES:
        raise ParseError(f"svid: {len(svid)} bytes, more than the {MAX_SVID_BYTES} accepted")
    return svid


def jwt_proof_from_proto(message: pb.MintJwtSvidRequest) -> JwtProof:
    """The proof a MintJwtSvidRequest carries. Raises ParseError naming the field at fault."""
    if not message.challenge_id:
        raise ParseError("challenge_id: missing (from JwtChallenge)")
    if len(message.challenge_id) > MAX_CHALLENGE_ID:
        raise ParseError(f"challenge_id: longer than {MAX_CHALLENGE_ID} characters")
    if not 0 < len(message.signature) <= MAX_PROOF_SIGNATURE_BYTES:
        raise ParseError(
            f"signature: missing or longer than {MAX_PROOF_SIGNATURE_BYTES} bytes (an ECDSA "
            "signature with the SVID's key)"
        )
    return JwtProof(
        challenge_id=message.challenge_id,
        audiences=check_audiences(message.audience),
        svid=svid_from_proto(message.svid),
        signature=message.signature,
    )


def posture_to_proto(posture: Posture) -> pb.Posture:
    """Posture as the wire says it (ek_hash in hex)."""
    return pb.Posture(
        attested=posture.attested,
        device_class=posture.device_class,
        secure_boot=posture.secure_boot,
        measured_boot_ok=posture.measured_boot_ok,
        firmware_version=posture.firmware_version,
        tpm_manufacturer=posture.tpm_manufacturer,
        ek_hash=posture.ek_hash.hex(),
        region=posture.region or "",
        boot_chain=posture.boot_chain or "",
        dbx_revision=posture.dbx_revision,
        crtm_version=posture.crtm_version or "",
    )


def issued_to_proto(issued: Issued) -> pb.AttestResponse:
    """The credentials for the device: the SVID chain, the trust bundle and the JWT."""
    pem = serialization.Encoding.PEM
    return pb.AttestResponse(
        spiffe_id=issued.spiffe_id,
        svid_pem=(issued.leaf.public_bytes(pem) + issued.intermediate.public_bytes(pem)).decode(),
        bundle_pem=issued.bundle_pem.decode(),
        jwt=issued.jwt,
        svid_expires_at=_timestamp(issued.leaf.not_valid_after_utc),
        jwt_expires_at=_timestamp(issued.jwt_expires_at),
        posture=posture_to_proto(issued.posture),
        audit_index=issued.receipt.index,
    )


class AttestationServicer(pb_grpc.AttestationServicer):
    """``docket.v1.Attestation`` on an :class:`AttestationService`."""

    def __init__(self, service: AttestationService, metrics: Metrics) -> None:
        self._service = service
        self.metrics = metrics

    def _parsed(self, stage: str, parse: Callable[[], T], caller: str | None) -> T:
        """``parse()``'s result; a malformed request is refused (its reason capped, see
        :func:`engine._service.audit_entries.capped`), and the refusal recorded."""
        try:
            return parse()
        except ParseError as exc:
            # Its message may echo megabytes the caller sent: the caller and the log get
            # at most MAX_TEXT bytes of it.
            bounded = ParseError(capped(str(exc)))
            self._service.refused(stage, bounded, caller=caller, subject=None)
            raise bounded from exc

    def Challenge(
        self, request: pb.ChallengeRequest, context: grpc.ServicerContext
    ) -> pb.ChallengeResponse:
        def produce() -> pb.ChallengeResponse:
            caller = caller_identity(context)
            enrollment = self._parsed("challenge", lambda: enrollment_from_proto(request), caller)
            challenged = self._service.challenge(enrollment, caller=caller)
            challenge = challenged.challenge
            return pb.ChallengeResponse(
                challenge_id=challenge.challenge_id,
                credential=challenge.credential,
                nonce=challenge.nonce,
                expires_at=_timestamp(challenge.expires_at),
                pcrs=selection_to_proto(challenged.pcrs),
            )

        with tracing.server_span(CHALLENGE, context.invocation_metadata):
            return answer(self, "attestation_challenge", context, produce)

    def Attest(self, request: pb.AttestRequest, context: grpc.ServicerContext) -> pb.AttestResponse:
        def produce() -> pb.AttestResponse:
            caller = caller_identity(context)
            evidence = self._parsed("attest", lambda: evidence_from_proto(request), caller)
            issued = self._service.attest(evidence, caller=caller)
            tracing.annotate(span, **{"docket.spiffe_id": issued.spiffe_id})
            return issued_to_proto(issued)

        with tracing.server_span(ATTEST, context.invocation_metadata) as span:
            return answer(self, "attestation_attest", context, produce)

    def JwtChallenge(
        self, request: pb.JwtChallengeRequest, context: grpc.ServicerContext
    ) -> pb.JwtChallengeResponse:
        def produce() -> pb.JwtChallengeResponse:
            caller = caller_identity(context)
            svid = self._parsed("jwt", lambda: svid_from_proto(request.svid), caller)
            pending = self._service.jwt_challenge(svid, caller=caller)
            return pb.JwtChallengeResponse(
                challenge_id=pending.challenge_id,
                nonce=pending.nonce,
                expires_at=_timestamp(pending.expires_at),
            )

        with tracing.server_span(JWT_CHALLENGE, context.invocation_metadata):
            return answer(self, "attestation_jwt_challenge", context, produce)

    def MintJwtSvid(
        self, request: pb.MintJwtSvidRequest, context: grpc.ServicerContext
    ) -> pb.MintJwtSvidResponse:
        def produce() -> pb.MintJwtSvidResponse:
            caller = caller_identity(context)
            proof = self._parsed("jwt", lambda: jwt_proof_from_proto(request), caller)
            minted = self._service.mint_jwt(proof, caller=caller)
            tracing.annotate(span, **{"docket.spiffe_id": minted.spiffe_id})
            return pb.MintJwtSvidResponse(
                spiffe_id=minted.spiffe_id,
                jwt=minted.jwt,
                expires_at=_timestamp(minted.expires_at),
                audit_index=minted.receipt.index,
            )

        with tracing.server_span(MINT_JWT_SVID, context.invocation_metadata) as span:
            return answer(self, "attestation_mint_jwt_svid", context, produce)
