"""The whole flow as a user runs it: ``docket serve`` (a subprocess, its CA made on first
start, the local TPM CA's root in ``<data-dir>/trust/ek-roots``) and ``docket attest``
(a subprocess) against a swtpm manufactured with an EK certificate.

The agent writes svid.pem, svid.key, bundle.pem and jwt; the SVID chains to the bundle
and the JWT verifies with ``docket ca jwks``; both say ``device_class: dev``. Running it
again renews. A request with the device's JWT is allowed where the same request without
it is denied. The audit log holds the attestation and both certificates and verifies.
An EK whose chain cannot be built is refused (exit 1), a dead TPM is exit 2. The agent
earns the same credentials through either TPM driver (tpm2-tools, tpm2-pytss), and
``docket attest`` on a machine without tpm2-tools uses tpm2-pytss.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import get_args

import click
import grpc
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store
from e2e.docket_process import DOCKET, Docket, start_docket
from swtpm import ProvisionedState, SoftwareTpm, free_port_pair

from attestation._ca import JWT_POSTURE_CLAIM
from sdk.agent import Tpm, attest, pcr_selection
from sdk.v1 import attestation_pb2 as attestation_pb
from sdk.v1 import attestation_pb2_grpc as attestation_grpc
from sdk.v1 import decisions_pb2 as pb
from sdk.v1 import decisions_pb2_grpc as pb_grpc
from tests.authorize import alice_reads

pytestmark = pytest.mark.e2e

FILES = {"svid.pem": 0o644, "svid.key": 0o600, "bundle.pem": 0o644, "jwt": 0o600}


@pytest.fixture(scope="module")
def docket(
    provisioned_tpm: ProvisionedState, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Docket]:
    """``docket serve`` trusting the local TPM CA's root (only the root: the device
    brings the intermediate)."""
    yield from _serve(provisioned_tpm, tmp_path_factory.mktemp("docket"))


def _serve(provisioned_tpm: ProvisionedState, root: Path) -> Iterator[Docket]:
    roots = root / "data" / "trust" / "ek-roots"
    roots.mkdir(parents=True)
    shutil.copy(provisioned_tpm.root_cert, roots / "swtpm-localca.pem")
    running = start_docket(root)
    try:
        yield running
    finally:
        code = running.stop()
    assert code == 0, f"docket serve exited {code} on SIGTERM:\n{running.log.read_text()}"


def docket_attest(
    docket: Docket,
    swtpm: SoftwareTpm | str,
    out: Path,
    *flags: str,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``docket attest`` against ``docket``, with ``swtpm``'s TCTI (or a TCTI string), in
    ``env`` (this process's environment by default)."""
    tcti = swtpm if isinstance(swtpm, str) else swtpm.env["TPM2TOOLS_TCTI"]
    return subprocess.run(
        [
            DOCKET,
            "attest",
            *("--server", f"127.0.0.1:{docket.grpc_port}"),
            *("--tcti", tcti),
            *("--out", str(out)),
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def request(device_token: str = "") -> pb.AuthorizeRequest:
    """alice reads EU patient records (restricted: only from an attested device); the
    inventory facts come from the caller, "attested" only from a Docket credential."""
    context = {
        "mfa": True,
        "jurisdiction": "eu",
        "device": {
            "disk_encrypted": True,
            "managed": True,
            "patch_age_days": 2,
            "trust_tier": "high",
        },
    }
    return alice_reads("patient-records-eu", context, device_token)


def test_attest_issues_credentials_that_policy_sees(
    docket: Docket, swtpm: SoftwareTpm, provisioned_tpm: ProvisionedState, tmp_path: Path
) -> None:
    out = tmp_path / "creds"
    intermediate = ("--ek-intermediate", str(provisioned_tpm.issuer_cert))
    done = docket_attest(docket, swtpm, out, *intermediate)
    assert done.returncode == 0, done.stderr + docket.log.read_text()
    assert "device class  dev" in done.stdout
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == FILES

    # The SVID: leaf + intermediate, chaining to the trust bundle, for the device key.
    leaf, *chain = x509.load_pem_x509_certificates((out / "svid.pem").read_bytes())
    bundle = x509.load_pem_x509_certificates((out / "bundle.pem").read_bytes())
    verifier = PolicyBuilder().store(Store(bundle)).build_client_verifier()
    (spiffe_id,) = verifier.verify(leaf, chain).subjects or []
    assert isinstance(spiffe_id, x509.UniformResourceIdentifier)
    assert spiffe_id.value.startswith("spiffe://docket.local/device/")
    key = serialization.load_pem_private_key((out / "svid.key").read_bytes(), None)
    assert leaf.public_key() == key.public_key()

    # The JWT-SVID verifies with the JWKS `docket ca jwks` prints.
    jwks = subprocess.run(
        [DOCKET, "ca", "jwks", "--data-dir", str(docket.data_dir)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    token = (out / "jwt").read_text().strip()
    kid = jwt.get_unverified_header(token)["kid"]
    (jwk,) = [k for k in json.loads(jwks)["keys"] if k["kid"] == kid]
    claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["ES256"], audience="docket")
    assert claims["sub"] == spiffe_id.value
    assert claims[JWT_POSTURE_CLAIM]["device_class"] == "dev"
    assert claims[JWT_POSTURE_CLAIM]["attested"] is True

    # Policy sees the posture: the same request is denied without the token.
    with grpc.insecure_channel(f"127.0.0.1:{docket.grpc_port}") as channel:
        stub = pb_grpc.DecisionsStub(channel)
        without = stub.Authorize(request())
        with_token = stub.Authorize(request(token))
    assert without.decision == pb.DECISION_DENY
    assert "restricted-requires-attested-encrypted-device" in without.reasons
    assert with_token.decision == pb.DECISION_ALLOW, with_token

    # Renewal: a fresh key and certificate, the same identity, every file replaced.
    again = docket_attest(docket, swtpm, out, *intermediate)
    assert again.returncode == 0, again.stderr
    renewed, *_ = x509.load_pem_x509_certificates((out / "svid.pem").read_bytes())
    assert renewed.serial_number != leaf.serial_number
    assert renewed.public_key() != leaf.public_key()
    assert renewed.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.UniformResourceIdentifier) == [spiffe_id.value]
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)

    # The audit log has each attestation and its two credentials, and verifies.
    issued = docket.audit_entries("attestation", "certificate")
    assert [e["kind"] for e in issued] == ["attestation", "certificate", "certificate"] * 2
    assert all(e["decision"] == "allow" for e in issued)
    assert all(e["subject"] == spiffe_id.value for e in issued)
    assert [e["detail"]["device_class"] for e in issued if e["kind"] == "certificate"] == [
        "dev"
    ] * 4
    verified = subprocess.run(
        [DOCKET, "audit", "verify", "--data-dir", str(docket.data_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_attest_refused_exits_1_and_is_recorded(
    docket: Docket, swtpm: SoftwareTpm, tmp_path: Path
) -> None:
    # Without the intermediate, the EK certificate does not chain to the trusted root.
    out = tmp_path / "creds"
    done = docket_attest(docket, swtpm, out)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.startswith("docket: attestation refused: EK not trusted")
    assert done.stderr.count("\n") == 1
    assert not out.exists() or list(out.iterdir()) == []
    (*_, refusal) = docket.audit_entries("attestation", "certificate")
    assert (refusal["kind"], refusal["decision"], refusal["action"]) == (
        "attestation",
        "deny",
        "challenge",
    )
    assert refusal["detail"]["reason"].startswith("EK not trusted")


def test_attest_with_a_dead_tpm_exits_2(docket: Docket, tmp_path: Path) -> None:
    dead = f"swtpm:host=127.0.0.1,port={free_port_pair()}"
    done = docket_attest(docket, dead, tmp_path / "creds")
    assert done.returncode == 2
    assert done.stderr.startswith("docket: tpm2_createek failed")
    assert done.stderr.count("\n") == 1


def test_serve_says_what_attestation_trusts(docket: Docket) -> None:
    text = docket.log.read_text()
    assert "attestation trust domain docket.local; 1 EK roots" in text
    assert "reference classes: dev" in text
    assert (docket.data_dir / "ca" / "ca.json").exists()  # made on first start


@pytest.fixture
def fresh_docket(
    provisioned_tpm: ProvisionedState, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Docket]:
    """Like ``docket``, with no TPM clock recorded yet (every test's swtpm is a copy of
    one state: a clock recorded by another test would be ahead of this one's)."""
    yield from _serve(provisioned_tpm, tmp_path_factory.mktemp("fresh-docket"))


def test_attests_racing_with_one_challenge_issue_once(
    fresh_docket: Docket, swtpm: SoftwareTpm, provisioned_tpm: ProvisionedState
) -> None:
    """One answer sent four times at once: every Attest reads the challenge unused, and
    the store's write lets one of them use it. One issuance, three refusals, all
    recorded."""
    docket = fresh_docket
    with Tpm(swtpm.env["TPM2TOOLS_TCTI"]) as tpm:
        ek_public, ek_certificate = tpm.create_ek()
        ak_public = tpm.create_ak()
        intermediate = x509.load_pem_x509_certificate(provisioned_tpm.issuer_cert.read_bytes())
        with grpc.insecure_channel(f"127.0.0.1:{docket.grpc_port}") as channel:
            stub = attestation_grpc.AttestationStub(channel)
            challenge = stub.Challenge(
                attestation_pb.ChallengeRequest(
                    ek_public=ek_public,
                    ek_certificate=ek_certificate or b"",
                    ek_intermediates=[intermediate.public_bytes(serialization.Encoding.DER)],
                    ak_public=ak_public,
                )
            )
            banks: dict[str, list[int]] = {}
            for selection in challenge.pcrs:
                banks.setdefault(selection.hash, []).extend(selection.pcrs)
            assert set(banks) == {"sha256"}  # the default bundle's reference values
            selection = pcr_selection(banks)
            quote, signature = tpm.quote(challenge.nonce, selection)
            answer = attestation_pb.AttestRequest(
                challenge_id=challenge.challenge_id,
                activated_secret=tpm.activate(challenge.credential),
                quote=quote,
                signature=signature,
                pcr_values=[
                    attestation_pb.PcrValue(hash="sha256", index=index, value=value)
                    for (_, index), value in tpm.pcrread(selection).items()
                ],
                csr=_csr(),
            )
            before = len(docket.audit_entries("attestation", "certificate"))
            barrier = threading.Barrier(4)

            def send(_: int) -> tuple[str, str]:
                barrier.wait()
                try:
                    stub.Attest(answer, timeout=60)
                except grpc.RpcError as exc:
                    return exc.code().name, exc.details() or ""
                return "OK", ""

            with ThreadPoolExecutor(4) as pool:
                answers = sorted(pool.map(send, range(4)))
    assert answers == [("OK", "")] + [("PERMISSION_DENIED", "challenge already used (replay)")] * 3
    entries = docket.audit_entries("attestation", "certificate")[before:]
    assert sorted((e["kind"], e["decision"]) for e in entries) == sorted(
        [("attestation", "allow"), ("certificate", "allow"), ("certificate", "allow")]
        + [("attestation", "deny")] * 3
    )
    refusals = [e["detail"]["reason"] for e in entries if e["decision"] == "deny"]
    assert refusals == ["challenge already used (replay)"] * 3


def _csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.DER)


def _issuer_der(provisioned_tpm: ProvisionedState) -> bytes:
    issuer = x509.load_pem_x509_certificate(provisioned_tpm.issuer_cert.read_bytes())
    return issuer.public_bytes(serialization.Encoding.DER)


def test_each_tpm_backend_earns_credentials_from_docket_serve(
    fresh_docket: Docket,
    swtpm: SoftwareTpm,
    provisioned_tpm: ProvisionedState,
    tpm_backend: str,
    tmp_path: Path,
) -> None:
    """The whole flow, Challenge to credentials on disk, through each TPM driver."""
    out = tmp_path / "creds"
    result = attest(
        f"127.0.0.1:{fresh_docket.grpc_port}",
        swtpm.env["TPM2TOOLS_TCTI"],
        out,
        ek_intermediates=[_issuer_der(provisioned_tpm)],
        backend=tpm_backend,
    )
    assert result.device_class == "dev"
    assert result.posture["attested"] is True
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == FILES
    leaf, *chain = x509.load_pem_x509_certificates(result.svid_path.read_bytes())
    bundle = x509.load_pem_x509_certificates(result.bundle_path.read_bytes())
    verifier = PolicyBuilder().store(Store(bundle)).build_client_verifier()
    (spiffe_id,) = verifier.verify(leaf, chain).subjects or []
    assert isinstance(spiffe_id, x509.UniformResourceIdentifier)
    assert spiffe_id.value == result.spiffe_id
    issued = fresh_docket.audit_entries("attestation", "certificate")
    assert [(e["kind"], e["decision"]) for e in issued] == [
        ("attestation", "allow"),
        ("certificate", "allow"),
        ("certificate", "allow"),
    ]
    assert all(e["subject"] == result.spiffe_id for e in issued)


@pytest.mark.usefixtures("tpm2_pytss")
def test_docket_attest_without_tpm2_tools_uses_tpm2_pytss(
    fresh_docket: Docket, swtpm: SoftwareTpm, provisioned_tpm: ProvisionedState, tmp_path: Path
) -> None:
    """A device with tpm2-pytss and no tpm2-tools attests: "auto" picks tpm2-pytss."""
    bare = tmp_path / "bin"  # a PATH with docket's Python and nothing of tpm2-tools
    bare.mkdir()
    env = dict(os.environ, PATH=str(bare))
    out = tmp_path / "creds"
    intermediate = ("--ek-intermediate", str(provisioned_tpm.issuer_cert))
    done = docket_attest(fresh_docket, swtpm, out, *intermediate, env=env)
    assert done.returncode == 0, done.stderr + fresh_docket.log.read_text()
    assert "device class  dev" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)


def test_docket_attest_tpm_backend_flag_picks_the_driver(
    fresh_docket: Docket,
    swtpm: SoftwareTpm,
    provisioned_tpm: ProvisionedState,
    tpm2_pytss: None,
    tmp_path: Path,
) -> None:
    """``--tpm-backend`` overrides "auto": on a PATH without tpm2-tools, asking for
    tpm2-tools is one input error (exit 2) naming it, asking for tpm2-pytss attests."""
    bare = tmp_path / "bin"
    bare.mkdir()
    env = dict(os.environ, PATH=str(bare))
    intermediate = ("--ek-intermediate", str(provisioned_tpm.issuer_cert))
    refused = docket_attest(
        fresh_docket, swtpm, tmp_path / "a", *intermediate, "--tpm-backend", "tpm2-tools", env=env
    )
    assert refused.returncode == 2, refused.stdout
    assert "tpm2" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    done = docket_attest(
        fresh_docket, swtpm, tmp_path / "b", *intermediate, "--tpm-backend", "tpm2-pytss", env=env
    )
    assert done.returncode == 0, done.stderr
    assert "device class  dev" in done.stdout


def test_docket_attest_tpm_backend_choices_are_the_agents() -> None:
    """The CLI offers exactly the agent's drivers."""
    from engine.cli.attest import attest as command
    from sdk.agent import TpmBackend

    (option,) = [p for p in command.params if p.name == "tpm_backend"]
    assert isinstance(option.type, click.Choice)
    assert tuple(option.type.choices) == get_args(TpmBackend)
