"""``docket serve --workers 2`` deals new gRPC connections to its workers in turn
(``connection_balancing``, engine._runtime.balance), against a real server: sixteen
connections open together, one Authorize on each, and each worker decides eight. By the
kernel's hash (``--connection-balancing hash``, or where no BPF program may be loaded)
sixteen connections land 8/8 less than one time in five."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest
from e2e.docket_process import children_of, decisions_per_pid, start_docket

from engine._runtime.balance import round_robin_program
from sdk.v1 import decisions_pb2 as pb
from sdk.v1 import decisions_pb2_grpc as pb_grpc
from tests.authorize import alice_reads

WORKERS = 2
CONNECTIONS = 16


def _why_not() -> str | None:
    try:
        os.close(round_robin_program(WORKERS))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


WHY_NOT = _why_not()


def _one_call_per_connection(port: int) -> list[str]:
    """CONNECTIONS channels, each its own connection (no shared subchannel), all open
    before the first call; one Authorize on each. The decisions."""
    channels = [
        grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CONNECTIONS)
    ]
    try:
        for channel in channels:
            grpc.channel_ready_future(channel).result(timeout=10)
        answers = [
            pb_grpc.DecisionsStub(channel).Authorize(alice_reads("ledger"), timeout=10)
            for channel in channels
        ]
    finally:
        for channel in channels:
            channel.close()
    return [pb.Decision.Name(answer.decision) for answer in answers]


@pytest.mark.skipif(WHY_NOT is not None, reason=f"no BPF program may be loaded here: {WHY_NOT}")
def test_two_workers_each_decide_the_calls_of_half_the_connections(tmp_path: Path) -> None:
    temp = tmp_path / "docket-tmp"  # where docket serve makes its metrics directory
    temp.mkdir()
    docket = start_docket(
        tmp_path / "site",
        "--workers",
        str(WORKERS),
        env={"TMPDIR": str(temp)},
    )
    try:
        (metrics_dir,) = temp.glob("docket-metrics-*")
        workers = children_of(docket.process.pid)
        decisions = _one_call_per_connection(docket.grpc_port)
        per_pid = decisions_per_pid(metrics_dir, "authorize")
    finally:
        code = docket.stop()
    log = docket.log.read_text()
    assert code == 0, log
    assert len(decisions) == CONNECTIONS
    assert log.count("serve.connections") == WORKERS, log
    assert "dealt=round-robin" in log, log
    assert set(per_pid) <= workers, per_pid
    assert sorted(per_pid.values()) == [CONNECTIONS / WORKERS] * WORKERS, per_pid


def test_by_the_kernels_hash_when_asked(tmp_path: Path) -> None:
    """``--connection-balancing hash``: no program, every connection still served."""
    docket = start_docket(
        tmp_path / "site", "--workers", str(WORKERS), "--connection-balancing", "hash"
    )
    try:
        decisions = _one_call_per_connection(docket.grpc_port)
    finally:
        code = docket.stop()
    log = docket.log.read_text()
    assert code == 0, log
    assert len(decisions) == CONNECTIONS
    assert "serve.connections" not in log, log
