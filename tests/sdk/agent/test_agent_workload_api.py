"""The SPIFFE Workload API as an existing client sees it: py-spiffe's ``WorkloadApiClient``
on the agent's Unix socket, the SVID coming from a real Docket CA (fake_attestation.py).

X.509: the SVID, its key and bundle; the bundle alone; a stream that gets a new message
when the SVID is renewed and ends when it is withdrawn. JWT: a token for one audience or
several (minted with the SVID, Docket's refusals passed on with their status),
the JWK Set, validation. The security header is required by every method; no SVID is
UNAVAILABLE (PERMISSION_DENIED once Docket refused the device). The socket is 0600 in a
0700 directory, Unix-domain only, and not taken over from a running agent.
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fake_attestation import SPIFFE_ID, Clock, FakeAttest
from spiffe import JwtBundleSet, TrustDomain, WorkloadApiClient
from spiffe.workloadapi.x509_context import X509Context
from workload_client import HEADER, call

from attestation._ca import CertificateAuthority
from sdk import (
    ConfigurationError,
    DocketError,
    InvalidRequestError,
    PermissionDeniedError,
    TransportError,
)
from sdk.agent._renewal import IdentityState, JwtSvids, Renewer
from sdk.agent._workload_api import WorkloadApi, WorkloadApiServer, socket_path
from sdk.workload import workload_pb2 as pb

TD = TrustDomain("docket.test")
WAIT = 10.0  # seconds a stream's next message may take (it comes at once)


class Agent:
    """The servicer on a socket, its state fed by a Renewer over a fake clock."""

    def __init__(self, directory: Path) -> None:
        self.clock = Clock()
        # the CA's times are the fake clock's; the Workload API reads the real one
        self.clock.now = datetime.now(self.clock.now.tzinfo)
        self.docket = FakeAttest(self.clock)
        self.state = IdentityState()
        tpm = threading.Lock()
        self.jwts = JwtSvids(self.docket.mint, self.clock)
        self.renewer = Renewer(
            self.docket, directory / "creds", "docket", self.state, self.jwts, tpm=tpm
        )
        self.socket = directory / "api" / "agent.sock"
        self.server = WorkloadApiServer(WorkloadApi(self.state, self.jwts, self.clock), self.socket)

    def client(self) -> WorkloadApiClient:
        return WorkloadApiClient(f"unix:{self.socket}", default_timeout=WAIT)

    def renew(self) -> None:
        self.renewer.attest_once()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a Unix socket's path has at most 107 bytes."""
    directory = Path(tempfile.mkdtemp(prefix="wapi-", dir="/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def agent(short_dir: Path) -> Iterator[Agent]:
    running = Agent(short_dir)
    try:
        yield running
    finally:
        running.server.close()


def test_fetch_x509_context_gives_the_svid_its_key_and_bundle(agent: Agent) -> None:
    agent.renew()
    with agent.client() as client:
        context = client.fetch_x509_context()
    (svid,) = context.x509_svids
    served = agent.state.now().identity
    assert served is not None
    assert str(svid.spiffe_id) == SPIFFE_ID
    assert svid.leaf.serial_number == served.serial
    assert len(svid.cert_chain) == 2  # leaf and issuing intermediate
    assert isinstance(svid.private_key, ec.EllipticCurvePrivateKey)
    assert svid.private_key.public_key() == svid.leaf.public_key()
    bundle = context.x509_bundle_set.get_bundle_for_trust_domain(TD)
    assert bundle is not None
    assert {c.subject for c in bundle.x509_authorities} == {
        c.subject for c in agent.docket.ca_certificates()
    }


def test_fetch_x509_bundles(agent: Agent) -> None:
    agent.renew()
    with agent.client() as client:
        bundles = client.fetch_x509_bundles()
    bundle = bundles.get_bundle_for_trust_domain(TD)
    assert bundle is not None
    assert len(bundle.x509_authorities) == 2  # the root and the issuing intermediate


def test_the_x509_stream_sends_each_renewal_and_ends_at_withdrawal(agent: Agent) -> None:
    agent.renew()
    contexts: queue.Queue[X509Context] = queue.Queue()
    errors: queue.Queue[Exception] = queue.Queue()
    client = agent.client()
    handle = client.stream_x509_contexts(contexts.put, errors.put, retry_connect=False)
    try:
        first = contexts.get(timeout=WAIT).default_svid.leaf.serial_number
        agent.renew()
        second = contexts.get(timeout=WAIT).default_svid.leaf.serial_number
        assert first != second
        served = agent.state.now().identity
        assert served is not None
        assert served.serial == second
        agent.state.withdraw("attestation refused: device revoked", refused=True)
        error = errors.get(timeout=WAIT)
        assert "PERMISSION_DENIED" in str(error)
        assert contexts.empty()
    finally:
        handle.cancel()
        client.close()


REQUESTS = {
    "FetchX509SVID": pb.X509SVIDRequest(),
    "FetchX509Bundles": pb.X509BundlesRequest(),
    "FetchJWTSVID": pb.JWTSVIDRequest(audience=["docket"]),
    "FetchJWTBundles": pb.JWTBundlesRequest(),
    "ValidateJWTSVID": pb.ValidateJWTSVIDRequest(audience="docket", svid="x.y.z"),
}


def _call(agent: Agent, method: str, metadata: tuple[tuple[str, str], ...] = (HEADER,)) -> Any:
    return call(agent.socket, REQUESTS[method], metadata, WAIT)


@pytest.mark.parametrize("method", sorted(REQUESTS))
def test_a_call_without_the_security_header_is_invalid_argument(agent: Agent, method: str) -> None:
    agent.renew()
    with pytest.raises(grpc.RpcError) as refused:
        _call(agent, method, metadata=())
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "security header" in refused.value.details()
    with pytest.raises(grpc.RpcError) as wrong:
        _call(agent, method, metadata=(("workload.spiffe.io", "false"),))
    assert wrong.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("method", ["FetchX509SVID", "FetchJWTSVID", "FetchX509Bundles"])
def test_without_an_svid_calls_are_unavailable_then_denied_once_refused(
    agent: Agent, method: str
) -> None:
    with pytest.raises(grpc.RpcError) as before:
        _call(agent, method)
    assert before.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "attesting" in before.value.details()
    agent.state.withdraw("attestation refused: device revoked", refused=True)
    with pytest.raises(grpc.RpcError) as after:
        _call(agent, method)
    assert after.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "device revoked" in after.value.details()


def test_bundles_outlive_the_withdrawn_svid(agent: Agent) -> None:
    agent.renew()
    agent.state.withdraw("expired", refused=True)
    assert _call(agent, "FetchX509Bundles").bundles["spiffe://docket.test"]
    assert _call(agent, "FetchJWTBundles").bundles["spiffe://docket.test"]


def test_fetch_jwt_svid_for_an_audience_and_validate_it(agent: Agent) -> None:
    agent.renew()
    with agent.client() as client:
        svid = client.fetch_jwt_svid({"billing"})
        assert str(svid.spiffe_id) == SPIFFE_ID
        assert svid.audience == {"billing"}
        bundles = client.fetch_jwt_bundles()
        validated = client.validate_jwt_svid(svid.token, "billing")
        assert str(validated.spiffe_id) == SPIFFE_ID
    # the token verifies with the JWT bundle served, as a relying party checks it
    assert isinstance(bundles, JwtBundleSet)
    bundle = bundles.get_bundle_for_trust_domain(TD)
    assert bundle is not None
    kid = jwt.get_unverified_header(svid.token)["kid"]
    key = bundle.get_jwt_authority(kid)
    assert key is not None
    claims = jwt.decode(svid.token, key, algorithms=["ES256"], audience="billing")  # type: ignore[arg-type]
    assert claims["sub"] == SPIFFE_ID
    assert [audiences for _, _, audiences in agent.docket.mints] == [("billing",)]


def test_validate_refuses_a_wrong_audience_and_a_foreign_token(agent: Agent) -> None:
    agent.renew()
    identity = agent.state.now().identity
    assert identity is not None
    token = agent.jwts.fetch(identity, ["docket"])
    other = CertificateAuthority.create("docket.test", agent.clock())
    foreign = other.issue_jwt(SPIFFE_ID, "docket", now=agent.clock())
    cases = {
        "another audience": (token, "billing", "Audience doesn't match"),
        "another CA's key": (foreign, "docket", "is not in the bundle"),
        "not a JWT": ("x.y.z", "docket", "malformed"),
    }
    for case, (svid, audience, reason) in cases.items():
        with pytest.raises(grpc.RpcError) as refused:
            call(agent.socket, pb.ValidateJWTSVIDRequest(audience=audience, svid=svid))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
        assert reason in refused.value.details(), case


def test_fetch_jwt_svid_for_two_audiences_validates_for_each(agent: Agent) -> None:
    agent.renew()
    with agent.client() as client:
        svid = client.fetch_jwt_svid({"billing", "ledger"})
        assert svid.audience == {"billing", "ledger"}
        for audience in ("billing", "ledger"):
            assert str(client.validate_jwt_svid(svid.token, audience).spiffe_id) == SPIFFE_ID


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        pytest.param(
            PermissionDeniedError("attestation refused: revoked"),
            grpc.StatusCode.PERMISSION_DENIED,
            id="refused",
        ),
        pytest.param(
            InvalidRequestError("audience: 17 given, more than the 16 accepted"),
            grpc.StatusCode.INVALID_ARGUMENT,
            id="too-many",
        ),
        pytest.param(TransportError("Docket is down"), grpc.StatusCode.UNAVAILABLE, id="down"),
    ],
)
def test_a_mint_docket_refuses_is_answered_with_its_reason(
    agent: Agent, failure: DocketError, code: grpc.StatusCode
) -> None:
    agent.renew()
    agent.docket.failure = failure
    with pytest.raises(grpc.RpcError) as refused:
        call(agent.socket, pb.JWTSVIDRequest(audience=["billing"]))
    assert refused.value.code() == code
    assert failure.message in refused.value.details()


def test_fetch_jwt_svid_for_no_audience_is_refused(agent: Agent) -> None:
    agent.renew()
    for audiences in ([], ["a", ""]):
        with pytest.raises(grpc.RpcError) as refused:
            call(agent.socket, pb.JWTSVIDRequest(audience=audiences))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "audience must" in refused.value.details()


def test_the_socket_is_0600_in_a_0700_directory(agent: Agent) -> None:
    assert stat.S_ISSOCK(agent.socket.lstat().st_mode)
    assert stat.S_IMODE(agent.socket.lstat().st_mode) == 0o600
    assert stat.S_IMODE(agent.socket.parent.stat().st_mode) == 0o700
    agent.server.close()
    assert not agent.socket.exists()


def test_a_running_agents_socket_is_not_taken_over(agent: Agent) -> None:
    with pytest.raises(ConfigurationError, match="another process listens"):
        WorkloadApiServer(WorkloadApi(agent.state, agent.jwts, agent.clock), agent.socket)


def test_a_stale_socket_is_replaced_and_a_file_is_not(short_dir: Path) -> None:
    stale = short_dir / "stale.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(stale))  # bound, never listening: what a killed agent leaves
    api = WorkloadApi(IdentityState(), JwtSvids(FakeAttest(Clock()).mint, Clock()), Clock())
    WorkloadApiServer(api, stale).close()
    plain = short_dir / "file"
    plain.write_text("not a socket")
    with pytest.raises(ConfigurationError, match="not a socket"):
        WorkloadApiServer(api, plain)
    assert plain.read_text() == "not a socket"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("/run/docket/agent.sock", "/run/docket/agent.sock"),
        ("unix:/run/docket/agent.sock", "/run/docket/agent.sock"),
        ("unix:///run/docket/agent.sock", "/run/docket/agent.sock"),
        ("agent.sock", os.path.join(os.getcwd(), "agent.sock")),
    ],
)
def test_socket_path(address: str, expected: str) -> None:
    assert socket_path(address) == Path(expected)


@pytest.mark.parametrize("address", ["127.0.0.1:8081", "tcp://127.0.0.1:8081", "dns:///x:1", ""])
def test_only_unix_sockets(address: str) -> None:
    with pytest.raises(ConfigurationError):
        socket_path(address)
