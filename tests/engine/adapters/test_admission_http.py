"""The admission webhook over real HTTPS, in-process: the server certificate from
Docket's CA, AdmissionReviews in and out, the HTTP errors, keep-alive and health."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonpatch
import pytest
from admission_reviews import body, fixture, patch_of, review
from serving import Running

from engine._runtime.prepare import Address, admission_tls
from engine._runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[3]


class Webhook:
    def __init__(self, running: Running, url: str, ca: bytes) -> None:
        self.running = running
        self.url = url
        context = ssl.create_default_context(cadata=ca.decode())
        self.client = httpx.Client(base_url=url, verify=context, timeout=10)

    def post(self, path: str, review_: dict[str, object]) -> httpx.Response:
        return self.client.post(path, content=body(review_), headers=JSON)


JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    data = tmp_path_factory.mktemp("admission-http") / "data"
    settings = Settings(
        bundle=ROOT / "policies", data_dir=data, bundle_poll_seconds=60, admission="127.0.0.1:0"
    )
    running = Running(settings)
    try:
        admission_tls(settings, running.worker.ca)  # what `docket serve` does before workers
        port = running.worker.start_admission(Address("127.0.0.1", 0))
        hook = Webhook(running, f"https://localhost:{port}", running.worker.ca.trust_bundle())
        yield hook
        hook.client.close()
    finally:
        running.stop()


def test_healthz(webhook: Webhook) -> None:
    answer = webhook.client.get("/healthz")
    assert (answer.status_code, answer.text) == (200, "ok\n")


def test_validate_allows_and_echoes_the_uid(webhook: Webhook) -> None:
    sent = review(fixture("deployment"))
    answer = webhook.post("/validate", sent)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    document = answer.json()
    assert document["apiVersion"] == "admission.k8s.io/v1"
    assert document["kind"] == "AdmissionReview"
    assert document["response"]["uid"] == sent["request"]["uid"]  # type: ignore[index]
    assert document["response"]["allowed"] is True


def test_validate_denies_with_a_message(webhook: Webhook) -> None:
    answer = webhook.post("/validate", review(fixture("deployment-untrusted-registry")))
    response = answer.json()["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert "admit-allowed-registries" in response["status"]["message"]


def test_mutate_patch_applies_and_pins_the_regions(webhook: Webhook) -> None:
    obj = fixture("deployment-restricted-eu")
    answer = webhook.post("/mutate", review(obj))
    response = answer.json()["response"]
    assert response["allowed"] is True
    patched = jsonpatch.apply_patch(obj, patch_of(answer.json()))
    template = patched["spec"]["template"]
    assert template["metadata"]["annotations"]["docket.io/decision-id"]
    terms = template["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    for term in terms:
        # Each term (ORed) now has an expression (ANDed) that keeps it in the EU.
        regions = [
            e["values"]
            for e in term.get("matchExpressions", [])
            if e["key"] == "topology.kubernetes.io/region" and e["operator"] == "In"
        ]
        assert any(all(r.startswith("eu-") for r in values) for values in regions), term


def test_dry_run_is_answered_the_same(webhook: Webhook) -> None:
    live = webhook.post("/validate", review(fixture("deployment"))).json()["response"]
    dry = webhook.post("/validate", review(fixture("deployment"), dry_run=True)).json()
    assert dry["response"]["allowed"] == live["allowed"]


def test_one_connection_carries_many_reviews(webhook: Webhook) -> None:
    for _ in range(3):
        assert webhook.post("/validate", review(fixture("pod"))).status_code == 200
    # httpx reuses the connection: the server kept it open (HTTP/1.1 keep-alive).
    assert webhook.client.get("/healthz").headers.get("connection") != "close"


@pytest.mark.parametrize(
    ("method", "path", "content", "headers", "status", "needle"),
    [
        ("POST", "/validate", b"{not json", JSON, 400, ""),
        (
            "POST",
            "/validate",
            json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}),
            JSON,
            400,
            "v1beta1",
        ),
        ("POST", "/validate", b"{}", {"Content-Type": "text/plain"}, 415, "application/json"),
        ("POST", "/elsewhere", b"{}", JSON, 404, "/validate or /mutate"),
        ("GET", "/validate", b"", {}, 405, "POST"),
        ("GET", "/metrics", b"", {}, 404, "no such path"),
    ],
    ids=["not-json", "old-version", "content-type", "path", "get-validate", "get-other"],
)
def test_http_errors(
    webhook: Webhook,
    method: str,
    path: str,
    content: bytes | str,
    headers: dict[str, str],
    status: int,
    needle: str,
) -> None:
    answer = webhook.client.request(method, path, content=content, headers=headers)
    assert answer.status_code == status, answer.text
    assert needle in answer.json()["error"]


def test_a_body_over_the_limit_is_refused_unread(webhook: Webhook) -> None:
    answer = webhook.client.post("/validate", content=b"x" * (4 * 1024 * 1024 + 1), headers=JSON)
    assert answer.status_code == 413


def test_the_certificate_is_docket_cas_for_localhost(webhook: Webhook) -> None:
    pem = (webhook.running.worker.settings.data_dir / "admission" / "server.pem").read_bytes()
    key = webhook.running.worker.settings.data_dir / "admission" / "server.key"
    assert pem.count(b"BEGIN CERTIFICATE") == 2  # leaf and issuing CA
    assert key.stat().st_mode & 0o777 == 0o600
    # Verified by name: the client above checks "localhost" against it on every call.
    assert webhook.client.get("/healthz").status_code == 200


def test_a_response_whose_body_was_not_read_closes_the_connection(webhook: Webhook) -> None:
    answer = webhook.client.post("/elsewhere", content=b"{}", headers=JSON)
    assert answer.headers["connection"] == "close"
    kept = webhook.post("/validate", review(fixture("pod")))
    assert "connection" not in kept.headers  # HTTP/1.1: kept open
    assert kept.headers["content-length"] == str(len(kept.content))
    assert kept.headers["server"].startswith("docket")


@contextlib.contextmanager
def small_webhook(
    tmp_path: Path, *, max_connections: int, request_seconds: float
) -> Iterator[tuple[Webhook, int]]:
    """A webhook of its own with a small connection limit and a short request deadline."""
    settings = Settings(
        bundle=ROOT / "policies",
        data_dir=tmp_path / "data",
        bundle_poll_seconds=60,
        admission="127.0.0.1:0",
        admission_max_connections=max_connections,
        admission_request_seconds=request_seconds,
    )
    running = Running(settings)
    try:
        admission_tls(settings, running.worker.ca)
        port = running.worker.start_admission(Address("127.0.0.1", 0))
        hook = Webhook(running, f"https://localhost:{port}", running.worker.ca.trust_bundle())
        with hook.client:
            yield hook, port
    finally:
        running.stop()


def tls_connection(hook: Webhook, port: int) -> ssl.SSLSocket:
    """A TLS connection to the webhook, its handshake done."""
    context = ssl.create_default_context(cadata=hook.running.worker.ca.trust_bundle().decode())
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return context.wrap_socket(raw, server_hostname="localhost")


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closes (or resets) the connection within ``within`` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:  # reset, or a TLS connection cut without close_notify
        return True


def test_connections_are_bounded_and_tricklers_cut_off(tmp_path: Path) -> None:
    """A few trickling TLS connections are cut off at the deadline, no thread beyond the
    pool of two is started, and a real review gets through meanwhile."""
    sockets: list[socket.socket] = []
    with small_webhook(tmp_path, max_connections=2, request_seconds=1.0) as (hook, port):
        try:
            for _ in range(10):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.sendall(b"\x16\x03\x01")  # the start of a TLS record, and nothing more
                sockets.append(sock)
            started = time.monotonic()
            answer = hook.post("/validate", review(fixture("pod")))
            assert answer.json()["response"]["allowed"] is True
            assert time.monotonic() - started < 8  # not 10 tricklers' deadlines in a row
            mine = f"docket-admission-{port}-"
            pool = [t for t in threading.enumerate() if t.name.startswith(mine)]
            assert len(pool) <= 2
            for sock in sockets:  # the handshake's deadline (1 s), not asyncio's 60 s
                assert closed_by_server(sock, 5)
        finally:
            for sock in sockets:
                sock.close()


@pytest.mark.parametrize(
    "sent",
    [
        b"POST /validate HTTP/1.1\r\nHost: localhost\r\n",
        b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{",
    ],
    ids=["headers", "body"],
)
def test_a_request_that_trickles_after_the_handshake_is_cut_off(
    tmp_path: Path, sent: bytes
) -> None:
    with small_webhook(tmp_path, max_connections=4, request_seconds=1.0) as (hook, port):
        with tls_connection(hook, port) as tls:
            tls.sendall(sent)
            started = time.monotonic()
            assert closed_by_server(tls, 5)
            assert time.monotonic() - started < 3
        # The connection is gone and its slot free: the webhook still answers.
        assert hook.client.get("/healthz").status_code == 200


def test_a_new_connection_lets_an_idle_one_go(tmp_path: Path) -> None:
    """Two idle keep-alive connections fill a limit of two; a third client is served."""
    with small_webhook(tmp_path, max_connections=2, request_seconds=2.0) as (hook, _port):
        context = ssl.create_default_context(cadata=hook.running.worker.ca.trust_bundle().decode())
        others = [httpx.Client(base_url=hook.url, verify=context) for _ in range(2)]
        try:
            for other in others:
                assert other.get("/healthz").status_code == 200  # now idle, kept alive
            assert hook.post("/validate", review(fixture("pod"))).status_code == 200
        finally:
            for other in others:
                other.close()


def test_a_full_webhook_answers_503_until_a_slot_frees(tmp_path: Path) -> None:
    """Two connections in the middle of a request fill a limit of two: a third is
    answered 503 (and closed), and served once their deadline cuts them off."""
    with small_webhook(tmp_path, max_connections=2, request_seconds=1.5) as (hook, port):
        busy = [tls_connection(hook, port) for _ in range(2)]
        try:
            for tls in busy:
                tls.sendall(b"POST /validate HTTP/1.1\r\n")
            full = hook.client.get("/healthz")
            assert (full.status_code, full.headers["connection"]) == (503, "close")
            assert full.headers["server"] == "docket"
            time.sleep(2.0)
            assert hook.client.get("/healthz").status_code == 200
        finally:
            for tls in busy:
                tls.close()


def test_a_kept_alive_connection_answers_without_a_delayed_ack(webhook: Webhook) -> None:
    """uvicorn writes a response's head and body apart: without TCP_NODELAY on the
    accepted connection the body waits for the client's delayed ACK (40 ms on Linux)."""
    webhook.client.get("/healthz")  # the connection is open
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        assert webhook.client.get("/healthz").status_code == 200
        timings.append(time.perf_counter() - started)
    assert statistics.median(timings) < 0.02, timings
