"""``memo_entries`` on a real ``docket serve``: by default a repeated request is answered
from the decision memo; with ``memo_entries = 0`` every request is evaluated (SECURITY.md:
an operator who does not want answer times to tell a repeated request turns it off)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from e2e.docket_process import Docket, authorize, start_docket
from prometheus_client.parser import text_string_to_metric_families

from sdk.v1 import decisions_pb2 as pb


def lookups(server: Docket) -> dict[str, float]:
    """The decision memo's lookups by result, from /metrics (pushed about once a second)."""
    text = httpx.get(server.metrics_url, timeout=5).text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "docket_decision_memo_lookups_total":
                found[sample.labels["result"]] = sample.value
    return found


def asked_three_times(root: Path, **env: str) -> Docket:
    server = start_docket(root, "--admission", "off", env=env)
    answers = [authorize(server, "alice", "ledger") for _ in range(3)]
    assert {answer.decision for answer in answers} == {pb.DECISION_DENY}  # restricted data
    assert len({tuple(answer.reasons) for answer in answers}) == 1
    return server


def test_a_repeated_request_is_answered_from_the_memo_by_default(tmp_path: Path) -> None:
    server = asked_three_times(tmp_path)
    try:
        deadline = time.monotonic() + 10
        while lookups(server).get("hit", 0) < 2:
            assert time.monotonic() < deadline, lookups(server)
            time.sleep(0.2)
    finally:
        assert server.stop() == 0


def test_memo_entries_0_evaluates_every_request(tmp_path: Path) -> None:
    server = asked_three_times(tmp_path, DOCKET_MEMO_ENTRIES="0")
    try:
        time.sleep(1.5)  # the memo's counters reach the metrics about once a second
        assert lookups(server).get("hit", 0) == 0
        assert len(server.audit_entries("decision")) == 3
    finally:
        assert server.stop() == 0
