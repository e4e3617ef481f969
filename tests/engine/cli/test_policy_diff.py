"""``docket policy diff``: traffic recorded by a real ``docket serve`` (record_requests,
through the SDK) replayed against a candidate bundle; a known policy change flips
exactly the decisions it determined, and nothing else."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest
from recorded_traffic import ASKED, REMOVED, without_removed

from sdk import DecisionClient
from tests.engine.runtime.test_serve import DOCKET, ROOT, Served


def docket(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOCKET, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, tuple[str, ...]]]:
    """A data dir whose log holds ASKED (decided by a real server, requests recorded)
    and one placement; and each decision's recorded reasons by entry index (allows only)."""
    tmp = tmp_path_factory.mktemp("recorded")
    bundle = tmp / "policies"
    shutil.copytree(ROOT / "policies", bundle)
    args = ["--bundle", str(bundle), "--grpc", "127.0.0.1:0", "--metrics", "127.0.0.1:0"]
    server = Served([*args, "--data-dir", str(tmp / "data"), "--record-requests"], tmp)
    allowed: dict[int, tuple[str, ...]] = {}
    try:
        with DecisionClient(server.grpc, timeout=10) as client:
            for user, data in ASKED:
                result = client.authorize(
                    {"type": "User", "id": user}, "read", {"type": "Data", "id": data}
                )
                assert result.receipt is not None
                if result.decision == "allow":
                    allowed[result.receipt.index] = result.reasons
            client.place("model-trainer", classification="internal", residency=["eu"])
    finally:
        assert server.stop() == 0
    return tmp, allowed


def diff(
    tmp: Path, candidate: Path, *more: str, env_bundle: Path | None = None
) -> subprocess.CompletedProcess[str]:
    args = ["policy", "diff", str(candidate), "--data-dir", str(tmp / "data"), *more]
    if env_bundle is None:
        return docket(*args)
    env = {**os.environ, "DOCKET_BUNDLE": str(env_bundle)}
    return subprocess.run([DOCKET, *args], capture_output=True, text=True, timeout=120, env=env)


def test_a_removed_permit_flips_exactly_the_decisions_it_alone_determined(
    recorded: tuple[Path, dict[int, tuple[str, ...]]],
) -> None:
    tmp, allowed = recorded
    candidate = without_removed(tmp / "policies", tmp / "candidate")
    expected = sorted(index for index, reasons in allowed.items() if reasons == (REMOVED,))
    assert expected  # the traffic has decisions only this permit allowed…
    assert any(reasons != (REMOVED,) for reasons in allowed.values())  # …and others

    live = ("--live", str(tmp / "policies"))
    done = diff(tmp, candidate, *live, "--format", "json", "--examples", "100")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["flips"] == {"allow→deny": len(expected), "deny→allow": 0, "total": len(expected)}
    assert report["replayed"] == {"decisions": len(ASKED), "placements": 1}
    (group,) = [g for g in report["by_policy"] if g["key"] == REMOVED]
    assert sorted(e["index"] for e in group["examples"]) == expected
    assert {g["key"] for g in report["by_types"]} == {"Docket::User → Docket::Data"}
    assert all(e["new"]["decision"] == "deny" for e in group["examples"])
    assert report["problems"] == []
    # The bundles compared statically: the one policy removed, nothing else changed.
    static = report["static"]
    assert [policy["id"] for policy in static["policies"]["removed"]] == [REMOVED]
    assert static["policies"]["added"] == static["policies"]["changed"] == []

    html = diff(tmp, candidate, *live, "--format", "html", "--out", str(tmp / "diff.html"))
    assert html.returncode == 1
    page = (tmp / "diff.html").read_text()
    assert REMOVED in page
    assert "docket-bundle-comparison" in page  # the static comparison's section
    text_form = diff(tmp, candidate, *live)
    assert f"flips: {len(expected)} ({len(expected)} allow→deny, 0 deny→allow)" in text_form.stdout
    assert "static comparison with the live bundle:" in text_form.stdout


def test_without_a_live_bundle_the_static_comparison_is_not_made_and_says_so(
    recorded: tuple[Path, dict[int, tuple[str, ...]]],
) -> None:
    tmp, _ = recorded
    missing = tmp / "no-such-bundle"
    done = diff(tmp, tmp / "policies", "--format", "json", env_bundle=missing)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["static"] is None
    assert f"no live bundle at {missing}: no static comparison" in done.stderr


def test_the_same_bundle_changes_nothing_and_exits_0(
    recorded: tuple[Path, dict[int, tuple[str, ...]]],
) -> None:
    tmp, _ = recorded
    done = diff(tmp, tmp / "policies")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "flips: 0" in done.stdout
    assert f"replayed {len(ASKED) + 1}: 0 flips" in done.stderr


def test_the_log_still_verifies_with_requests_recorded(
    recorded: tuple[Path, dict[int, tuple[str, ...]]],
) -> None:
    tmp, _ = recorded
    with closing(sqlite3.connect(tmp / "data" / "docket.db")) as db:
        (rows,) = db.execute("SELECT count(*) FROM audit_request").fetchone()
    assert rows == len(ASKED) + 1
    done = docket("audit", "verify", "--data-dir", str(tmp / "data"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_request_moved_to_another_entry_is_reported_not_replayed(
    recorded: tuple[Path, dict[int, tuple[str, ...]]], tmp_path: Path
) -> None:
    tmp, allowed = recorded
    copy = tmp_path / "copy"
    shutil.copytree(tmp, copy, ignore=shutil.ignore_patterns("*.sock"))
    first, second = sorted(allowed)[:2]
    with closing(sqlite3.connect(copy / "data" / "docket.db")) as db:
        db.execute("DELETE FROM audit_request WHERE idx = ?", (second,))
        db.execute("UPDATE audit_request SET idx = ? WHERE idx = ?", (second, first))
        db.commit()
    done = diff(copy, copy / "policies", "--format", "json")
    assert done.returncode == 1
    (problem,) = json.loads(done.stdout)["problems"]
    assert problem["index"] == second
    assert re.search("row moved from another entry", problem["problem"])


def test_a_candidate_that_does_not_verify_is_an_error(
    recorded: tuple[Path, dict[int, tuple[str, ...]]],
) -> None:
    tmp, _ = recorded
    key = tmp / "k.pub"
    assert docket("policy", "keygen", "--out", str(tmp / "k")).returncode == 0
    done = diff(tmp, tmp / "policies", "--bundle-key", str(key))
    assert done.returncode == 2
    assert done.stderr.startswith("docket: bundle ")
