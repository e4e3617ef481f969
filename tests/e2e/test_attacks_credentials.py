"""Attacks on Docket's credential lifecycle, against a real ``docket serve`` (issue 14,
finding 6): rotation must retire the old issuing key, and a revoked device or credential
must stop counting within seconds, without a restart.

One test per attack, each named after it. The mTLS server is set up as the posture
attacks' one (its CA made first, so the test can mint credentials); the re-attestation
test runs ``docket attest`` against a swtpm as tests/e2e/test_attest_flow.py does (the
device is refused at its Challenge); a device revoked between its Challenge and its
Attest is shown with the in-process attestation service and a swtpm
(tests/e2e/test_attestation_service.py's fixtures), where the moment can be chosen.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from devices import DEVICE_ID, EK_HASH, TD, attested
from e2e.docket_process import DOCKET, Docket, start_docket, start_mtls_docket
from e2e.test_attest_flow import docket_attest
from e2e.test_attestation_service import (  # the in-process service's fixtures
    Device,
    Harness,
    _challenge,
    device,  # noqa: F401
    harness,  # noqa: F401
)
from swtpm import ProvisionedState, SoftwareTpm

from attestation._ca import CertificateAuthority, RevocationList
from attestation._errors import EvidenceError
from attestation._verifier import ek_key_hash
from sdk.v1 import decisions_pb2 as pb
from sdk.v1 import decisions_pb2_grpc as pb_grpc
from tests.authorize import alice_reads

pytestmark = pytest.mark.e2e

APP = f"spiffe://{TD}/ns/web/sa/frontend"
ATTESTED = attested()
GUARD = "restricted-requires-attested-encrypted-device"
WITHIN = 10.0
"""Seconds a running server may take to notice a change of the CA directory (it polls
every second here; the bound is generous liveness, not a timing claim)."""


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Server:
    docket: Docket
    root: Path

    @property
    def ca_dir(self) -> Path:
        return self.docket.data_dir / "ca"

    def ca(self) -> CertificateAuthority:
        return CertificateAuthority.load(self.ca_dir)

    def channel(
        self, ca: CertificateAuthority, spiffe_id: str, *, at: datetime | None = None
    ) -> grpc.Channel:
        """An mTLS channel presenting an X.509-SVID (with the attested posture) that ``ca``
        issues for ``spiffe_id`` at ``at``."""
        pem = serialization.Encoding.PEM
        key = ec.generate_private_key(ec.SECP256R1())
        leaf, issuer = ca.issue_svid(
            key.public_key(), spiffe_id, now=at or now(), posture=ATTESTED.claims()
        )
        chain = leaf.public_bytes(pem) + issuer.public_bytes(pem)
        key_pem = key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        credentials = grpc.ssl_channel_credentials(ca.trust_bundle(), key_pem, chain)
        return grpc.secure_channel(
            f"127.0.0.1:{self.docket.grpc_port}",
            credentials,
            options=[("grpc.ssl_target_name_override", "localhost")],
        )

    def authorize(self, channel: grpc.Channel, token: str = "") -> pb.AuthorizeResponse:
        return pb_grpc.DecisionsStub(channel).Authorize(restricted_read(token), timeout=10)

    def docket_ca(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DOCKET, "ca", *args, "--data-dir", str(self.docket.data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def restricted_read(device_token: str = "") -> pb.AuthorizeRequest:
    context = {
        "mfa": True,
        "jurisdiction": "eu",
        "device": {"disk_encrypted": True, "managed": True, "patch_age_days": 3},
    }
    return alice_reads("patient-records-eu", context, device_token)


def start_mtls(root: Path) -> Server:
    docket, _ca = start_mtls_docket(root, env={"DOCKET_REVOCATION_POLL_SECONDS": "1"})
    return Server(docket, root)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = start_mtls(tmp_path)
    try:
        yield running
    finally:
        code = running.docket.stop()
    assert code == 0, f"docket serve exited {code}:\n{running.docket.log.read_text()}"


def eventually(what: str, server: Server, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WITHIN
    while not condition():
        assert time.monotonic() < deadline, f"{what}:\n{server.docket.log.read_text()}"
        time.sleep(0.2)


def memo_entries(server: Server) -> float:
    """Decisions the server's decision memo holds now, from its /metrics."""
    text = httpx.get(server.docket.metrics_url, timeout=5).text
    (line,) = [x for x in text.splitlines() if x.startswith("docket_decision_memo_entries ")]
    return float(line.rpartition(" ")[2])


def refused(call: Callable[[], object]) -> str | None:
    """The details of the INVALID_ARGUMENT ``call`` was refused with, else None."""
    try:
        call()
    except grpc.RpcError as exc:
        code = exc.code()
        if code is not grpc.StatusCode.INVALID_ARGUMENT:
            raise AssertionError(f"refused with {code}, not INVALID_ARGUMENT") from exc
        return exc.details() or ""
    return None


def test_credential_minted_after_rotation_by_the_retired_key_is_refused(server: Server) -> None:
    retired = server.ca()  # the attacker kept the issuing key that is about to be retired
    before_token = retired.issue_jwt(DEVICE_ID, "docket", now=now(), claims=ATTESTED.claims())
    rotated = server.docket_ca("rotate")
    assert rotated.returncode == 0, rotated.stderr
    # Minted by the retired key after its retirement (a second later: honest timestamps).
    time.sleep(1.1)
    late_token = retired.issue_jwt(DEVICE_ID, "docket", now=now(), claims=ATTESTED.claims())
    new_ca = server.ca()
    fresh_token = new_ca.issue_jwt(DEVICE_ID, "docket", now=now(), claims=ATTESTED.claims())
    with server.channel(new_ca, APP) as channel:

        def late_refused() -> bool:
            return refused(lambda: server.authorize(channel, late_token)) is not None

        eventually("the running server never retired the old key", server, late_refused)
        details = refused(lambda: server.authorize(channel, late_token)) or ""
        assert details.startswith("device_token: "), details
        assert "retired" in details, details
        # What the old key signed before the rotation still counts (its window), the new
        # key's credentials count.
        assert server.authorize(channel, before_token).decision == pb.DECISION_ALLOW
        assert server.authorize(channel, fresh_token).decision == pb.DECISION_ALLOW
    # An mTLS SVID minted by the retired key after the rotation gives no posture: refused.
    with server.channel(retired, DEVICE_ID) as channel:
        details = refused(lambda: server.authorize(channel)) or ""
    assert "retired" in details, details
    # The JWKS served beside the metrics has both keys, the new one first.
    jwks_url = server.docket.metrics_url.removesuffix("/metrics") + "/.well-known/jwks.json"
    assert httpx.get(jwks_url, timeout=5).json() == new_ca.jwks(now())


def test_revoked_device_jwt_svid_and_mtls_svid_are_refused_without_restart(
    server: Server,
) -> None:
    ca = server.ca()
    token = ca.issue_jwt(DEVICE_ID, "docket", now=now(), claims=ATTESTED.claims())
    with server.channel(ca, APP) as app, server.channel(ca, DEVICE_ID) as svid:
        assert server.authorize(app, token).decision == pb.DECISION_ALLOW
        assert server.authorize(svid).decision == pb.DECISION_ALLOW
        eventually("no decision remembered", server, lambda: memo_entries(server) >= 1)
        done = server.docket_ca("revoke", "--device", EK_HASH.hex(), "--reason", "laptop stolen")
        assert done.returncode == 0, done.stderr
        eventually(
            "the revoked device's JWT-SVID still counts",
            server,
            lambda: refused(lambda: server.authorize(app, token)) is not None,
        )
        # Nothing decided under the old revocation list is remembered after it.
        eventually("the memo kept its decisions", server, lambda: memo_entries(server) == 0)
        jwt_refusal = refused(lambda: server.authorize(app, token)) or ""
        svid_refusal = refused(lambda: server.authorize(svid)) or ""
    for details in (jwt_refusal, svid_refusal):
        assert "revoked" in details, details
        assert "laptop stolen" in details, details
    assert jwt_refusal.startswith("device_token: ")
    # Other devices are not affected.
    other = f"spiffe://{TD}/device/{'ab' * 32}"
    with server.channel(ca, other) as channel:
        assert server.authorize(channel).decision == pb.DECISION_ALLOW
    listed = server.docket_ca("revocations", "--json")
    assert listed.returncode == 0, listed.stderr
    (entry,) = json.loads(listed.stdout)["revoked"]
    assert (entry["kind"], entry["value"], entry["reason"]) == (
        "device",
        EK_HASH.hex(),
        "laptop stolen",
    )


def test_revoked_certificate_serial_is_refused_and_another_svid_is_not(server: Server) -> None:
    ca = server.ca()
    pem = serialization.Encoding.PEM
    key = ec.generate_private_key(ec.SECP256R1())
    leaf, issuer = ca.issue_svid(key.public_key(), DEVICE_ID, now=now(), posture=ATTESTED.claims())
    credentials = grpc.ssl_channel_credentials(
        ca.trust_bundle(),
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        leaf.public_bytes(pem) + issuer.public_bytes(pem),
    )
    target = f"127.0.0.1:{server.docket.grpc_port}"
    options = [("grpc.ssl_target_name_override", "localhost")]
    with grpc.secure_channel(target, credentials, options=options) as revoked:
        assert server.authorize(revoked).decision == pb.DECISION_ALLOW
        serial = f"{leaf.serial_number:x}"
        done = server.docket_ca("revoke", "--serial", serial, "--reason", "key leaked")
        assert done.returncode == 0, done.stderr
        eventually(
            "the revoked certificate still counts",
            server,
            lambda: refused(lambda: server.authorize(revoked)) is not None,
        )
    with server.channel(ca, DEVICE_ID) as fresh:
        assert server.authorize(fresh).decision == pb.DECISION_ALLOW


def test_revoked_spiffe_id_credentials_are_refused_and_later_ones_count(server: Server) -> None:
    ca = server.ca()
    token = ca.issue_jwt(DEVICE_ID, "docket", now=now(), claims=ATTESTED.claims())
    with server.channel(ca, APP) as app:
        done = server.docket_ca("revoke", "--spiffe-id", DEVICE_ID, "--reason", "re-imaged")
        assert done.returncode == 0, done.stderr
        eventually(
            "the revoked SPIFFE ID's JWT-SVID still counts",
            server,
            lambda: refused(lambda: server.authorize(app, token)) is not None,
        )
        time.sleep(1.1)  # a credential issued after the revocation is a new one
        later = ca.issue_jwt(DEVICE_ID, "docket", now=now(), claims=ATTESTED.claims())
        assert server.authorize(app, later).decision == pb.DECISION_ALLOW


def test_forged_or_rolled_back_revocation_list_is_not_served_nor_believed(
    server: Server,
) -> None:
    first = server.docket_ca("revoke", "--device", EK_HASH.hex(), "--reason", "stolen")
    assert first.returncode == 0, first.stderr
    document = server.ca_dir / "revocations.json"
    version_one = document.read_bytes()
    second = server.docket_ca("revoke", "--serial", "abc", "--reason", "leaked")
    assert second.returncode == 0, second.stderr
    url = (
        server.docket.metrics_url.removesuffix("/metrics") + "/.well-known/docket-revocations.json"
    )
    eventually(
        "the second revocation is never served",
        server,
        lambda: len(verified(server, httpx.get(url, timeout=5).json())["revoked"]) == 2,
    )
    # An older, validly signed list put back (rollback) is refused: the newer one stays.
    document.write_bytes(version_one)
    time.sleep(3)
    assert len(verified(server, httpx.get(url, timeout=5).json())["revoked"]) == 2
    assert "revocations" in server.docket.log.read_text()
    listed = server.docket_ca("revocations")
    assert listed.returncode == 0


def revocations_url(server: Server) -> str:
    base = server.docket.metrics_url.removesuffix("/metrics")
    return f"{base}/.well-known/docket-revocations.json"


def verified(server: Server, served: dict[str, str]) -> dict[str, object]:
    """The payload of the served revocation list, after checking its ES256 signature with
    the CA root's public key (what a relying party holds: ``docket ca bundle``)."""
    root = x509.load_pem_x509_certificates(server.docket_ca("bundle").stdout.encode())[0]
    compact = f"{served['protected']}.{served['payload']}.{served['signature']}"
    header = json.loads(base64.urlsafe_b64decode(served["protected"] + "=="))
    assert header["alg"] == "ES256"
    payload: dict[str, object] = json.loads(
        jwt.api_jws.decode(compact, root.public_key(), algorithms=["ES256"])  # type: ignore[arg-type]
    )
    return payload


def test_revocation_list_is_served_and_its_signature_verifies(server: Server) -> None:
    url = (
        server.docket.metrics_url.removesuffix("/metrics") + "/.well-known/docket-revocations.json"
    )
    empty = httpx.get(url, timeout=5)
    assert empty.status_code == 200
    assert empty.headers["content-type"] == "application/json"
    assert verified(server, empty.json())["revoked"] == []
    done = server.docket_ca("revoke", "--device", EK_HASH.hex(), "--reason", "stolen")
    assert done.returncode == 0, done.stderr
    eventually(
        "the revocation is never served",
        server,
        lambda: verified(server, httpx.get(url, timeout=5).json())["revoked"] != [],
    )
    payload = verified(server, httpx.get(url, timeout=5).json())
    (entry,) = payload["revoked"]  # type: ignore[misc]
    assert (entry["kind"], entry["value"]) == ("device", EK_HASH.hex())
    assert payload["trust_domain"] == TD
    # A list signed by anyone else does not verify with the root.
    served = httpx.get(url, timeout=5).json()
    tampered = {
        **served,
        "payload": base64.urlsafe_b64encode(b'{"revoked":[]}').decode().rstrip("="),
    }
    with pytest.raises(jwt.InvalidSignatureError):
        verified(server, tampered)


# --- re-attestation of a revoked device (swtpm, docket attest) -----------------------------


@pytest.fixture
def attest_server(provisioned_tpm: ProvisionedState, tmp_path: Path) -> Iterator[Docket]:
    roots = tmp_path / "data" / "trust" / "ek-roots"
    roots.mkdir(parents=True)
    shutil.copy(provisioned_tpm.root_cert, roots / "swtpm-localca.pem")
    running = start_docket(tmp_path, env={"DOCKET_REVOCATION_POLL_SECONDS": "1"})
    try:
        yield running
    finally:
        code = running.stop()
    assert code == 0, f"docket serve exited {code}:\n{running.log.read_text()}"


def test_revoked_device_cannot_reattest(
    attest_server: Docket, swtpm: SoftwareTpm, provisioned_tpm: ProvisionedState, tmp_path: Path
) -> None:
    intermediate = ("--ek-intermediate", str(provisioned_tpm.issuer_cert))
    out = tmp_path / "creds"
    first = docket_attest(attest_server, swtpm, out, *intermediate)
    assert first.returncode == 0, first.stderr + attest_server.log.read_text()
    leaf = x509.load_pem_x509_certificates((out / "svid.pem").read_bytes())[0]
    (spiffe_id,) = leaf.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.UniformResourceIdentifier)
    ek_hash = spiffe_id.rsplit("/", 1)[1]
    token = (out / "jwt").read_text().strip()
    revoke = subprocess.run(
        [
            *(DOCKET, "ca", "revoke", "--data-dir", str(attest_server.data_dir)),
            *("--device", ek_hash, "--reason", "decommissioned"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert revoke.returncode == 0, revoke.stderr
    deadline = time.monotonic() + WITHIN
    while True:
        again = docket_attest(attest_server, swtpm, tmp_path / "again", *intermediate)
        if again.returncode != 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "revoked" in again.stderr, again.stderr
    assert "decommissioned" in again.stderr, again.stderr
    refusal = attest_server.audit_entries("attestation")[-1]
    assert refusal["decision"] == "deny"
    assert "revoked" in refusal["detail"]["reason"]
    # Its JWT-SVID from before is refused too.
    target = f"127.0.0.1:{attest_server.grpc_port}"
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as caught:
        pb_grpc.DecisionsStub(channel).Authorize(restricted_read(token), timeout=10)
    assert "revoked" in (caught.value.details() or "")


def test_device_revoked_between_challenge_and_attest_is_refused(
    harness: Harness,  # noqa: F811 (the imported fixture)
    device: Device,  # noqa: F811 (the imported fixture)
) -> None:
    challenge_id, credential, nonce, selection = _challenge(harness, device)
    ek_hash = ek_key_hash(device.enrollment.ek_public)
    harness.service.revocations = RevocationList.empty("docket.local").revoke(
        "device", ek_hash.hex(), "stolen", harness.clock.now
    )
    evidence = device.answer(challenge_id, credential, nonce, selection)
    with pytest.raises(EvidenceError, match=r"revoked at .*: stolen; it cannot attest"):
        harness.service.attest(evidence, caller=None)
    refusal = harness.last_refusal()
    assert refusal["action"] == "attest"
    assert refusal["subject"] == f"spiffe://docket.local/device/{ek_hash.hex()}"
    assert "revoked" in str(refusal["detail"])
    # …and its next Challenge is refused too.
    with pytest.raises(EvidenceError, match="revoked"):
        _challenge(harness, device)
