"""Envoy ext_authz v3 Check on the in-process server (real Envoy: tests/e2e).

The gRPC tests call as a trusted enforcement point over mTLS (:func:`pep_server`), the
only caller whose Check may name a subject; the attacks from anyone else are in
tests/e2e/test_attacks_posture.py."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from devices import PEP, attested, server_settings
from envoy.service.auth.v3 import external_auth_pb2 as authz
from envoy.service.auth.v3 import external_auth_pb2_grpc as authz_grpc
from google.protobuf import json_format
from google.rpc import code_pb2
from serving import DEVICE, Running

from attestation._ca import CertificateAuthority
from engine._adapters.ext_authz import check_to_request, loggable_headers
from engine._errors import RequestError

ROOT = Path(__file__).resolve().parents[3]
BILLING = "spiffe://docket.example/ns/finance/sa/billing-api"
ATTESTED = {"attested": True, "secure_boot": True}


@dataclass
class PepServer:
    """An in-process server with mTLS that trusts :data:`PEP`, and its CA."""

    running: Running
    ca: CertificateAuthority

    def channel(self, spiffe_id: str = PEP) -> grpc.Channel:
        """An mTLS channel as ``spiffe_id`` (a Docket X.509-SVID)."""
        at = datetime.now(UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        leaf, issuer = self.ca.issue_svid(key.public_key(), spiffe_id, now=at)
        pem = serialization.Encoding.PEM
        credentials = grpc.ssl_channel_credentials(
            self.ca.trust_bundle(),
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
            leaf.public_bytes(pem) + issuer.public_bytes(pem),
        )
        return grpc.secure_channel(
            self.running.target,
            credentials,
            options=[("grpc.ssl_target_name_override", "localhost")],
        )

    def device_token(self) -> str:
        """A device's JWT-SVID with an attested posture, from this server's CA."""
        posture = attested(ek_hash=bytes(32))
        return self.ca.issue_jwt(
            f"spiffe://docket.local/device/{bytes(32).hex()}",
            "docket",
            now=datetime.now(UTC),
            claims=posture.claims(),
        )


def start_pep_server(root: Path, **settings: Any) -> PepServer:
    """A server whose CA is made first (so its TLS is the CA's) and that trusts PEP."""
    config, ca = server_settings(root, **settings)
    return PepServer(Running(config), ca)


@pytest.fixture(scope="module")
def pep_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PepServer]:
    running = start_pep_server(tmp_path_factory.mktemp("pep"))
    try:
        yield running
    finally:
        running.running.stop()


def check(
    *,
    principal: str = "",
    method: str = "GET",
    path: str = "/records/employee-directory?page=2",
    routes: dict[str, str] | None = None,
    claims: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> authz.CheckRequest:
    document: dict[str, Any] = {
        "attributes": {
            "source": {
                "principal": principal,
                "address": {"socket_address": {"address": "10.1.2.3", "port_value": 5555}},
            },
            "request": {
                "http": {
                    "method": method,
                    "path": path,
                    "host": "records.internal",
                    "headers": headers or {},
                }
            },
            "context_extensions": routes
            if routes is not None
            else {"resource_type": "Data", "resource_id": "employee-directory"},
        }
    }
    if claims is not None:
        document["attributes"]["metadata_context"] = {
            "filter_metadata": {"envoy.filters.http.jwt_authn": {"jwt_payload": claims}}
        }
    return json_format.ParseDict(document, authz.CheckRequest())


@pytest.fixture
def envoy_stub(pep_server: PepServer) -> Iterator[authz_grpc.AuthorizationStub]:
    with pep_server.channel() as channel:
        yield authz_grpc.AuthorizationStub(channel)


def test_mapping() -> None:
    request = check_to_request(
        check(
            claims={"sub": "alice", "amr": ["pwd", "mfa"], "device": DEVICE, "iat": 1.5},
            routes={
                "resource_type": "Data",
                "resource_id": "patient-records-eu",
                "context.jurisdiction": "eu",
            },
        ),
        caller="spiffe://docket.example/ns/mesh/sa/envoy",
        trusted_pep=True,
    )
    assert (request.principal.type, request.principal.id) == ("User", "alice")
    assert request.action.id == "read"
    assert (request.resource.type, request.resource.id) == ("Data", "patient-records-eu")
    assert request.context == {
        "http": {
            "method": "GET",
            "path": "/records/employee-directory",
            "host": "records.internal",
        },
        "source_ip": "10.1.2.3",
        "mfa": True,
        "device": DEVICE,
        "jurisdiction": "eu",
        "caller": "spiffe://docket.example/ns/mesh/sa/envoy",
    }


@pytest.mark.parametrize(
    ("method", "action"),
    [("GET", "read"), ("HEAD", "read"), ("DELETE", "delete"), ("PUT", "write")],
)
def test_action_from_method(method: str, action: str) -> None:
    assert check_to_request(check(method=method)).action.id == action


def test_mtls_principal_wins_and_route_action() -> None:
    request = check_to_request(
        check(
            principal=BILLING,
            claims={"sub": "alice"},
            routes={"resource_id": "quarterly-forecast", "action": "share"},
        ),
        trusted_pep=True,
    )
    assert (request.principal.type, request.principal.id) == ("Workload", BILLING)
    assert (request.resource.type, request.action.id) == ("Data", "share")


def test_jwt_header_in_the_same_metadata_is_not_taken_for_the_payload() -> None:
    document = {
        "attributes": {
            "request": {"http": {"method": "GET", "path": "/"}},
            "context_extensions": {"resource_id": "x"},
            "metadata_context": {
                "filter_metadata": {
                    "envoy.filters.http.jwt_authn": {
                        "a_header": {"alg": "RS256", "kid": "k1"},
                        "jwt_payload": {"sub": "alice"},
                    }
                }
            },
        }
    }
    request = check_to_request(
        json_format.ParseDict(document, authz.CheckRequest()), trusted_pep=True
    )
    assert request.principal.id == "alice"


def test_no_identity_is_anonymous() -> None:
    assert check_to_request(check()).principal.id == "anonymous"


def test_an_idp_device_claim_never_attests() -> None:
    request = check_to_request(
        check(claims={"sub": "alice", "device": {**DEVICE, **ATTESTED, "id": "x"}}),
        trusted_pep=True,
    )
    assert request.context["device"] == DEVICE


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        pytest.param(check(principal=BILLING), "source.principal", id="principal"),
        pytest.param(
            check(claims={"sub": "alice"}),
            "metadata_context.envoy.filters.http.jwt_authn",
            id="jwt-metadata",
        ),
        pytest.param(
            check(routes={"resource_id": "x", "context.jurisdiction": "eu"}),
            "context_extensions.context.jurisdiction",
            id="context-extension",
        ),
    ],
)
def test_subject_fields_need_a_trusted_enforcement_point(
    request_: authz.CheckRequest, field: str
) -> None:
    with pytest.raises(RequestError, match="not a trusted enforcement point") as caught:
        check_to_request(request_, "spiffe://docket.local/ns/web/sa/app")
    assert str(caught.value).startswith(f"{field}: ")
    assert check_to_request(request_, PEP, trusted_pep=True).resource.id


def test_a_trusted_pep_may_relay_a_device_token(
    pep_server: PepServer, envoy_stub: authz_grpc.AuthorizationStub
) -> None:
    readable = {
        "claims": {"sub": "alice", "mfa": True, "device": DEVICE},
        "routes": {"resource_id": "patient-records-eu", "context.jurisdiction": "eu"},
    }
    denied = envoy_stub.Check(check(**readable), timeout=5)
    assert denied.status.code == code_pb2.PERMISSION_DENIED
    token = {"x-docket-device-token": pep_server.device_token()}
    allowed = envoy_stub.Check(check(**readable, headers=token), timeout=5)
    assert allowed.status.code == code_pb2.OK, allowed


def test_authorization_headers_are_never_logged() -> None:
    headers = {"Authorization": "Bearer secret", "Cookie": "s=1", "X-Request-Id": "r1"}
    assert loggable_headers(headers) == {"x-request-id": "r1"}


def test_allow_adds_the_decision_header(
    pep_server: PepServer, envoy_stub: authz_grpc.AuthorizationStub
) -> None:
    # alice (clinical) reads EU patient records with MFA, from an attested device, in the EU.
    response = envoy_stub.Check(
        check(
            claims={"sub": "alice", "mfa": True, "device": DEVICE},
            routes={"resource_id": "patient-records-eu", "context.jurisdiction": "eu"},
            headers={"x-docket-device-token": pep_server.device_token()},
        ),
        timeout=5,
    )
    assert response.status.code == code_pb2.OK, response
    (header,) = response.ok_response.headers
    assert header.header.key == "x-docket-decision-id"
    uuid.UUID(header.header.value)
    assert response.dynamic_metadata["decision_id"] == header.header.value
    assert response.dynamic_metadata["decision"] == "allow"


def test_idp_sub_naming_a_workload_spiffe_id_stays_a_user(
    envoy_stub: authz_grpc.AuthorizationStub,
) -> None:
    # An identity provider's `sub` that happens to be a workload's SPIFFE ID is a User:
    # user-only rules (MFA for confidential data) still apply to it.
    response = envoy_stub.Check(
        check(
            claims={"sub": "spiffe://docket.example/ns/finance/sa/billing-api"},
            routes={"resource_id": "quarterly-forecast", "context.jurisdiction": "eu"},
        ),
        timeout=5,
    )
    assert response.status.code == code_pb2.PERMISSION_DENIED, response
    assert "confidential-requires-mfa" in json.loads(response.denied_response.body)["reasons"]


def test_deny_is_403_with_a_json_body(envoy_stub: authz_grpc.AuthorizationStub) -> None:
    # The public web frontend may not read payroll.
    response = envoy_stub.Check(
        check(
            principal="spiffe://docket.example/ns/public-web/sa/web-frontend",
            routes={"resource_id": "payroll-uk"},
        ),
        timeout=5,
    )
    assert response.status.code == code_pb2.PERMISSION_DENIED
    assert response.denied_response.status.code == 403
    body = json.loads(response.denied_response.body)
    assert body["decision"] == "deny"
    assert body["decision_id"] == response.dynamic_metadata["decision_id"]
    assert isinstance(body["reasons"], list)
    headers = {h.header.key: h.header.value for h in response.denied_response.headers}
    assert headers["content-type"] == "application/json"
    assert headers["x-docket-decision-id"] == body["decision_id"]


@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        pytest.param(check(routes={}), "resource_id", id="route-without-resource"),
        pytest.param(check(method=""), "method", id="no-method"),
        pytest.param(
            check(claims={"sub": "alice", "device": {"attested": 1.5}}), "jwt", id="float"
        ),
        pytest.param(
            check(claims={"sub": "alice", "device": {"managed": "yes"}}), "context", id="schema"
        ),
        pytest.param(
            check(routes={"resource_id": "x", "context.caller": "spiffe://forged"}),
            "caller",
            id="forged-caller",
        ),
    ],
)
def test_unmappable_input_is_denied_with_400(
    envoy_stub: authz_grpc.AuthorizationStub, request_: authz.CheckRequest, needle: str
) -> None:
    response = envoy_stub.Check(request_, timeout=5)
    assert response.status.code == code_pb2.INVALID_ARGUMENT
    assert response.denied_response.status.code == 400
    body = json.loads(response.denied_response.body)
    assert body["decision"] == "deny"
    assert needle in body["error"]
    assert body["decision_id"] == response.dynamic_metadata["decision_id"]
