"""``docket serve --record-requests`` and a request within the serving limits whose
recorded form is over the recording cap (issue 18): the serving limits count a
string's characters, JSON escapes a control character in six bytes, so a 200,000
character context string (under the 256 Ki limit) is 1.2 MB recorded. The decision is
answered and logged as without recording; its recorded row says the request was left
out and why, and ``docket policy diff`` lists it as not replayed, never as unchanged."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import grpc
import pytest
from e2e.docket_process import DOCKET, ROOT, start_docket
from google.protobuf import struct_pb2

from audit._requests import MAX_RECORDED_BYTES
from sdk.v1 import decisions_pb2 as pb
from sdk.v1 import decisions_pb2_grpc as pb_grpc

pytestmark = pytest.mark.e2e

LONG = "\x01" * 200_000


def heidi_reads_website(context: dict[str, str]) -> pb.AuthorizeRequest:
    values = struct_pb2.Struct()
    values.update(context)
    return pb.AuthorizeRequest(
        principal=pb.EntityRef(type="User", id="heidi"),
        action=pb.EntityRef(type="Action", id="read"),
        resource=pb.EntityRef(type="Data", id="public-website"),
        context=values,
    )


def test_a_request_too_large_to_record_is_answered_and_reported_not_replayed(
    tmp_path: Path,
) -> None:
    server = start_docket(tmp_path / "serve", "--admission", "off", "--record-requests")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = pb_grpc.DecisionsStub(channel)
            large = stub.Authorize(heidi_reads_website({"jurisdiction": LONG}), timeout=10)
            small = stub.Authorize(heidi_reads_website({"jurisdiction": "eu"}), timeout=10)
    finally:
        assert server.stop() == 0
    assert (large.decision, small.decision) == (pb.DECISION_ALLOW, pb.DECISION_ALLOW)
    assert "Traceback" not in server.log.read_text()
    done = subprocess.run(
        [DOCKET, "policy", "diff", str(ROOT / "policies"), "--data-dir", str(server.data_dir),
         "--live", str(ROOT / "policies"), "--format", "json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # a request not replayed
    report = json.loads(done.stdout)
    assert report["replayed"] == {"decisions": 1, "placements": 0}
    (problem,) = report["problems"]
    assert problem["index"] == large.receipt.index
    assert problem["problem"].startswith("the request was not recorded: ")
    assert problem["problem"].endswith(f"bytes of JSON, over the limit of {MAX_RECORDED_BYTES}")
