"""A fleet's revocations (issue 16): a replica pulls its CA's signed revocation list from
another replica's ``/.well-known/docket-revocations.json`` (``revocations_url``), so a
``docket ca revoke`` on the issuer reaches it within a pull interval; with the source
gone the list goes stale, and health and metrics say so."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from e2e.docket_process import DOCKET, Docket, start_docket
from grpc_health.v1 import health_pb2, health_pb2_grpc

pytestmark = pytest.mark.e2e

PATH = "/.well-known/docket-revocations.json"
BOUND = 60.0


def served_version(server: Docket) -> int:
    """The version of the revocation list ``server`` applies (and serves)."""
    base = server.metrics_url.removesuffix("/metrics")
    document = json.loads(httpx.get(base + PATH, timeout=5).content)

    payload = document["payload"]
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return int(json.loads(decoded)["version"])


def until(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        assert time.monotonic() < deadline, f"not within {BOUND} s: {what}"
        time.sleep(0.1)


def health(server: Docket, service: str) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def metric(server: Docket, name: str) -> float | None:
    for line in httpx.get(server.metrics_url, timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_revocation_on_the_issuer_reaches_the_replica_and_a_lost_source_goes_stale(
    tmp_path: Path, workers: str
) -> None:
    issuer = start_docket(tmp_path / "issuer", "--admission", "off")
    replica: Docket | None = None
    try:
        # The replica holds the same CA (copied, as an operator provisions a site).
        shutil.copytree(issuer.data_dir / "ca", tmp_path / "replica" / "data" / "ca")
        base = issuer.metrics_url.removesuffix("/metrics")
        replica = start_docket(
            tmp_path / "replica",
            "--admission",
            "off",
            "--workers",
            workers,
            env={
                "DOCKET_REVOCATIONS_URL": base + PATH,
                "DOCKET_REVOCATIONS_PULL_SECONDS": "0.5",
                "DOCKET_REVOCATION_POLL_SECONDS": "0.5",
                "DOCKET_MAX_REVOCATION_STALENESS": "4",
            },
        )
        assert served_version(replica) == 0
        until(
            "the replica confirms its list",
            lambda: metric(replica, "docket_revocations_stale") == 0,
        )
        assert health(replica, "docket.revocations") == health_pb2.HealthCheckResponse.SERVING

        revoked = subprocess.run(
            [DOCKET, "ca", "revoke", "--data-dir", str(issuer.data_dir), "--device", "ab" * 32,
             "--reason", "stolen laptop"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert revoked.returncode == 0, revoked.stderr
        until("the issuer applies it", lambda: served_version(issuer) == 1)
        until("the replica pulls and applies it", lambda: served_version(replica) == 1)

        assert issuer.stop() == 0  # the source goes away
        until(
            "the replica's list goes stale",
            lambda: metric(replica, "docket_revocations_stale") == 1,
        )
        # Each worker sees the age at its own poll: whichever answers says so within one.
        until(
            "the replica's health says so",
            lambda: (
                health(replica, "docket.revocations") == health_pb2.HealthCheckResponse.NOT_SERVING
            ),
        )
        assert health(replica, "") == health_pb2.HealthCheckResponse.SERVING
        assert "revocations.stale" in replica.log.read_text()
    finally:
        issuer.stop()
        if replica is not None:
            assert replica.stop() == 0
