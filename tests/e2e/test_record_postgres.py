"""Recorded requests in a PostgreSQL log (issue 18): ``docket serve --record-requests``
on a real PostgreSQL (tests/e2e/postgres.py) records each decision's request beside its
entry, sealed; ``docket policy diff`` replays them to the known flips; ``docket audit
redact`` erases an entry's recorded request with its payload, and it is then neither
replayed nor reported; recorded requests past ``request_retention_days`` are dropped by
the server while every entry stays and the log verifies."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from e2e.docket_process import DOCKET, ROOT, Docket, authorize, start_docket
from recorded_traffic import ASKED, REMOVED, without_removed

pytestmark = pytest.mark.e2e

WAIT = 30.0


@dataclass(frozen=True)
class Recorded:
    root: Path
    url: str
    decisions: list[int]
    """Every decision's entry index, in order."""
    flips: list[int]
    """The decisions that only the removed permit allowed."""

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def serve(self, root: Path) -> Docket:
        """``docket serve`` recording, on this data directory and database (from
        ``root``: its copy of the bundle and its log)."""
        return start_docket(
            root,
            *("--admission", "off", "--record-requests", "--data-dir", str(self.data_dir)),
            env={"DOCKET_DB_URL": self.url},
        )

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        conninfo = sa.make_url(self.url).set(drivername="postgresql")
        with psycopg.connect(conninfo.render_as_string(hide_password=False)) as db:
            cursor = db.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def recorded(self) -> list[int]:
        return [int(idx) for (idx,) in self.sql("SELECT idx FROM audit_request ORDER BY idx")]

    def docket(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKET_")}
        return subprocess.run(
            [DOCKET, *args, "--data-dir", str(self.data_dir), "--db", self.url],
            capture_output=True, text=True, timeout=120, env=env, check=False,
        )  # fmt: skip

    def diff(self) -> dict[str, Any]:
        candidate = self.root / "candidate"
        if not candidate.exists():
            without_removed(ROOT / "policies", candidate)
        done = self.docket(
            "policy", "diff", str(candidate), "--live", str(ROOT / "policies"),
            "--format", "json", "--examples", "100",
        )  # fmt: skip
        assert done.returncode in (0, 1), done.stderr
        report: dict[str, Any] = json.loads(done.stdout)
        return report

    def verifies(self) -> None:
        done = self.docket("audit", "verify")
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def recorded(tmp_path: Path, postgres_db: str) -> Recorded:
    """ASKED decided by a real server on PostgreSQL, requests recorded."""
    made = Recorded(tmp_path / "serve", postgres_db, [], [])
    server = made.serve(made.root)
    try:
        for user, data in ASKED:
            answer = authorize(server, user, data)
            made.decisions.append(answer.receipt.index)
            if tuple(answer.reasons) == (REMOVED,):
                made.flips.append(answer.receipt.index)
    finally:
        assert server.stop() == 0
    assert made.flips  # the traffic has decisions only this permit allowed
    return made


def flipped(report: dict[str, Any]) -> list[int]:
    assert report["problems"] == []
    groups = {g["key"]: g for g in report["by_policy"]}
    if not groups:
        return []
    assert list(groups) == [REMOVED]
    return sorted(e["index"] for e in groups[REMOVED]["examples"])


def test_requests_are_recorded_sealed_in_postgres_and_replay_to_the_known_flips(
    recorded: Recorded,
) -> None:
    assert recorded.recorded() == recorded.decisions
    sealed = recorded.sql("SELECT sealed FROM audit_request")
    assert all(b"heidi" not in bytes(row[0]) for row in sealed)  # nothing readable
    report = recorded.diff()
    assert report["replayed"] == {"decisions": len(ASKED), "placements": 0}
    assert flipped(report) == recorded.flips
    recorded.verifies()


def test_a_redacted_entrys_request_is_erased_and_no_longer_replayed(
    recorded: Recorded, tmp_path: Path
) -> None:
    key = tmp_path / "redaction.key"
    made = subprocess.run([DOCKET, "audit", "redaction-key", str(key), "--new"], check=False)
    assert made.returncode == 0
    victim = recorded.flips[0]
    done = recorded.docket(
        "audit", "redact", str(victim), "--reason", "erasure request", "--redaction-key", str(key)
    )
    assert done.returncode == 0, done.stderr
    assert recorded.recorded() == [i for i in recorded.decisions if i != victim]
    (payload,) = recorded.sql(f"SELECT payload FROM audit_entry WHERE idx = {victim}")
    assert payload == (None,)
    report = recorded.diff()
    assert report["replayed"]["decisions"] == len(ASKED) - 1
    assert flipped(report) == recorded.flips[1:]
    recorded.verifies()


def test_requests_past_their_retention_are_dropped_by_the_server_and_the_log_stays(
    recorded: Recorded,
) -> None:
    # Age the first half of the recorded requests (their rows' own time, which retention
    # reads; the entries, which hashes cover, are left as they are).
    aged = recorded.decisions[: len(ASKED) // 2]
    recorded.sql(
        "UPDATE audit_request SET time = '2020-01-01T00:00:00.000000Z' "
        f"WHERE idx IN ({', '.join(map(str, aged))})"
    )
    # request_retention_days: the default 30
    server = recorded.serve(recorded.root.with_name("again"))
    try:
        deadline = time.monotonic() + WAIT
        while recorded.recorded() != recorded.decisions[len(aged) :]:
            assert time.monotonic() < deadline, f"still recorded: {recorded.recorded()}"
            time.sleep(0.2)
    finally:
        assert server.stop() == 0
    assert "audit.requests_dropped" in server.log.read_text()
    (entries,) = recorded.sql("SELECT count(*) FROM audit_entry WHERE kind = 'decision'")
    assert entries == (len(ASKED),)
    report = recorded.diff()
    assert report["replayed"]["decisions"] == len(ASKED) - len(aged)
    assert flipped(report) == [i for i in recorded.flips if i not in aged]
    recorded.verifies()
