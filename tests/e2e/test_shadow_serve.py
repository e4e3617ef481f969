"""``docket serve --shadow-bundle`` (issue 18): under load through the SDK, every answer
is the live bundle's and none fails, while the candidate's known flips and errors are
counted exactly, annotated in the log (which still verifies) and reported by
``docket policy shadow-report``; a candidate that does not verify stops the start."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e.docket_process import DOCKET, ROOT, Docket, start_docket
from prometheus_client.parser import text_string_to_metric_families
from shadow_bundles import FORBID_HEIDI, OVERFLOW, PERMIT_DIRECTORY, candidate

from engine._core.bundle import PolicyBundle
from sdk import DecisionClient

pytestmark = pytest.mark.e2e

HOUR = {"weekday": "mon"}
# (principal, resource, context): the live answer, and how the candidate disagrees.
CASES: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("heidi", "public-website", {"time": {**HOUR, "hour": 0}}, "allow", "flip_allow_to_deny"),
    ("heidi", "employee-directory", {}, "deny", "flip_deny_to_allow"),
    ("bob", "public-website", {"time": {**HOUR, "hour": 9}}, "allow", "error"),
    ("bob", "public-website", {}, "allow", "agree"),
]
CALLS = 2000
IN_FLIGHT = 32


def shadow_counts(server: Docket) -> dict[str, float]:
    text = httpx.get(server.metrics_url, timeout=5).text
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "docket_shadow_decisions_total"
    }


def report(server: Docket) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [DOCKET, "policy", "shadow-report", "--data-dir", str(server.data_dir), "--format", "json"],
        capture_output=True,
        text=True,
    )
    return done.returncode, json.loads(done.stdout)


def test_under_load_every_answer_is_the_live_bundles_and_each_flip_is_counted(
    tmp_path: Path,
) -> None:
    path = candidate(tmp_path, FORBID_HEIDI, PERMIT_DIRECTORY, OVERFLOW)
    server = start_docket(tmp_path / "serve", "--admission", "off", "--shadow-bundle", str(path))
    live = PolicyBundle.load(ROOT / "policies").version
    try:
        assert "docket: shadow bundle sha256:" in server.log.read_text()
        with DecisionClient(f"127.0.0.1:{server.grpc_port}", timeout=30) as client:

            def call(number: int) -> tuple[int, str, str]:
                user, resource, context, _, _ = CASES[number % len(CASES)]
                answer = client.authorize(
                    {"type": "User", "id": user},
                    "read",
                    {"type": "Data", "id": resource},
                    context=context,
                )
                return number, answer.decision, answer.bundle_version

            with ThreadPoolExecutor(IN_FLIGHT) as pool:
                answers = list(pool.map(call, range(CALLS)))  # any failure raises here
        assert len(answers) == CALLS
        for number, decision, version in answers:
            assert decision == CASES[number % len(CASES)][3]
            assert version == live
        expected = Counter(CASES[n % len(CASES)][4] for n in range(CALLS))
        assert shadow_counts(server) == {k: float(expected[k]) for k in expected}
        entries = server.audit_entries("decision")
        assert len(entries) == CALLS
        notes = [e["detail"]["shadow"] for e in entries if "shadow" in e["detail"]]
        assert Counter(n["outcome"] for n in notes) == {
            k: v for k, v in expected.items() if k != "agree"
        }
        assert {n["bundle"] for n in notes} == {PolicyBundle.load(path).version}
        assert all(e["bundle_version"] == live for e in entries)
        code, found = report(server)
        assert code == 1
        assert found["decisions"] == CALLS
        assert found["by_kind"] == {k: v for k, v in expected.items() if k != "agree"}
        assert {
            "policy": "candidate-forbids-heidi-website",
            "kind": "flip_allow_to_deny",
            "count": expected["flip_allow_to_deny"],
        } in found["by_policy"]
    finally:
        assert server.stop() == 0
    verified = subprocess.run(
        [DOCKET, "audit", "verify", "--data-dir", str(server.data_dir)], capture_output=True
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_candidate_that_agrees_reports_clean(tmp_path: Path) -> None:
    path = candidate(tmp_path)
    server = start_docket(tmp_path / "serve", "--admission", "off", "--shadow-bundle", str(path))
    try:
        with DecisionClient(f"127.0.0.1:{server.grpc_port}", timeout=30) as client:
            for user, resource, context, _, _ in CASES:
                client.authorize(
                    {"type": "User", "id": user},
                    "read",
                    {"type": "Data", "id": resource},
                    context=context,
                )
        assert shadow_counts(server) == {"agree": float(len(CASES))}
        code, found = report(server)
        assert (code, found["decisions"], found["clean"]) == (0, len(CASES), True)
    finally:
        server.stop()


def test_a_candidate_that_does_not_verify_stops_the_start_in_one_line(tmp_path: Path) -> None:
    path = candidate(tmp_path, "permit (")
    done = subprocess.run(
        [
            DOCKET,
            "serve",
            "--bundle",
            str(ROOT / "policies"),
            "--shadow-bundle",
            str(path),
            *f"--data-dir {tmp_path / 'data'} --grpc 127.0.0.1:0 --metrics 127.0.0.1:0".split(),
            *("--admission", "off"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"docket: shadow bundle {path} refused: access.cedar:")
