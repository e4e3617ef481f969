"""The attestation flow against Docket: ``attest`` drives the TPM through Challenge and
Attest, checks what comes back and writes the credentials."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict

from sdk._errors import ConfigurationError, InvalidRequestError, ServerError
from sdk._tls import TLSConfig
from sdk.agent._backend import TpmBackend, open_tpm
from sdk.agent._channel import dial, invoke
from sdk.agent._credentials import (
    BUNDLE_FILE,
    JWT_FILE,
    KEY_FILE,
    SVID_FILE,
    credential_files,
    device_key_and_csr,
    prepare_out,
    write_atomically,
)
from sdk.agent._pcrs import PCR_BANKS, pcr_selection
from sdk.v1 import attestation_pb2 as pb
from sdk.v1.attestation_pb2_grpc import AttestationStub

__all__ = ["KERNEL_EVENT_LOG", "AttestResult", "attest", "read_event_log"]

KERNEL_EVENT_LOG = Path("/sys/kernel/security/tpm0/binary_bios_measurements")
"""Where Linux exposes the firmware's TCG boot event log (readable by root only)."""
MAX_EVENT_LOG_BYTES = 1 << 20
"""The longest event log Docket accepts in an AttestRequest (the proto says so)."""


class AttestResult(BaseModel):
    """What ``attest`` obtained and where it wrote it.

    ``posture`` holds the claims Docket established (``device_class``, ``ek_hash``,
    ``secure_boot``, ...); the expiries are aware UTC datetimes; ``audit_index`` is the
    issuance's position in Docket's audit log.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    spiffe_id: str
    device_class: str
    svid_expires_at: datetime
    jwt_expires_at: datetime
    posture: dict[str, Any]
    audit_index: int
    svid_path: Path
    key_path: Path
    bundle_path: Path
    jwt_path: Path


def _selection_from_challenge(pcrs: Iterable[pb.PcrSelection]) -> str:
    banks: dict[str, set[int]] = {}
    for selection in pcrs:
        banks.setdefault(selection.hash, set()).update(selection.pcrs)
    try:
        return pcr_selection(banks)
    except InvalidRequestError as exc:
        raise ServerError(f"the challenge asks for PCRs this agent cannot quote: {exc}") from exc


def _pcr_values(values: Mapping[tuple[int, int], bytes]) -> list[pb.PcrValue]:
    names = {alg: name for name, (alg, _) in PCR_BANKS.items()}
    return [
        pb.PcrValue(hash=names[alg], index=index, value=value)
        for (alg, index), value in values.items()
    ]


def _check_response(
    response: pb.AttestResponse, key: ec.EllipticCurvePrivateKey, call: str
) -> None:
    """Refuse a response that is incomplete or certifies another key than ours."""
    for name in ("spiffe_id", "svid_pem", "bundle_pem", "jwt"):
        if not getattr(response, name):
            raise ServerError(f"{call} returned no {name}")
    present = {
        "svid_expires_at": response.HasField("svid_expires_at"),
        "jwt_expires_at": response.HasField("jwt_expires_at"),
        "posture": response.HasField("posture"),
    }
    for name, there in present.items():
        if not there:
            raise ServerError(f"{call} returned no {name}")
    try:
        leaf = x509.load_pem_x509_certificates(response.svid_pem.encode())[0]
        leaf_key = leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except ValueError as exc:
        raise ServerError(f"{call} returned an unreadable svid_pem: {exc}") from exc
    ours = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if leaf_key != ours:
        raise ServerError(f"{call} returned an SVID for another key than the device key")


def read_event_log(path: Path | None, *, kernel: Path = KERNEL_EVENT_LOG) -> bytes:
    """The boot event log to send: the file ``path`` when given (ConfigurationError when it
    cannot be read or is longer than Docket accepts), else the kernel's when it is there
    and readable, else none (b""). A class that appraises the log refuses a device that
    sent none, saying so."""
    if path is None:
        try:
            return kernel.read_bytes()[: MAX_EVENT_LOG_BYTES + 1]
        except OSError:  # no TPM log exposed, or not root: attest without one
            return b""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"event log {path}: cannot read: {exc.strerror}") from exc
    if len(data) > MAX_EVENT_LOG_BYTES:
        raise ConfigurationError(
            f"event log {path}: {len(data)} bytes, more than the {MAX_EVENT_LOG_BYTES} bytes "
            "Docket accepts"
        )
    return data


def _posture_dict(posture: pb.Posture) -> dict[str, Any]:
    return {
        field.name: getattr(posture, field.name)
        for field in posture.DESCRIPTOR.fields
        if not field.has_presence or posture.HasField(field.name)  # type: ignore[arg-type]
    }


def attest(
    server: str,
    tcti: str,
    out: Path,
    *,
    audience: str = "docket",
    tls: TLSConfig | None = None,
    timeout: float = 30.0,
    ek_intermediates: Sequence[bytes] = (),
    insecure_plaintext: bool = False,
    backend: TpmBackend = "auto",
    event_log: Path | None = None,
) -> AttestResult:
    """Attest the TPM at ``tcti`` to Docket at ``server`` (``HOST:PORT``) and write the
    credentials into ``out``: ``svid.pem`` (leaf then chain), ``svid.key`` (PKCS#8,
    0600), ``bundle.pem`` and ``jwt`` (0600). ``out`` is created 0700 when missing.

    Every run is a full attestation with a fresh device key, so running it again renews;
    each file is replaced atomically. ``audience`` is the JWT-SVID's; ``tls`` configures
    the channel (plaintext is allowed only to loopback unless ``insecure_plaintext``);
    ``timeout`` is each call's deadline in seconds, gRPC's retries of Challenge included
    (UNAVAILABLE and RESOURCE_EXHAUSTED, up to 3 times; Attest is sent once, since its
    first answer consumes the challenge); ``ek_intermediates`` are DER
    certificates between the EK certificate and its root, when the TPM lacks them;
    ``backend`` the TPM driver: ``"tpm2-tools"``, ``"tpm2-pytss"`` (the ``docket[tpm]``
    extra), or ``"auto"``, tpm2-tools when ``tpm2_createek`` is on PATH, else tpm2-pytss;
    ``event_log`` a recorded TCG boot event log to send, else the kernel's
    (:data:`KERNEL_EVENT_LOG`) when readable (:func:`read_event_log`).

    Raises ``PermissionDeniedError`` ("attestation refused: <reason>") when Docket
    refuses the EK, the AK or the evidence; ``TpmError``; ``TransportError`` when Docket
    cannot be reached; ``ConfigurationError`` for unusable settings or an unwritable
    ``out`` or an unknown ``backend``; ``ServerError`` for a response the agent cannot
    use.
    """
    if not timeout > 0:
        raise ConfigurationError(f"timeout must be a positive number of seconds, got {timeout}")
    log = read_event_log(event_log)
    channel = dial(server, tls, insecure_plaintext)
    prepare_out(out)
    try:
        with open_tpm(tcti, backend) as tpm:
            ek_public, ek_certificate = tpm.create_ek()
            ak_public = tpm.create_ak()
            stub = AttestationStub(channel)
            challenge = invoke(
                stub.Challenge,
                pb.ChallengeRequest(
                    ek_public=ek_public,
                    ek_certificate=ek_certificate or b"",
                    ek_intermediates=list(ek_intermediates),
                    ak_public=ak_public,
                ),
                rpc="Challenge",
                server=server,
                timeout=timeout,
            )
            selection = _selection_from_challenge(challenge.pcrs)
            secret = tpm.activate(challenge.credential)
            quote, signature = tpm.quote(challenge.nonce, selection)
            values = tpm.pcrread(selection)
            key, csr = device_key_and_csr()
            # gRPC never retries Attest (sdk._retry): its first answer consumes the challenge
            response = invoke(
                stub.Attest,
                pb.AttestRequest(
                    challenge_id=challenge.challenge_id,
                    activated_secret=secret,
                    quote=quote,
                    signature=signature,
                    pcr_values=_pcr_values(values),
                    csr=csr,
                    audience=audience,
                    event_log=log,
                ),
                rpc="Attest",
                server=server,
                timeout=timeout,
            )
    finally:
        channel.close()
    _check_response(response, key, f"Attest on {server}")
    write_atomically(out, credential_files(response, key))
    posture = _posture_dict(response.posture)
    return AttestResult(
        spiffe_id=response.spiffe_id,
        device_class=response.posture.device_class,
        svid_expires_at=response.svid_expires_at.ToDatetime(tzinfo=UTC),
        jwt_expires_at=response.jwt_expires_at.ToDatetime(tzinfo=UTC),
        posture=posture,
        audit_index=response.audit_index,
        svid_path=out / SVID_FILE,
        key_path=out / KEY_FILE,
        bundle_path=out / BUNDLE_FILE,
        jwt_path=out / JWT_FILE,
    )
