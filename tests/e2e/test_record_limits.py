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

import pytest
from e2e.docket_process import DOCKET, ROOT, start_docket

from audit._requests import MAX_RECORDED_BYTES
from sdk import DecisionClient

pytestmark = pytest.mark.e2e

LONG = "\x01" * 200_000


def test_a_request_too_large_to_record_is_answered_and_reported_not_replayed(
    tmp_path: Path,
) -> None:
    server = start_docket(tmp_path / "serve", "--admission", "off", "--record-requests")
    try:
        with DecisionClient(f"127.0.0.1:{server.grpc_port}", timeout=10) as client:
            large, small = (
                client.authorize(
                    {"type": "User", "id": "heidi"},
                    "read",
                    {"type": "Data", "id": "public-website"},
                    context={"jurisdiction": jurisdiction},
                )
                for jurisdiction in (LONG, "eu")
            )
    finally:
        assert server.stop() == 0
    assert (large.decision, small.decision) == ("allow", "allow")
    assert large.receipt is not None
    said = server.log.read_text()
    assert "Traceback" not in said
    assert "audit.request_not_recorded" in said
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
