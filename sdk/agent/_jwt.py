"""JWT-SVIDs for any audiences, for the holder of a Docket X.509-SVID: ask Docket for a
nonce (``JwtChallenge``), sign it and the audiences with the SVID's key
(``jwt_svid_proof``), and get the token (``MintJwtSvid``). No TPM is involved: the
SVID's key is the proof of possession, and Docket checks that the SVID is live and
unrevoked. The nonce is single use, so a proof seen on the wire cannot be replayed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sdk._errors import ServerError
from sdk._tls import TLSConfig
from sdk.agent._channel import dial, invoke
from sdk.agent._identity import Identity
from sdk.v1 import attestation_pb2 as pb
from sdk.v1.attestation_pb2_grpc import AttestationStub

__all__ = ["PROOF_CONTEXT", "MintedJwt", "jwt_svid_proof", "mint_jwt_svid"]

PROOF_CONTEXT: Final = b"docket jwt-svid proof v1\x00"
"""What a proof starts with: a signature over it is good for nothing else."""


def jwt_svid_proof(challenge_id: str, nonce: bytes, audiences: Sequence[str]) -> bytes:
    """The bytes a device signs with its X.509-SVID's key to be minted a JWT-SVID for
    ``audiences`` (``docket.v1.MintJwtSvidRequest``): :data:`PROOF_CONTEXT`, then the
    challenge id, the nonce and each audience in order, each as a 4-byte big-endian
    length and its bytes (so no two requests sign the same bytes)."""
    parts = [challenge_id.encode(), nonce, *(audience.encode() for audience in audiences)]
    return PROOF_CONTEXT + b"".join(len(part).to_bytes(4, "big") + part for part in parts)


@dataclass(frozen=True)
class MintedJwt:
    """A JWT-SVID Docket minted, and when it expires (aware UTC)."""

    token: str
    expires_at: datetime


def mint_jwt_svid(
    server: str,
    identity: Identity,
    audiences: Sequence[str],
    *,
    tls: TLSConfig | None = None,
    timeout: float = 30.0,
    insecure_plaintext: bool = False,
) -> MintedJwt:
    """A JWT-SVID of ``identity`` for ``audiences`` from Docket at ``server``, proven with
    the SVID's key (two calls: a challenge, then the signed request; neither is retried
    after it reached Docket).

    Raises ``PermissionDeniedError`` ("attestation refused: <reason>") when Docket
    refuses (a revoked or expired SVID, a proof that does not verify),
    ``InvalidRequestError`` for audiences Docket does not accept, ``TransportError`` when
    it cannot be reached, ``ConfigurationError`` for unusable settings, ``ServerError``
    for an answer the agent cannot use.
    """
    leaf = identity.chain[0].public_bytes(serialization.Encoding.DER)
    key = serialization.load_der_private_key(identity.key_der, None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ServerError("the SVID's key is not an ECDSA key: it cannot sign a proof")
    channel = dial(server, tls, insecure_plaintext)
    try:
        stub = AttestationStub(channel)
        challenge = invoke(
            stub.JwtChallenge,
            pb.JwtChallengeRequest(svid=leaf),
            rpc="JwtChallenge",
            server=server,
            timeout=timeout,
        )
        proof = jwt_svid_proof(challenge.challenge_id, challenge.nonce, audiences)
        response = invoke(
            stub.MintJwtSvid,
            pb.MintJwtSvidRequest(
                challenge_id=challenge.challenge_id,
                audience=list(audiences),
                svid=leaf,
                signature=key.sign(proof, ec.ECDSA(hashes.SHA256())),
            ),
            rpc="MintJwtSvid",
            server=server,
            timeout=timeout,
        )
    finally:
        channel.close()
    call = f"MintJwtSvid on {server}"
    if not response.jwt or not response.HasField("expires_at"):
        raise ServerError(f"{call} returned no jwt or no expires_at")
    if response.spiffe_id != identity.spiffe_id:
        raise ServerError(f"{call} returned a JWT-SVID for {response.spiffe_id!r}")
    return MintedJwt(response.jwt, response.expires_at.ToDatetime(tzinfo=UTC))
