"""``docket agent run`` as a user runs it: a real ``docket serve`` issuing 20-second SVIDs
(``DOCKET_SVID_TTL_SECONDS``), a swtpm manufactured with an EK certificate,
the agent as a subprocess, and py-spiffe (an existing SPIFFE client) on its socket.

The agent attests and serves the SVID and bundle; the X.509 stream gets a new SVID when
the agent renews at half the lifetime, and the files in --out are replaced (new inodes,
no temporary file left). A call without the security header is INVALID_ARGUMENT.
JWT-SVIDs for two audiences and for both at once validate (ValidateJWTSVID, py-spiffe's
JwtSource); Docket refuses an over-long audience list, a stolen SVID without its key, a
replayed proof, and a revoked device. After ``docket ca revoke`` the renewal is refused, the SVID is
still served until it expires and then dropped: the stream ends PERMISSION_DENIED.
SIGTERM stops the agent with exit 0 and removes its socket.
"""

from __future__ import annotations

import json
import queue
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store
from e2e.docket_process import DOCKET, Docket, die_with_parent, start_docket, stop
from spiffe import JwtSource, JwtSvid, WorkloadApiClient
from spiffe.workloadapi.x509_context import X509Context
from swtpm import ProvisionedState, SoftwareTpm
from workload_client import call

from sdk.agent import jwt_svid_proof
from sdk.v1 import attestation_pb2
from sdk.v1.attestation_pb2_grpc import AttestationStub
from sdk.workload import workload_pb2 as pb

pytestmark = pytest.mark.e2e

TTL = 20  # seconds (Docket's shortest is 10): the agent renews at 8-10 s
RENEWAL = 2 * TTL  # the longest the tests wait for a renewal or an expiry
FILES = {"svid.pem": 0o644, "svid.key": 0o600, "bundle.pem": 0o644, "jwt": 0o600}


def until(what: str, condition: Callable[[], Any], timeout: float, log: Path) -> Any:
    """Poll ``condition`` until it returns something true; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {timeout} s:\n{log.read_text()}")
        time.sleep(0.1)
    return found


@dataclass
class AgentProcess:
    process: subprocess.Popen[bytes]
    out: Path
    socket: Path
    log: Path

    def events(self, name: str) -> list[dict[str, Any]]:
        """The agent's log lines (JSON) whose event is ``name``."""
        lines = self.log.read_text().splitlines()
        parsed = [json.loads(line) for line in lines if line.startswith("{")]
        return [event for event in parsed if event.get("event") == name]

    def wait_for(self, name: str, count: int = 1, timeout: float = RENEWAL) -> dict[str, Any]:
        def seen() -> list[dict[str, Any]] | None:
            if self.process.poll() is not None:
                pytest.fail(f"the agent exited {self.process.returncode}:\n{self.log.read_text()}")
            found = self.events(name)
            return found if len(found) >= count else None

        found: list[dict[str, Any]] = until(f"{name!r} x{count}", seen, timeout, self.log)
        return found[count - 1]

    def client(self) -> WorkloadApiClient:
        return WorkloadApiClient(f"unix:{self.socket}", default_timeout=30)


def _serve(provisioned_tpm: ProvisionedState, root: Path) -> Iterator[Docket]:
    """``docket serve`` issuing 20-second SVIDs, trusting the local TPM CA's root."""
    roots = root / "data" / "trust" / "ek-roots"
    roots.mkdir(parents=True)
    shutil.copy(provisioned_tpm.root_cert, roots / "swtpm-localca.pem")
    running = start_docket(root, env={"DOCKET_SVID_TTL_SECONDS": str(TTL)})
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def docket(
    provisioned_tpm: ProvisionedState, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Docket]:
    """A server of the test's own: every swtpm copy has the same EK, which one test
    revokes."""
    yield from _serve(provisioned_tpm, tmp_path_factory.mktemp("docket"))


def start_agent(
    docket: Docket,
    swtpm: SoftwareTpm,
    provisioned_tpm: ProvisionedState,
    tmp_path: Path,
    *flags: str,
) -> tuple[AgentProcess, Path]:
    """``docket agent run`` against ``docket`` and ``swtpm`` with ``flags`` besides, and the
    directory of its socket (a short path under /tmp: remove it after stopping)."""
    short = Path(tempfile.mkdtemp(prefix="agent-", dir="/tmp"))  # a socket path <= 107 bytes
    log = tmp_path / "agent.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            die_with_parent(
                [
                    DOCKET,
                    *("--log-format", "json"),
                    *("agent", "run"),
                    *("--server", f"127.0.0.1:{docket.grpc_port}"),
                    *("--tcti", swtpm.env["TPM2TOOLS_TCTI"]),
                    *("--out", str(tmp_path / "creds")),
                    *("--ek-intermediate", str(provisioned_tpm.issuer_cert)),
                    *("--socket", str(short / "api" / "agent.sock")),
                    *flags,
                ]
            ),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return AgentProcess(process, tmp_path / "creds", short / "api" / "agent.sock", log), short


@pytest.fixture
def agent(
    docket: Docket, swtpm: SoftwareTpm, provisioned_tpm: ProvisionedState, tmp_path: Path
) -> Iterator[AgentProcess]:
    """``docket agent run`` against ``docket`` and ``swtpm``, once it has an SVID."""
    running, short = start_agent(docket, swtpm, provisioned_tpm, tmp_path)
    try:
        running.wait_for("agent: SVID issued", timeout=60)
        yield running
    finally:
        stop(running.process, "docket agent run")
        shutil.rmtree(short, ignore_errors=True)


def _leaf_on_disk(out: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates((out / "svid.pem").read_bytes())[0]


def test_the_agent_serves_its_svid_and_streams_the_renewed_one(agent: AgentProcess) -> None:
    with agent.client() as client:
        context = client.fetch_x509_context()
    svid = context.default_svid
    spiffe_id = str(svid.spiffe_id)
    assert spiffe_id.startswith("spiffe://docket.local/device/")
    bundle = context.x509_bundle_set.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
    assert bundle is not None
    verifier = PolicyBuilder().store(Store(list(bundle.x509_authorities))).build_client_verifier()
    verifier.verify(svid.leaf, svid.cert_chain[1:])
    assert svid.private_key.public_key() == svid.leaf.public_key()
    # what is served is what is on disk
    assert _leaf_on_disk(agent.out).serial_number == svid.leaf.serial_number
    inode = (agent.out / "svid.pem").stat().st_ino

    contexts: queue.Queue[X509Context] = queue.Queue()
    errors: queue.Queue[Exception] = queue.Queue()
    client = agent.client()
    handle = client.stream_x509_contexts(contexts.put, errors.put, retry_connect=False)
    try:
        first = contexts.get(timeout=30).default_svid
        assert first.leaf.serial_number == svid.leaf.serial_number
        renewed = contexts.get(timeout=RENEWAL).default_svid  # the agent renews at 8-10 s
    finally:
        handle.cancel()
        client.close()
    assert errors.empty()
    assert renewed.leaf.serial_number != svid.leaf.serial_number
    assert str(renewed.spiffe_id) == spiffe_id
    assert renewed.leaf.public_key() != svid.leaf.public_key()  # a fresh device key
    event = agent.wait_for("agent: SVID renewed")
    assert event["serial"] == f"{renewed.leaf.serial_number:x}"

    # the files were replaced by renames (new inodes), nothing half-written left behind
    assert _leaf_on_disk(agent.out).serial_number == renewed.leaf.serial_number
    assert (agent.out / "svid.pem").stat().st_ino != inode
    assert {p.name: p.stat().st_mode & 0o777 for p in agent.out.iterdir()} == FILES


def test_a_call_without_the_security_header_is_refused(agent: AgentProcess) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        call(agent.socket, pb.X509SVIDRequest(), metadata=())
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    answer = call(agent.socket, pb.X509SVIDRequest())  # the same call with the header
    assert answer.svids[0].spiffe_id.startswith("spiffe://docket.local/device/")


def test_jwt_svids_for_any_audiences_validate(agent: AgentProcess, docket: Docket) -> None:
    """Two audiences and both at once, each minted by Docket for the served SVID (no
    attestation): each validates with ValidateJWTSVID and with py-spiffe's JwtSource."""
    wanted = [{"payments"}, {"ledger"}, {"payments", "ledger"}]
    with agent.client() as client:
        svids = [client.fetch_jwt_svid(audiences) for audiences in wanted]
        for svid, audiences in zip(svids, wanted, strict=True):
            assert svid.audience == audiences
            assert str(svid.spiffe_id).startswith("spiffe://docket.local/device/")
            for audience in audiences:
                assert client.validate_jwt_svid(svid.token, audience).spiffe_id == svid.spiffe_id
        client_for_source = agent.client()
    source = JwtSource(client_for_source, timeout_in_seconds=30)
    try:
        for svid, audiences in zip(svids, wanted, strict=True):
            bundle = source.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
            assert bundle is not None
            assert JwtSvid.parse_and_validate(svid.token, bundle, audiences).audience == audiences
        fetched = source.fetch_svid({"payments", "ledger"})  # the agent's cached token
        assert fetched.token == svids[2].token
    finally:
        source.close()
        client_for_source.close()
    minted = [
        entry["detail"]
        for entry in docket.audit_entries("certificate")
        if "svid_serial" in entry["detail"]
    ]
    assert [sorted(detail["audience"]) for detail in minted] == [
        ["payments"],
        ["ledger"],
        ["ledger", "payments"],
    ]


def test_an_over_long_audience_list_is_refused(agent: AgentProcess) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        call(agent.socket, pb.JWTSVIDRequest(audience=[f"aud-{i}" for i in range(17)]))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "17 given, more than the 16 accepted" in (refused.value.details() or "")


def _mint_request(
    stub: AttestationStub, leaf: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> attestation_pb2.MintJwtSvidRequest:
    """What the agent sends for a JWT-SVID for "payments": a fresh challenge for the SVID
    ``leaf``, signed with ``key``."""
    der = leaf.public_bytes(serialization.Encoding.DER)
    challenge = stub.JwtChallenge(attestation_pb2.JwtChallengeRequest(svid=der))
    proof = jwt_svid_proof(challenge.challenge_id, challenge.nonce, ["payments"])
    return attestation_pb2.MintJwtSvidRequest(
        challenge_id=challenge.challenge_id,
        audience=["payments"],
        svid=der,
        signature=key.sign(proof, ec.ECDSA(hashes.SHA256())),
    )


def _refused_mint(
    stub: AttestationStub, request: attestation_pb2.MintJwtSvidRequest, docket: Docket
) -> str:
    """MintJwtSvid's refusal of ``request``: PERMISSION_DENIED, recorded by Docket."""
    with pytest.raises(grpc.RpcError) as refused:
        stub.MintJwtSvid(request, timeout=30)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    reason = refused.value.details() or ""
    (*_, last) = docket.audit_entries("attestation")
    assert last["decision"] == "deny"
    assert last["detail"] == {"stage": "jwt", "reason": reason}
    return reason


def test_a_stolen_svid_without_its_key_is_refused(agent: AgentProcess, docket: Docket) -> None:
    with agent.client() as client:
        stolen = client.fetch_x509_svid().leaf  # public: any peer it talked to has it
    thief = ec.generate_private_key(ec.SECP256R1())
    with grpc.insecure_channel(f"127.0.0.1:{docket.grpc_port}") as channel:
        stub = AttestationStub(channel)
        reason = _refused_mint(stub, _mint_request(stub, stolen, thief), docket)
    assert "does not verify with the SVID's key" in reason


def test_a_replayed_proof_is_refused(agent: AgentProcess, docket: Docket) -> None:
    with agent.client() as client:
        svid = client.fetch_x509_svid()
    assert isinstance(svid.private_key, ec.EllipticCurvePrivateKey)
    with grpc.insecure_channel(f"127.0.0.1:{docket.grpc_port}") as channel:
        stub = AttestationStub(channel)
        request = _mint_request(stub, svid.leaf, svid.private_key)
        assert stub.MintJwtSvid(request, timeout=30).jwt  # the first use: minted
        reason = _refused_mint(stub, request, docket)  # the same proof again
    assert "already used" in reason


def test_a_revoked_device_gets_no_jwt_svid(agent: AgentProcess, docket: Docket) -> None:
    with agent.client() as client:
        svid = client.fetch_x509_svid()
        client.fetch_jwt_svid({"payments"})  # allowed before the revocation
    ek_hash = str(svid.spiffe_id).rsplit("/", 1)[1]
    revoke = [DOCKET, "ca", "revoke", "--device", ek_hash, "--reason", "stolen"]
    subprocess.run([*revoke, "--data-dir", str(docket.data_dir)], capture_output=True, check=True)
    attempts = iter(range(10_000))

    def refused() -> grpc.RpcError | None:
        """A new audience each time (none cached): refused once Docket applied the list
        (within revocation_poll_seconds)."""
        try:
            call(agent.socket, pb.JWTSVIDRequest(audience=[f"after-{next(attempts)}"]))
        except grpc.RpcError as exc:
            return exc
        return None

    error = until("a refused JWT-SVID", refused, 30, agent.log)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "revoked" in (error.details() or "")
    (*_, last) = docket.audit_entries("attestation")
    assert last["detail"]["stage"] == "jwt"
    assert "revoked" in last["detail"]["reason"]


def test_sigterm_stops_the_agent_and_removes_its_socket(agent: AgentProcess) -> None:
    assert agent.socket.exists()
    agent.process.send_signal(signal.SIGTERM)
    assert agent.process.wait(timeout=30) == 0
    assert not agent.socket.exists()
    assert agent.events("agent: stopped")


def test_a_revoked_device_is_refused_at_renewal_and_its_svid_dropped_at_expiry(
    agent: AgentProcess, docket: Docket
) -> None:
    with agent.client() as client:
        svid = client.fetch_x509_svid()
    ek_hash = str(svid.spiffe_id).rsplit("/", 1)[1]
    data_dir = str(docket.data_dir)
    subprocess.run(
        [DOCKET, "ca", "revoke", "--device", ek_hash, "--reason", "stolen", "--data-dir", data_dir],
        capture_output=True,
        check=True,
    )
    errors: queue.Queue[Exception] = queue.Queue()
    client = agent.client()
    handle = client.stream_x509_contexts(lambda _: None, errors.put, retry_connect=False)
    try:
        refused = agent.wait_for("agent: renewal refused")
        assert "revoked" in refused["reason"]
        # refused, but the SVID is still valid: it is still served
        with agent.client() as again:
            assert again.fetch_x509_svid().leaf.serial_number == svid.leaf.serial_number
        assert errors.empty()
        # at its expiry it is dropped: the stream ends, and nothing is served
        error = errors.get(timeout=RENEWAL)
    finally:
        handle.cancel()
        client.close()
    assert "PERMISSION_DENIED" in str(error)
    # The agent ends the streams, then logs it: the line may come just after the error.
    agent.wait_for("agent: SVID expired, no longer served", timeout=10)
    with pytest.raises(grpc.RpcError) as denied:
        call(agent.socket, pb.X509SVIDRequest())
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "revoked" in (denied.value.details() or "")
    # Docket recorded the refusal
    (*_, last) = docket.audit_entries("attestation")
    assert last["decision"] == "deny"


@pytest.mark.parametrize(
    ("socket_arg", "needle"),
    [
        pytest.param("FILE", "exists and is not a socket", id="a-file"),
        pytest.param("127.0.0.1:8081", "on a Unix socket only", id="tcp"),
    ],
)
def test_an_unusable_socket_is_one_line_exit_2(
    tmp_path: Path, socket_arg: str, needle: str
) -> None:
    """Settings that retrying cannot fix end the agent at once, before any attestation
    (no TPM or server is needed to see it)."""
    taken = tmp_path / "taken"
    taken.write_text("a file the agent must not replace")
    done = subprocess.run(
        [
            DOCKET,
            *("agent", "run", "--tcti", "swtpm:host=127.0.0.1,port=1"),
            *("--out", str(tmp_path / "creds")),
            *("--socket", str(taken) if socket_arg == "FILE" else socket_arg),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("docket: ")
    assert needle in done.stderr
    assert done.stderr.count("\n") == 1
    assert taken.read_text() == "a file the agent must not replace"
