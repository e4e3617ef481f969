"""``docket serve`` under many concurrent calls (issue 15): the asynchronous server
keeps calls in flight up to ``max_concurrent_rpcs`` and refuses the next one cleanly,
and a server killed (SIGKILL) under load has in its log, after a restart, the entry of
every decision it answered."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import grpc
import httpx
import pytest
from e2e.docket_process import DOCKET, Docket, start_docket
from prometheus_client.parser import text_string_to_metric_families

from sdk.v1 import decisions_pb2 as pb
from sdk.v1 import decisions_pb2_grpc as pb_grpc

pytestmark = pytest.mark.e2e

# Allowed by the default bundle (policies/): public data is anyone's to read.
REQUEST = pb.AuthorizeRequest(
    principal=pb.EntityRef(type="User", id="heidi"),
    action=pb.EntityRef(type="Action", id="read"),
    resource=pb.EntityRef(type="Data", id="public-website"),
)
BOUND = 60.0
"""Seconds after which a condition that should have come true fails the test."""


@contextmanager
def write_lock(database: Path) -> Iterator[None]:
    """Hold the audit database's write lock as another process would: the server's
    commits wait for it, so the calls that need them stay in flight."""
    with closing(sqlite3.connect(database, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")


def sample(server: Docket, name: str, labels: dict[str, str]) -> float:
    text = httpx.get(server.metrics_url, timeout=5).text
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return found.value
    return 0.0


def wait_until(what: str, condition: object) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {BOUND} s: {what}"
        time.sleep(0.05)


def test_past_max_concurrent_rpcs_a_call_is_refused_resource_exhausted(tmp_path: Path) -> None:
    server = start_docket(
        tmp_path / "serve",
        "--admission",
        "off",
        env={"DOCKET_MAX_CONCURRENT_RPCS": "8"},
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = pb_grpc.DecisionsStub(channel)
            assert stub.Authorize(REQUEST, timeout=10).decision == pb.DECISION_ALLOW
            with write_lock(server.data_dir / "docket.db"):
                held = [stub.Authorize.future(REQUEST, timeout=BOUND) for _ in range(8)]
                wait_until(
                    "8 calls in flight",
                    lambda: sample(server, "docket_in_flight_requests", {"api": "authorize"}) == 8,
                )
                with pytest.raises(grpc.RpcError) as refused:
                    stub.Authorize(REQUEST, timeout=10)
                assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                assert not any(call.done() for call in held)  # nothing answered unrecorded
            answered = [call.result() for call in held]
            assert {a.decision for a in answered} == {pb.DECISION_ALLOW}
            # Room again once they are answered.
            assert stub.Authorize(REQUEST, timeout=10).decision == pb.DECISION_ALLOW
    finally:
        assert server.stop() == 0
    ids = {entry["detail"]["decision_id"] for entry in server.audit_entries("decision")}
    assert {a.decision_id for a in answered} <= ids


def test_a_call_cancelled_while_it_waits_for_its_commit_is_counted_cancelled(
    tmp_path: Path,
) -> None:
    server = start_docket(tmp_path / "serve", "--admission", "off")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = pb_grpc.DecisionsStub(channel)
            with write_lock(server.data_dir / "docket.db"):
                call = stub.Authorize.future(REQUEST, timeout=BOUND)
                wait_until(
                    "the call in flight",
                    lambda: sample(server, "docket_in_flight_requests", {"api": "authorize"}) == 1,
                )
                assert call.cancel()
                wait_until(
                    "the call counted",
                    lambda: sample(server, "docket_in_flight_requests", {"api": "authorize"}) == 0,
                )
            cancelled = {"api": "authorize", "code": "CANCELLED"}
            assert sample(server, "docket_requests_total", cancelled) == 1
            assert sample(server, "docket_requests_total", {"api": "authorize", "code": "OK"}) == 0
            # Its entry was accepted before the cancel: it is committed all the same.
            assert stub.Authorize(REQUEST, timeout=10).receipt.index >= 1
    finally:
        assert server.stop() == 0


class Load:
    """Authorize calls kept ``in_flight`` at a time on one channel until ``answered``
    have been answered (at most ``limit`` sent); what each call got is kept."""

    def __init__(self, server: Docket, *, in_flight: int, answered: int, limit: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        self.stub = pb_grpc.DecisionsStub(self.channel)
        self.slots = threading.Semaphore(in_flight)
        self.in_flight = in_flight
        self.wanted = answered
        self.limit = limit
        self.lock = threading.Lock()
        self.answered: list[str] = []
        self.failed: list[grpc.StatusCode] = []
        self.enough = threading.Event()
        self.sent = 0

    def _done(self, call: grpc.Future) -> None:  # type: ignore[type-arg]
        try:
            reply = call.result()
        except grpc.RpcError as exc:
            with self.lock:
                self.failed.append(exc.code())
        else:
            with self.lock:
                self.answered.append(reply.decision_id)
                if len(self.answered) >= self.wanted:
                    self.enough.set()
        self.slots.release()

    def run(self) -> None:
        """Send until enough are answered; return with up to ``in_flight`` still out."""
        while not self.enough.is_set():
            assert self.sent < self.limit, f"{self.sent} calls sent, {len(self.answered)} OK"
            assert self.slots.acquire(timeout=BOUND), "no call answered for a minute"
            self.stub.Authorize.future(REQUEST, timeout=BOUND).add_done_callback(self._done)
            self.sent += 1

    def settle(self) -> None:
        """Wait until every call sent has an outcome."""
        for _ in range(self.in_flight):
            assert self.slots.acquire(timeout=BOUND), "a call never ended"
        self.channel.close()


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it exited meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize(
    "workers",
    [
        pytest.param("1", id="one process"),
        # The supervisor owns the log's one writer: killing it kills the writer every
        # worker commits through. The workers then answer no more, and exit.
        pytest.param("2", id="supervisor and its log writer killed"),
    ],
)
def test_sigkill_under_load_loses_no_answered_decision(tmp_path: Path, workers: str) -> None:
    root = tmp_path / "serve"
    server = start_docket(root, "--admission", "off", "--workers", workers)
    load = Load(server, in_flight=64, answered=400, limit=5_000)
    orphans = children(server.process.pid) if workers != "1" else []
    try:
        load.run()
        os.kill(server.process.pid, signal.SIGKILL)  # calls still in flight
        server.process.wait(BOUND)
        wait_until("the workers exit", lambda: not any(alive(pid) for pid in orphans))
    finally:
        server.stop()
        for pid in orphans:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    load.settle()
    assert len(load.answered) + len(load.failed) == load.sent
    assert set(load.failed) <= {grpc.StatusCode.UNAVAILABLE}

    shutil.rmtree(root / "policies")
    again = start_docket(root, "--admission", "off")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{again.grpc_port}") as channel:
            reply = pb_grpc.DecisionsStub(channel).Authorize(REQUEST, timeout=10)
        assert reply.decision == pb.DECISION_ALLOW
    finally:
        assert again.stop() == 0
    logged = [entry["detail"]["decision_id"] for entry in again.audit_entries("decision")]
    assert len(logged) == len(set(logged))
    missing = set(load.answered) - set(logged)
    assert not missing, f"{len(missing)} answered decisions are not in the log"
    assert reply.decision_id in logged
    verified = subprocess.run(
        [DOCKET, "audit", "verify", "--data-dir", str(again.data_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["size"] >= len(load.answered) + 1
