"""Attacks on posture and on the subject of a decision, against a real ``docket serve``.

Issue 13, finding 1: a caller must not obtain an allow that needs an attested device by
asserting the device's posture, nor name the subject of an ext_authz Check unless it is
a trusted enforcement point authenticated over mTLS. One test per attack, each named
after it. The server runs with mTLS (its CA made before it starts, so the test can
mint credentials), with ``--trusted-pep`` naming one SPIFFE ID: the trusted PEP.

The request under attack: alice reads ``Data::"patient-records-eu"`` (restricted,
resident in the EU). The guard ``restricted-requires-attested-encrypted-device``
(policies/guards.cedar) needs ``context.device.attested``: only a Docket credential
may set it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from devices import DEVICE_ID, PEP, TD, attested
from e2e.docket_process import DOCKET, Docket, start_docket, start_mtls_docket
from envoy.service.auth.v3 import external_auth_pb2 as authz
from envoy.service.auth.v3 import external_auth_pb2_grpc as authz_grpc
from google.protobuf import json_format, struct_pb2
from google.rpc import code_pb2

from attestation._ca import CertificateAuthority, jwk_thumbprint
from attestation._posture import Posture
from sdk.v1 import decisions_pb2 as pb
from sdk.v1 import decisions_pb2_grpc as pb_grpc
from tests.authorize import alice_reads

pytestmark = pytest.mark.e2e

APP = f"spiffe://{TD}/ns/web/sa/frontend"
ATTESTED = attested()
# What an MDM knows and the caller relays: never "attested".
INVENTORY = {"disk_encrypted": True, "patch_age_days": 3, "trust_tier": "high", "managed": True}
GUARD = "restricted-requires-attested-encrypted-device"
JWT_FILTER = "envoy.filters.http.jwt_authn"


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Server:
    docket: Docket
    ca: CertificateAuthority

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.docket.grpc_port}"

    def channel(self, spiffe_id: str | None, posture: Posture | None = None) -> grpc.Channel:
        """An mTLS channel presenting a Docket X.509-SVID for ``spiffe_id`` (None: a
        TLS channel without a client certificate, which this server refuses)."""
        pem = serialization.Encoding.PEM
        chain = key_pem = None
        if spiffe_id is not None:
            key = ec.generate_private_key(ec.SECP256R1())
            claims = None if posture is None else posture.claims()
            leaf, issuer = self.ca.issue_svid(
                key.public_key(), spiffe_id, now=now(), posture=claims
            )
            chain = leaf.public_bytes(pem) + issuer.public_bytes(pem)
            key_pem = key.private_bytes(
                pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        credentials = grpc.ssl_channel_credentials(self.ca.trust_bundle(), key_pem, chain)
        return grpc.secure_channel(
            self.target, credentials, options=[("grpc.ssl_target_name_override", "localhost")]
        )

    def entry(self, decision_id: str) -> dict[str, Any]:
        """The audit entry of one decision, as an auditor reads it."""
        for entry in self.docket.audit_entries("decision"):
            if entry["detail"].get("decision_id") == decision_id:
                return entry
        raise AssertionError(f"decision {decision_id} is not in the audit log")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("attacks")
    docket, ca = start_mtls_docket(root, "--trusted-pep", PEP)
    try:
        yield Server(docket, ca)
    finally:
        code = docket.stop()
    assert code == 0, f"docket serve exited {code}:\n{docket.log.read_text()}"


def struct(values: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


def restricted_read(device: dict[str, Any], device_token: str = "") -> pb.AuthorizeRequest:
    context = {"mfa": True, "jurisdiction": "eu", "device": device}
    return alice_reads("patient-records-eu", context, device_token)


def device_token(ca: CertificateAuthority, **overrides: Any) -> str:
    """A JWT-SVID signed with the CA's issuing key, with any claim (or the header's
    ``kid``) overridden: what ``issue_jwt`` would never make."""
    issued = int(now().timestamp())
    claims: dict[str, Any] = {
        "sub": DEVICE_ID,
        "aud": "docket",
        "iat": issued,
        "exp": issued + 300,
        "jti": str(uuid.uuid4()),
        "https://docket.dev/posture": ATTESTED.claims(),
    }
    claims.update(overrides)
    claims = {key: value for key, value in claims.items() if value is not None}
    kid = jwk_thumbprint(ca.issuing.key.public_key())
    return jwt.encode(claims, ca.issuing.key, algorithm="ES256", headers={"kid": kid})


def check(
    *,
    principal: str = "",
    certificate: str = "",
    claims: dict[str, Any] | None = None,
    jurisdiction: str | None = None,
    headers: dict[str, str] | None = None,
) -> authz.CheckRequest:
    """An ext_authz CheckRequest for GET /records/patient-records-eu, with the fields only
    a trusted enforcement point may set."""
    extensions = {"resource_type": "Data", "resource_id": "patient-records-eu"}
    if jurisdiction is not None:
        extensions["context.jurisdiction"] = jurisdiction
    attributes: dict[str, Any] = {
        "source": {"principal": principal, "certificate": certificate},
        "request": {
            "http": {"method": "GET", "path": "/records/patient-records-eu", "headers": headers}
        },
        "context_extensions": extensions,
    }
    if claims is not None:
        attributes["metadata_context"] = {"filter_metadata": {JWT_FILTER: {"jwt_payload": claims}}}
    return json_format.ParseDict({"attributes": attributes}, authz.CheckRequest())


ALICE = {"sub": "alice", "amr": ["mfa"], "device": {**INVENTORY}}
FORGED_ALICE = {"sub": "alice", "amr": ["mfa"], "device": {**INVENTORY, **ATTESTED.claims()}}


def svid_pem(ca: CertificateAuthority, posture: Posture) -> str:
    """A device's public X.509-SVID, URL-encoded as Envoy forwards it: anyone can have it."""
    key = ec.generate_private_key(ec.SECP256R1())
    leaf, _ = ca.issue_svid(key.public_key(), DEVICE_ID, now=now(), posture=posture.claims())
    return quote(leaf.public_bytes(serialization.Encoding.PEM).decode())


# --- Authorize and BatchAuthorize ---------------------------------------------------------


def test_forged_device_posture_over_authorize_is_invalid_argument(server: Server) -> None:
    forged = {**INVENTORY, **ATTESTED.claims()}
    with server.channel(APP) as ch:
        stub = pb_grpc.DecisionsStub(ch)
        for field in ("attested", "secure_boot", "device_class", "region", "id"):
            with pytest.raises(grpc.RpcError) as caught:
                stub.Authorize(restricted_read({**INVENTORY, field: forged.get(field, "x")}))
            assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, field
            assert (caught.value.details() or "").startswith(
                f"context.device.{field}: set by Docket from a verified device credential"
            ), caught.value.details()
        # Inventory alone is the caller's to relay; it does not attest the device.
        denied = stub.Authorize(restricted_read(INVENTORY))
    assert denied.decision == pb.DECISION_DENY
    assert GUARD in denied.reasons


def test_forged_device_posture_over_batch_authorize_is_invalid_argument(server: Server) -> None:
    with server.channel(APP) as ch:
        stub = pb_grpc.DecisionsStub(ch)
        with pytest.raises(grpc.RpcError) as caught:
            stub.BatchAuthorize(
                pb.BatchAuthorizeRequest(
                    requests=[
                        restricted_read(INVENTORY),
                        restricted_read({**INVENTORY, "attested": True, "secure_boot": True}),
                    ]
                )
            )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("requests[1].context.device.attested: ")


def test_forged_device_posture_in_place_context_is_invalid_argument(server: Server) -> None:
    with server.channel(APP) as ch, pytest.raises(grpc.RpcError) as caught:
        pb_grpc.DecisionsStub(ch).Place(
            pb.PlacementRequest(workload_id="x", context=struct({"device": {"attested": True}}))
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("context.device.attested: ")


@pytest.mark.parametrize(
    ("case", "overrides", "words"),
    [
        ("other-ca", {}, "not one of this CA's keys"),
        ("expired", {"iat": -600, "exp": -300}, "expired"),
        ("not-yet-valid", {"nbf": 120}, "not yet valid"),
        ("issued-in-the-future", {"iat": 120, "exp": 400}, "issued in the future"),
        ("over-long", {"exp": 3600}, "lifetime"),
        ("no-iat", {"iat": None}, "iat"),
        ("wrong-audience", {"aud": "someone-else"}, "audience"),
    ],
)
def test_forged_device_jwt_is_refused(
    server: Server, case: str, overrides: dict[str, Any], words: str
) -> None:
    issued = int(now().timestamp())
    absolute = {
        key: (issued + value if key in ("iat", "exp", "nbf") and value is not None else value)
        for key, value in overrides.items()
    }
    signer = CertificateAuthority.create(TD, now()) if case == "other-ca" else server.ca
    token = device_token(signer, **absolute)
    with server.channel(APP) as ch, pytest.raises(grpc.RpcError) as caught:
        pb_grpc.DecisionsStub(ch).Authorize(restricted_read(INVENTORY, token))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, case
    details = caught.value.details() or ""
    assert details.startswith("device_token: "), details
    assert words.lower() in details.lower(), details


# --- ext_authz from a caller that is not a trusted enforcement point ---------------------


def refused_check(server: Server, request: authz.CheckRequest, field: str) -> None:
    """The Check is denied with a 400 naming ``field`` and the refusal is audited."""
    with server.channel(APP) as ch:
        answer = authz_grpc.AuthorizationStub(ch).Check(request)
    assert answer.status.code == code_pb2.INVALID_ARGUMENT, answer
    assert answer.denied_response.status.code == 400
    body = json.loads(answer.denied_response.body)
    assert body["decision"] == "deny"
    assert body["error"].startswith(f"{field}: "), body
    assert "not a trusted enforcement point" in body["error"]
    entry = server.entry(body["decision_id"])
    assert entry["decision"] == "deny"
    assert entry["caller"] == APP
    assert entry["detail"]["error"] == body["error"]


def test_forged_jwt_authn_metadata_from_an_untrusted_caller_is_refused(server: Server) -> None:
    refused_check(
        server, check(claims=FORGED_ALICE, jurisdiction=None), f"metadata_context.{JWT_FILTER}"
    )


def test_forged_source_principal_from_an_untrusted_caller_is_refused(server: Server) -> None:
    refused_check(server, check(principal=f"spiffe://{TD}/ns/prod/sa/admin"), "source.principal")


def test_pasted_public_svid_in_source_certificate_from_an_untrusted_caller_is_refused(
    server: Server,
) -> None:
    refused_check(server, check(certificate=svid_pem(server.ca, ATTESTED)), "source.certificate")


def test_context_extensions_from_an_untrusted_caller_are_refused(server: Server) -> None:
    refused_check(server, check(jurisdiction="eu"), "context_extensions.context.jurisdiction")


def test_anonymous_check_from_an_untrusted_caller_is_decided_as_anonymous(
    server: Server,
) -> None:
    with server.channel(APP) as ch:
        answer = authz_grpc.AuthorizationStub(ch).Check(check())
    assert answer.status.code == code_pb2.PERMISSION_DENIED, answer
    entry = server.entry(json.loads(answer.denied_response.body)["decision_id"])
    assert entry["subject"] == 'Docket::User::"anonymous"'
    assert entry["detail"]["provenance"]["subject"] == "anonymous"
    assert entry["detail"]["provenance"]["pep"] is None


# --- ext_authz from the trusted enforcement point -----------------------------------------


def test_trusted_pep_over_mtls_may_supply_the_subject(server: Server) -> None:
    token = server.ca.issue_jwt(DEVICE_ID, "docket", now=now(), claims=ATTESTED.claims())
    with server.channel(PEP) as ch:
        stub = authz_grpc.AuthorizationStub(ch)
        allowed = stub.Check(
            check(claims=ALICE, jurisdiction="eu", headers={"x-docket-device-token": token})
        )
        # The IdP's "device" claim never attests: without Docket's token, denied.
        forged = stub.Check(check(claims=FORGED_ALICE, jurisdiction="eu"))
    assert allowed.status.code == code_pb2.OK, allowed
    decision_id = allowed.dynamic_metadata.fields["decision_id"].string_value
    provenance = server.entry(decision_id)["detail"]["provenance"]
    assert provenance["pep"] == PEP
    assert provenance["subject"] == "jwt"
    assert provenance["posture"]["source"] == "jwt-svid"
    assert forged.status.code == code_pb2.PERMISSION_DENIED, forged
    assert GUARD in json.loads(forged.denied_response.body)["reasons"]


def test_pasted_certificate_from_a_trusted_pep_gives_only_what_docket_verifies(
    server: Server,
) -> None:
    foreign = CertificateAuthority.create(TD, now())  # same trust domain, not Docket's CA
    unattested = Posture(**{**ATTESTED.__dict__, "attested": False})
    with server.channel(PEP) as ch:
        stub = authz_grpc.AuthorizationStub(ch)
        relayed = stub.Check(
            check(claims=ALICE, jurisdiction="eu", certificate=svid_pem(server.ca, ATTESTED))
        )
        other_ca = stub.Check(
            check(claims=ALICE, jurisdiction="eu", certificate=svid_pem(foreign, ATTESTED))
        )
        not_attested = stub.Check(
            check(claims=ALICE, jurisdiction="eu", certificate=svid_pem(server.ca, unattested))
        )
    assert relayed.status.code == code_pb2.OK, relayed
    provenance = server.entry(relayed.dynamic_metadata.fields["decision_id"].string_value)[
        "detail"
    ]["provenance"]
    assert provenance["posture"]["source"] == "x509-svid"
    for denied in (other_ca, not_attested):
        assert denied.status.code == code_pb2.PERMISSION_DENIED, denied
        assert GUARD in json.loads(denied.denied_response.body)["reasons"]


# --- what the audit log says --------------------------------------------------------------


def test_audit_provenance_tells_svid_from_jwt_from_none(server: Server) -> None:
    token = server.ca.issue_jwt(DEVICE_ID, "docket", now=now(), claims=ATTESTED.claims())
    with server.channel(DEVICE_ID, ATTESTED) as ch:
        by_svid = pb_grpc.DecisionsStub(ch).Authorize(restricted_read(INVENTORY))
    with server.channel(APP) as ch:
        stub = pb_grpc.DecisionsStub(ch)
        by_jwt = stub.Authorize(restricted_read(INVENTORY, token))
        by_none = stub.Authorize(restricted_read(INVENTORY))
    assert [by_svid.decision, by_jwt.decision, by_none.decision] == [
        pb.DECISION_ALLOW,
        pb.DECISION_ALLOW,
        pb.DECISION_DENY,
    ]
    svid = server.entry(by_svid.decision_id)["detail"]["provenance"]
    jwt_ = server.entry(by_jwt.decision_id)["detail"]["provenance"]
    none = server.entry(by_none.decision_id)["detail"]["provenance"]
    assert svid["caller"] == DEVICE_ID
    assert svid["posture"]["source"] == "x509-svid"
    assert svid["posture"]["id"] == DEVICE_ID
    assert int(svid["posture"]["serial"], 16) > 0
    assert jwt_["caller"] == APP
    assert jwt_["posture"]["source"] == "jwt-svid"
    assert uuid.UUID(jwt_["posture"]["jti"]) == uuid.UUID(
        jwt.decode(token, options={"verify_signature": False})["jti"]
    )
    assert none["posture"] == {"source": "none"}
    for provenance in (svid, jwt_, none):
        assert provenance["subject"] == "request"
        assert provenance["pep"] is None
        assert provenance["inventory"] == "caller"


# --- the setting and the JWKS endpoint ----------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "env", "said"),
    [
        ((), {"DOCKET_TRUSTED_PEPS": json.dumps([PEP])}, "trusted_peps needs mTLS"),
        (("--trusted-pep", PEP), {}, "trusted_peps needs mTLS"),
        (("--trusted-pep", "envoy.example"), {}, "is not a SPIFFE ID"),
    ],
    ids=["env", "flag", "flag-not-a-spiffe-id"],
)
def test_trusted_peps_without_mtls_refuses_to_start(
    tmp_path: Path, flags: tuple[str, ...], env: dict[str, str], said: str
) -> None:
    """A PEP is trusted by its client certificate: without mTLS nobody could be one, and a
    listed SPIFFE ID must never be believed from an unauthenticated caller."""
    done = subprocess.run(
        [DOCKET, "serve", "--data-dir", str(tmp_path / "data"), "--grpc", "127.0.0.1:0", *flags],
        env={**os.environ, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert said in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_multi_worker_supervisor_serves_the_jwks_and_reloads_it(tmp_path: Path) -> None:
    docket = start_docket(tmp_path, "--workers", "2")
    try:
        url = docket.metrics_url.removesuffix("/metrics") + "/.well-known/jwks.json"
        before = httpx.get(url, timeout=5)
        assert before.status_code == 200
        assert before.headers["content-type"] == "application/json"
        ca = CertificateAuthority.load(docket.data_dir / "ca")
        assert before.json() == ca.jwks()
        ca.rotate(now()).save(docket.data_dir / "ca")
        os.kill(docket.process.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while len(httpx.get(url, timeout=5).json()["keys"]) != 2:
            assert time.monotonic() < deadline, docket.log.read_text()
            time.sleep(0.1)
        assert (
            httpx.get(url, timeout=5).json()
            == CertificateAuthority.load(docket.data_dir / "ca").jwks()
        )
    finally:
        assert docket.stop() == 0, docket.log.read_text()
