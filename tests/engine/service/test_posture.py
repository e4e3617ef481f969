"""Attested posture reaches decisions: a Docket JWT-SVID (``device_token``) or X.509-SVID
(mTLS) sets the attested claims of ``context.device``; other certificates do not."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import grpc
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from devices import DEVICE_ID, PEP, TD, attested, server_settings
from envoy.service.auth.v3 import external_auth_pb2 as authz
from envoy.service.auth.v3 import external_auth_pb2_grpc as authz_grpc
from google.protobuf import json_format, struct_pb2
from google.rpc import code_pb2
from pki import PKI
from serving import Running

from attestation._ca import (
    REVOCATIONS_FILE,
    CertificateAuthority,
    RevocationList,
    TokenError,
    jwk_thumbprint,
)
from attestation._posture import Posture
from engine._core.models import EntityUID, Request
from engine._errors import RequestError, ServeError
from engine._runtime.settings import Settings
from engine._service.metrics import REVOCATIONS_PATH, serve_metrics
from engine._service.posture import PostureReader, Proven, attach, provenance, with_device
from sdk import DecisionClient, TLSConfig
from sdk.v1 import decisions_pb2 as pb
from sdk.v1 import decisions_pb2_grpc as pb_grpc
from tests.authorize import alice_reads

ROOT = Path(__file__).resolve().parents[3]
ATTESTED = attested(measured_boot_ok=False)
DATA = {"type": "Data", "id": "patient-records-eu"}
# What an MDM says about the device; it cannot say "attested" (Docket says it is not,
# unless a Docket credential says it is).
INVENTORY = {"disk_encrypted": True, "patch_age_days": 3, "trust_tier": "high", "managed": True}


def now() -> datetime:
    return datetime.now(UTC)


def struct(values: dict[str, object]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


def restricted_read(device_token: str = "") -> pb.AuthorizeRequest:
    """alice reads EU patient records (restricted: needs an attested device)."""
    context = {"mfa": True, "jurisdiction": "eu", "device": INVENTORY}
    return alice_reads("patient-records-eu", context, device_token)


@pytest.fixture(scope="module")
def ca_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Running, CertificateAuthority]]:
    """A server whose CA is made first, so that its TLS is the CA's and mTLS clients
    present Docket X.509-SVIDs."""
    root = tmp_path_factory.mktemp("posture")
    settings, ca = server_settings(root)
    running = Running(settings)
    try:
        yield running, ca
    finally:
        running.stop()


def channel(
    running: Running,
    ca: CertificateAuthority,
    posture: Posture | None,
    spiffe_id: str = DEVICE_ID,
) -> grpc.Channel:
    key = ec.generate_private_key(ec.SECP256R1())
    claims = None if posture is None else posture.claims()
    leaf, intermediate = ca.issue_svid(key.public_key(), spiffe_id, now=now(), posture=claims)
    pem = serialization.Encoding.PEM
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.trust_bundle(),
        private_key=key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        certificate_chain=leaf.public_bytes(pem) + intermediate.public_bytes(pem),
    )
    return grpc.secure_channel(
        running.target, credentials, options=[("grpc.ssl_target_name_override", "localhost")]
    )


def test_device_token_makes_the_same_request_allowed(
    ca_server: tuple[Running, CertificateAuthority],
) -> None:
    running, ca = ca_server
    token = ca.issue_jwt(DEVICE_ID, "docket", now=now(), claims=ATTESTED.claims())
    with channel(running, ca, None) as ch:  # an SVID without posture: identity only
        stub = pb_grpc.DecisionsStub(ch)
        denied = stub.Authorize(restricted_read())
        assert denied.decision == pb.DECISION_DENY
        assert "restricted-requires-attested-encrypted-device" in denied.reasons
        allowed = stub.Authorize(restricted_read(token))
        assert allowed.decision == pb.DECISION_ALLOW, allowed
        batch = stub.BatchAuthorize(
            pb.BatchAuthorizeRequest(requests=[restricted_read(), restricted_read(token)])
        )
        assert [r.decision for r in batch.results] == [pb.DECISION_DENY, pb.DECISION_ALLOW]


def test_a_batch_sharing_one_context_gets_each_requests_own_posture(
    ca_server: tuple[Running, CertificateAuthority],
) -> None:
    """The requests of a batch share their context (one object, read once) and each
    distinct posture is attached once; a request with the token and one without, taking
    turns, still get their own posture and their own entry's provenance."""
    running, ca = ca_server
    token = ca.issue_jwt(DEVICE_ID, "docket", now=now(), claims=ATTESTED.claims())
    sent = [restricted_read(token), restricted_read(), restricted_read(token), restricted_read()]
    with channel(running, ca, None) as ch:
        batch = pb_grpc.DecisionsStub(ch).BatchAuthorize(pb.BatchAuthorizeRequest(requests=sent))
    assert [r.decision for r in batch.results] == [pb.DECISION_ALLOW, pb.DECISION_DENY] * 2
    store = running.worker.audit.store
    sources = []
    for result in batch.results:
        row = store.entry(result.receipt.index)
        assert row is not None
        assert row.payload is not None
        entry = json.loads(row.payload)
        assert entry["detail"]["decision_id"] == result.decision_id
        sources.append(entry["detail"]["provenance"]["posture"]["source"])
    assert sources == ["jwt-svid", "none", "jwt-svid", "none"]


BOOTED = Posture(
    **{
        **ATTESTED.__dict__,
        "measured_boot_ok": True,
        "boot_chain": "c0" * 32,
        "dbx_revision": 371,
        "crtm_version": "1.0.2",
    }
)


def test_boot_facts_of_a_credential_reach_the_decision_and_a_caller_cannot_send_them(
    ca_server: tuple[Running, CertificateAuthority],
) -> None:
    running, ca = ca_server
    token = ca.issue_jwt(DEVICE_ID, "docket", now=now(), claims=BOOTED.claims())
    with channel(running, ca, None) as ch:
        stub = pb_grpc.DecisionsStub(ch)
        allowed = stub.Authorize(restricted_read(token))
        assert allowed.decision == pb.DECISION_ALLOW, allowed
        for field, value in (("boot_chain", "c0" * 32), ("dbx_revision", 1), ("crtm_version", "x")):
            forged = restricted_read(token)
            forged.context.fields["device"].struct_value.update({field: value})
            with pytest.raises(grpc.RpcError) as caught:
                stub.Authorize(forged)
            assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, field
            assert (caught.value.details() or "").startswith(f"context.device.{field}: set by")


def test_a_token_that_does_not_verify_is_invalid_argument(
    ca_server: tuple[Running, CertificateAuthority],
) -> None:
    running, ca = ca_server
    other = CertificateAuthority.create(TD, now())
    bad = {
        "foreign": other.issue_jwt(DEVICE_ID, "docket", now=now(), claims=ATTESTED.claims()),
        "audience": ca.issue_jwt(DEVICE_ID, "elsewhere", now=now(), claims=ATTESTED.claims()),
        "expired": ca.issue_jwt(
            DEVICE_ID, "docket", now=now() - timedelta(minutes=10), claims=ATTESTED.claims()
        ),
        "no posture": ca.issue_jwt(DEVICE_ID, "docket", now=now()),
        "bad posture": ca.issue_jwt(
            DEVICE_ID, "docket", now=now(), claims={**ATTESTED.claims(), "attested": "yes"}
        ),
        "garbage": "not.a.jwt",
    }
    with channel(running, ca, None) as ch:
        stub = pb_grpc.DecisionsStub(ch)
        for name, token in bad.items():
            with pytest.raises(grpc.RpcError) as caught:
                stub.Authorize(restricted_read(token))
            assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, name
            assert "device_token" in (caught.value.details() or ""), name


def test_mtls_svid_with_posture_attests_the_caller(
    ca_server: tuple[Running, CertificateAuthority],
) -> None:
    running, ca = ca_server
    with channel(running, ca, ATTESTED) as ch:
        allowed = pb_grpc.DecisionsStub(ch).Authorize(restricted_read())
    assert allowed.decision == pb.DECISION_ALLOW, allowed
    unattested = Posture(**{**ATTESTED.__dict__, "attested": False})
    with channel(running, ca, unattested) as ch:
        denied = pb_grpc.DecisionsStub(ch).Authorize(restricted_read())
    assert denied.decision == pb.DECISION_DENY


def test_posture_claims_replace_what_the_caller_said(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(TD, now())
    reader = PostureReader(ca, "docket")
    token = ca.issue_jwt(DEVICE_ID, "docket", now=now(), claims=ATTESTED.claims())
    request = Request(
        principal=EntityUID(type="User", id="alice"),
        action=EntityUID(type="Action", id="read"),
        resource=EntityUID(type="Data", id="x"),
        context={"device": {**INVENTORY, "device_class": "forged", "id": "forged"}},
    )
    proven = reader.from_token(token, now())
    device = attach(request, proven).context["device"]
    assert device == {**INVENTORY, **ATTESTED.claims(), "id": DEVICE_ID}
    # No credential: the device the caller described is not attested.
    assert attach(request, None).context["device"] == {
        **INVENTORY,
        "device_class": "forged",
        "id": "forged",
        "attested": False,
        "secure_boot": False,
    }
    bare = request.model_copy(update={"context": {}})
    assert attach(bare, None) is bare
    assert provenance(request, proven, caller="spiffe://docket.local/app") == {
        "caller": "spiffe://docket.local/app",
        "posture": {"source": "jwt-svid", "jti": proven.reference, "id": DEVICE_ID},
        "pep": None,
        "subject": "request",
        "inventory": "caller",
    }
    assert provenance(bare, None, caller=None)["posture"] == {"source": "none"}
    assert provenance(bare, None, caller=None)["inventory"] == "none"
    assert with_device({}, DEVICE_ID, {"attested": True}) == {
        "device": {"attested": True, "id": DEVICE_ID}
    }


def test_certificates_of_other_cas_carry_no_posture(pki: PKI) -> None:
    ca = CertificateAuthority.create(TD, now())
    reader = PostureReader(ca, "docket")
    other = pki.client("web", "spiffe://docket.local/ns/web/sa/x")
    assert reader.from_certificate(other.cert.read_bytes(), now()) is None
    assert reader.from_certificate(b"not a certificate", now()) is None
    key = ec.generate_private_key(ec.SECP256R1())
    leaf, _ = ca.issue_svid(key.public_key(), DEVICE_ID, now=now(), posture=ATTESTED.claims())
    pem = leaf.public_bytes(serialization.Encoding.PEM)
    proven = reader.from_certificate(pem, now())
    assert proven == Proven(DEVICE_ID, ATTESTED.claims(), "x509-svid", f"{leaf.serial_number:x}")
    # Cached, but the validity window is checked on every use.
    assert reader.from_certificate(pem, now() + timedelta(hours=2)) is None


def test_sdk_client_sends_the_device_token(
    ca_server: tuple[Running, CertificateAuthority], tmp_path: Path
) -> None:
    running, ca = ca_server
    key = ec.generate_private_key(ec.SECP256R1())
    leaf, intermediate = ca.issue_svid(key.public_key(), DEVICE_ID, now=now())
    pem = serialization.Encoding.PEM
    tls = TLSConfig(
        ca_cert=ca.trust_bundle(),
        client_cert=leaf.public_bytes(pem) + intermediate.public_bytes(pem),
        client_key=key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        server_name="localhost",
    )
    token = ca.issue_jwt(DEVICE_ID, "docket", now=now(), claims=ATTESTED.claims())
    parts = {
        "context": {"mfa": True, "jurisdiction": "eu", "device": INVENTORY},
    }
    with DecisionClient(running.target, tls=tls) as client:
        denied = client.authorize({"type": "User", "id": "alice"}, "read", DATA, **parts)
        allowed = client.authorize(
            {"type": "User", "id": "alice"}, "read", DATA, device_token=token, **parts
        )
        whole = client.authorize(
            {
                "principal": {"type": "User", "id": "alice"},
                "action": "read",
                "resource": DATA,
                "device_token": token,
                **parts,
            }
        )
        (batched,) = client.authorize_batch(
            [
                {
                    "principal": {"type": "User", "id": "alice"},
                    "action": "read",
                    "resource": DATA,
                    "device_token": token,
                    **parts,
                }
            ]
        )
    assert (denied.allowed, allowed.allowed, whole.allowed, batched.allowed) == (
        False,
        True,
        True,
        True,
    )


def test_ext_authz_reads_a_docket_bearer_token_and_the_downstream_svid(
    ca_server: tuple[Running, CertificateAuthority],
) -> None:
    running, ca = ca_server
    token = ca.issue_jwt(DEVICE_ID, "docket", now=now(), claims=ATTESTED.claims())
    key = ec.generate_private_key(ec.SECP256R1())
    leaf, _ = ca.issue_svid(key.public_key(), DEVICE_ID, now=now(), posture=ATTESTED.claims())
    # Envoy forwards the downstream certificate URL-encoded (include_peer_certificate).
    forwarded = quote(leaf.public_bytes(serialization.Encoding.PEM).decode())
    device = dict(INVENTORY)

    def check(headers: dict[str, str], certificate: str = "") -> authz.CheckRequest:
        return json_format.ParseDict(
            {
                "attributes": {
                    "source": {"certificate": certificate},
                    "request": {"http": {"method": "GET", "path": "/records", "headers": headers}},
                    "context_extensions": {
                        "resource_type": "Data",
                        "resource_id": "patient-records-eu",
                        "context.jurisdiction": "eu",
                    },
                    "metadata_context": {
                        "filter_metadata": {
                            "envoy.filters.http.jwt_authn": {
                                "jwt_payload": {
                                    "sub": "alice",
                                    "amr": ["mfa"],
                                    "device": {
                                        **device,
                                        "attested": False,
                                        "secure_boot": False,
                                    },
                                }
                            }
                        }
                    },
                }
            },
            authz.CheckRequest(),
        )

    with channel(running, ca, None, PEP) as ch:  # a trusted enforcement point
        stub = authz_grpc.AuthorizationStub(ch)
        assert stub.Check(check({})).status.code == code_pb2.PERMISSION_DENIED
        bearer = stub.Check(check({"authorization": f"Bearer {token}"}))
        assert bearer.status.code == code_pb2.OK, bearer
        assert stub.Check(check({}, forwarded)).status.code == code_pb2.OK
        # Someone else's bearer token is Envoy's jwt_authn business, not a posture.
        assert stub.Check(check({"authorization": "Bearer a.b.c"})).status.code == (
            code_pb2.PERMISSION_DENIED
        )
        expired = ca.issue_jwt(
            DEVICE_ID, "docket", now=now() - timedelta(minutes=10), claims=ATTESTED.claims()
        )
        refused = stub.Check(check({"authorization": f"Bearer {expired}"}))
        assert refused.status.code == code_pb2.INVALID_ARGUMENT
        assert refused.denied_response.status.code == 400
        assert "expired" in refused.denied_response.body
        header = stub.Check(check({"x-docket-device-token": token}))
        assert header.status.code == code_pb2.OK, header
    with channel(running, ca, None) as ch:  # not a trusted enforcement point
        stub = authz_grpc.AuthorizationStub(ch)
        untrusted = stub.Check(check({"authorization": f"Bearer {token}"}, forwarded))
        assert untrusted.status.code == code_pb2.INVALID_ARGUMENT
        assert "not a trusted enforcement point" in untrusted.denied_response.body


def test_sighup_reload_takes_a_rotated_ca(tmp_path: Path) -> None:
    # No poll during the test: the reload is the SIGHUP's.
    settings = Settings(
        bundle=ROOT / "policies", data_dir=tmp_path / "data", revocation_poll_seconds=300
    )
    running = Running(settings)  # makes the CA on first start
    try:
        before = CertificateAuthority.load(settings.ca_dir)
        old_token = before.issue_jwt(DEVICE_ID, "docket", now=now(), claims=ATTESTED.claims())
        rotated = before.rotate(now())
        rotated.save(settings.ca_dir)
        new_token = rotated.issue_jwt(DEVICE_ID, "docket", now=now(), claims=ATTESTED.claims())
        with grpc.insecure_channel(running.target) as ch:
            stub = pb_grpc.DecisionsStub(ch)
            with pytest.raises(grpc.RpcError, match="not one of this CA's keys"):
                stub.Authorize(restricted_read(new_token))
            running.worker.reload()  # what SIGHUP does
            assert stub.Authorize(restricted_read(new_token)).decision == pb.DECISION_ALLOW
            # the retired key's tokens stay good through the overlap
            assert stub.Authorize(restricted_read(old_token)).decision == pb.DECISION_ALLOW
        assert running.worker.attestation.ca.jwks() == rotated.jwks()
    finally:
        running.stop()


def test_a_new_ca_forgets_what_old_certificates_proved() -> None:
    ca = CertificateAuthority.create(TD, now())
    reader = PostureReader(ca, "docket")
    key = ec.generate_private_key(ec.SECP256R1())
    leaf, _ = ca.issue_svid(key.public_key(), DEVICE_ID, now=now(), posture=ATTESTED.claims())
    pem = leaf.public_bytes(serialization.Encoding.PEM)
    assert reader.from_certificate(pem, now()) is not None
    # Rotated, and past the overlap: the old issuing key is no longer trusted.
    later = now() + timedelta(hours=25)
    reader.ca = ca.rotate(now()).prune(later)
    assert reader.from_certificate(pem, now()) is None


def test_a_cached_device_token_still_expires() -> None:
    ca = CertificateAuthority.create(TD, now())
    reader = PostureReader(ca, "docket")
    token = ca.issue_jwt(DEVICE_ID, "docket", now=now(), claims=ATTESTED.claims())
    first = reader.from_token(token, now())
    assert (first.spiffe_id, first.claims, first.source) == (
        DEVICE_ID,
        ATTESTED.claims(),
        "jwt-svid",
    )
    assert reader.from_token(token, now()) is first  # cached
    with pytest.raises(RequestError, match="expired"):
        reader.from_token(token, now() + timedelta(minutes=6))
    reader.ca = CertificateAuthority.create(TD, now())  # another CA: the cache is gone
    with pytest.raises(RequestError, match="not one of this CA's keys"):
        reader.from_token(token, now())


def _signed(ca: CertificateAuthority, claims: dict[str, object]) -> str:
    """A token signed with the CA's own key, with claims issue_jwt would never write."""
    kid = jwk_thumbprint(ca.issuing.key.public_key())
    return jwt.encode(claims, ca.issuing.key, algorithm="ES256", headers={"kid": kid})


T0 = 1_800_000_000


@pytest.mark.parametrize(
    ("claims", "error"),
    [
        pytest.param({"exp": T0}, "expired", id="expired"),
        pytest.param({"nbf": T0 + 60}, "not yet valid", id="nbf-in-the-future"),
        pytest.param({"iat": T0 + 120, "exp": T0 + 300}, "issued in the future", id="iat-future"),
        pytest.param({"exp": T0 + 301}, "5-minute cap", id="lifetime-over-cap"),
        pytest.param({"iat": T0 - 3600, "exp": T0 + 3600}, "5-minute cap", id="long-lived"),
        pytest.param({"iat": None}, '"iat"', id="no-iat"),
        pytest.param({"iat": "now"}, "iat", id="iat-not-a-number"),
        pytest.param({"nbf": True}, "nbf is not an integer", id="nbf-not-a-number"),
    ],
)
def test_verify_jwt_refuses_bad_times(claims: dict[str, object], error: str) -> None:
    at = datetime.fromtimestamp(T0, UTC)
    ca = CertificateAuthority.create(TD, at - timedelta(minutes=1))
    base: dict[str, object] = {"sub": DEVICE_ID, "aud": "docket", "iat": T0, "exp": T0 + 300}
    token = _signed(ca, {k: v for k, v in {**base, **claims}.items() if v is not None})
    with pytest.raises(TokenError, match=re.escape(error)):
        ca.verify_jwt(token, "docket", at)


def test_verify_jwt_takes_a_token_within_every_bound() -> None:
    at = datetime.fromtimestamp(T0, UTC)
    ca = CertificateAuthority.create(TD, at - timedelta(minutes=1))
    base = {"sub": DEVICE_ID, "aud": "docket", "iat": T0 - 10, "exp": T0 + 290, "nbf": T0 - 10}
    assert ca.verify_jwt(_signed(ca, base), "docket", at)["sub"] == DEVICE_ID
    # Another replica's clock a little ahead: iat within the skew is accepted.
    ahead = {**base, "iat": T0 + 20, "exp": T0 + 300, "nbf": T0}
    assert ca.verify_jwt(_signed(ca, ahead), "docket", at)["iat"] == T0 + 20


def test_issued_jwt_svids_carry_a_unique_jti() -> None:
    ca = CertificateAuthority.create(TD, now())
    reader = PostureReader(ca, "docket")
    first, second = (
        reader.from_token(
            ca.issue_jwt(DEVICE_ID, "docket", now=now(), claims=ATTESTED.claims()), now()
        )
        for _ in range(2)
    )
    assert first.reference is not None
    assert second.reference is not None
    assert uuid.UUID(first.reference) != uuid.UUID(second.reference)


def test_jwks_is_served_over_http_and_follows_a_rotation(tmp_path: Path) -> None:
    settings = Settings(
        bundle=ROOT / "policies", data_dir=tmp_path / "data", revocation_poll_seconds=300
    )
    running = Running(settings)
    http = serve_metrics(
        "127.0.0.1", 0, running.worker.metrics.registry, lambda: running.worker.posture.ca.jwks()
    )
    url = f"http://127.0.0.1:{http.server_port}"
    try:
        answer = httpx.get(f"{url}/.well-known/jwks.json", timeout=5)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/json"
        before = CertificateAuthority.load(settings.ca_dir)
        assert answer.json() == before.jwks()
        before.rotate(now()).save(settings.ca_dir)
        running.worker.reload()  # what SIGHUP does
        rotated = httpx.get(f"{url}/.well-known/jwks.json", timeout=5).json()
        assert len(rotated["keys"]) == 2
        assert rotated == CertificateAuthority.load(settings.ca_dir).jwks()
        assert httpx.post(f"{url}/.well-known/jwks.json", timeout=5).status_code == 405
        assert "docket_" in httpx.get(f"{url}/metrics", timeout=5).text
    finally:
        http.shutdown()
        http.server_close()
        running.stop()


# --- revocation and retirement (issue 14, finding 6) ----------------------------------------


def _svid_pem(ca: CertificateAuthority, spiffe_id: str = DEVICE_ID) -> tuple[bytes, int]:
    key = ec.generate_private_key(ec.SECP256R1())
    leaf, _ = ca.issue_svid(key.public_key(), spiffe_id, now=now(), posture=ATTESTED.claims())
    return leaf.public_bytes(serialization.Encoding.PEM), leaf.serial_number


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("device", bytes(range(32)).hex()),
        ("spiffe_id", DEVICE_ID),
    ],
)
def test_a_revocation_refuses_cached_credentials_at_once(kind: str, value: str) -> None:
    ca = CertificateAuthority.create(TD, now())
    reader = PostureReader(ca, "docket")
    token = ca.issue_jwt(DEVICE_ID, "docket", now=now(), claims=ATTESTED.claims())
    pem, _ = _svid_pem(ca)
    assert reader.from_token(token, now()).spiffe_id == DEVICE_ID  # cached from here on
    assert reader.from_certificate(pem, now()) is not None
    reader.revocations = RevocationList.empty(TD).revoke(kind, value, "stolen", now())  # type: ignore[arg-type]
    with pytest.raises(RequestError, match=r"^device_token: .*revoked at .*: stolen$"):
        reader.from_token(token, now())
    with pytest.raises(RequestError, match=r"^client certificate: .*revoked at .*: stolen$"):
        reader.from_certificate(pem, now())
    other, _ = _svid_pem(ca, f"spiffe://{TD}/device/{'ab' * 32}")
    assert reader.from_certificate(other, now()) is not None


def test_a_revoked_serial_refuses_that_certificate_only() -> None:
    ca = CertificateAuthority.create(TD, now())
    reader = PostureReader(ca, "docket")
    pem, serial = _svid_pem(ca)
    sibling, _ = _svid_pem(ca)
    reader.revocations = RevocationList.empty(TD).revoke("serial", f"{serial:x}", "leak", now())
    with pytest.raises(RequestError, match="revoked"):
        reader.from_certificate(pem, now())
    assert reader.from_certificate(sibling, now()) is not None


def test_a_spiffe_id_revocation_spares_credentials_issued_after_it() -> None:
    ca = CertificateAuthority.create(TD, now())
    revoked_at = now()
    reader = PostureReader(
        ca, "docket", RevocationList.empty(TD).revoke("spiffe_id", DEVICE_ID, "x", revoked_at)
    )
    later = revoked_at + timedelta(seconds=2)
    token = ca.issue_jwt(DEVICE_ID, "docket", now=later, claims=ATTESTED.claims())
    assert reader.from_token(token, later).spiffe_id == DEVICE_ID


def test_an_svid_the_retired_key_signed_after_retirement_is_refused_not_ignored() -> None:
    before = CertificateAuthority.create(TD, now())
    reader = PostureReader(before.rotate(now() - timedelta(minutes=5)), "docket")
    pem, _ = _svid_pem(before)  # minted now, five minutes after the rotation
    with pytest.raises(RequestError, match=r"^client certificate: .*after its retirement"):
        reader.from_certificate(pem, now())


def test_running_server_polls_for_revocations_and_refuses_a_rollback(tmp_path: Path) -> None:
    settings = Settings(
        bundle=ROOT / "policies", data_dir=tmp_path / "data", revocation_poll_seconds=0.2
    )
    running = Running(settings)
    http = serve_metrics(
        "127.0.0.1",
        0,
        running.worker.metrics.registry,
        running.worker.trust.jwks,
        lambda: running.worker.trust.document,
    )
    url = f"http://127.0.0.1:{http.server_port}{REVOCATIONS_PATH}"
    try:
        ca = CertificateAuthority.load(settings.ca_dir)
        token = ca.issue_jwt(DEVICE_ID, "docket", now=now(), claims=ATTESTED.claims())
        served = httpx.get(url, timeout=5)
        assert served.headers["content-type"] == "application/json"
        assert ca.verify_revocations(served.content).version == 0
        first = RevocationList.empty(TD).revoke("serial", "abc", "leak", now())
        first_document = ca.save_revocations(settings.ca_dir, first)
        second = first.revoke("device", bytes(range(32)).hex(), "stolen", now())
        ca.save_revocations(settings.ca_dir, second)
        with grpc.insecure_channel(running.target) as ch:
            stub = pb_grpc.DecisionsStub(ch)
            deadline = time.monotonic() + 10
            while running.worker.posture.revocations.version != 2:
                assert time.monotonic() < deadline, "the poll never applied the revocation"
                time.sleep(0.05)
            with pytest.raises(grpc.RpcError, match="revoked"):
                stub.Authorize(restricted_read(token))
            assert ca.verify_revocations(httpx.get(url, timeout=5).content) == second
            # The older list put back is refused: version 2 stays in force and served.
            (settings.ca_dir / REVOCATIONS_FILE).write_bytes(first_document)
            time.sleep(1)
            assert running.worker.posture.revocations == second
            assert running.worker.attestation.revocations == second
            assert ca.verify_revocations(httpx.get(url, timeout=5).content) == second
            # A list that does not verify is refused too.
            (settings.ca_dir / REVOCATIONS_FILE).write_text(
                '{"protected":"","payload":"","signature":""}'
            )
            time.sleep(1)
            assert running.worker.posture.revocations == second
            with pytest.raises(grpc.RpcError, match="revoked"):
                stub.Authorize(restricted_read(token))
    finally:
        http.shutdown()
        http.server_close()
        running.stop()


def test_a_revocation_list_that_does_not_verify_stops_the_start(tmp_path: Path) -> None:
    settings = Settings(bundle=ROOT / "policies", data_dir=tmp_path / "data")
    other = CertificateAuthority.create(TD, now())
    CertificateAuthority.init(settings.ca_dir, TD, now())
    forged = other.sign_revocations(RevocationList.empty(TD))  # signed by another root
    (settings.ca_dir / REVOCATIONS_FILE).write_bytes(forged)
    with pytest.raises(ServeError, match=r"^CA: the revocation list does not verify"):
        Running(settings)
