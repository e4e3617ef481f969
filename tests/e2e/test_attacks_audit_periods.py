"""Attacks on audit periods (issue 14, findings 1 and 13), each against a log written by
a real ``docket serve`` (a subprocess) and read with the real ``docket audit`` CLI.

The attack: ``audit report`` and ``audit export --since/--until`` chose their entries
by the ``time`` column, which no hash covers. Moving two residency violations' ``time``
out of the period dropped them from the report (all green) and from the export, while
``audit verify`` still said intact; the ``kind`` column was not compared with the
payload either. An empty or reversed period reported "intact" with nothing checked.
Now a period is mapped to indices by the time inside each entry's hashed payload, every
stored column used for selection is compared with the payload (a mismatch exits 1
naming the entry and the column), and an empty period (exit 1) or a reversed one (exit
2) is said so.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from e2e.docket_process import DOCKET, start_docket
from e2e.test_attacks_placement import grpc_place, grpc_read, old_bundle

from sdk.v1 import decisions_pb2 as pb

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class ServedLog:
    """A log written by ``docket serve`` holding two residency violations."""

    data_dir: Path
    violations: tuple[int, ...]
    """Indices of the two violating entries."""
    since: str
    until: str


def _index_of(db: Path, decision_id: str) -> int:
    with sqlite3.connect(db) as conn:
        for idx, payload in conn.execute("SELECT idx, payload FROM audit_entry ORDER BY idx"):
            if (
                payload is not None
                and json.loads(payload).get("detail", {}).get("decision_id") == decision_id
            ):
                return int(idx)
    raise AssertionError(f"no entry for decision {decision_id}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> ServedLog:
    root = tmp_path_factory.mktemp("periods")
    since = datetime.now(UTC) - timedelta(minutes=5)
    docket = start_docket(root / "serve", bundle=old_bundle(root))
    try:
        placed = grpc_place(
            docket, workload_id="fin-batch", classification="confidential", residency=["eu"]
        )
        read = grpc_read(docket, "carol", "team-wiki-eu", "us")
        grpc_place(docket, workload_id="ehr", classification="restricted", residency=["eu"])
    finally:
        assert docket.stop() == 0, docket.log.read_text()
    assert read.decision == pb.DECISION_ALLOW
    db = docket.data_dir / "docket.db"
    violations = (_index_of(db, placed.decision_id), _index_of(db, read.decision_id))
    until = datetime.now(UTC) + timedelta(minutes=5)
    return ServedLog(docket.data_dir, violations, since.isoformat(), until.isoformat())


def audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOCKET, "audit", *args], capture_output=True, text=True, timeout=120)


def report_of_the_period(log: ServedLog) -> subprocess.CompletedProcess[str]:
    """``docket audit report --format json`` over the period the served log was made in."""
    return audit(
        "report",
        "--data-dir",
        str(log.data_dir),
        "--format",
        "json",
        "--since",
        log.since,
        "--until",
        log.until,
    )


@pytest.fixture
def copy(served: ServedLog, tmp_path: Path) -> ServedLog:
    """A copy of the served data directory this test may tamper with."""
    target = tmp_path / "data"
    shutil.copytree(served.data_dir, target)
    return ServedLog(target, served.violations, served.since, served.until)


def _set_column(log: ServedLog, column: str, value: str, indices: tuple[int, ...]) -> None:
    with sqlite3.connect(log.data_dir / "docket.db") as conn:
        for index in indices:
            conn.execute(f"UPDATE audit_entry SET {column} = ? WHERE idx = ?", (value, index))


def test_report_of_the_untampered_period_finds_both_violations(copy: ServedLog) -> None:
    done = report_of_the_period(copy)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["residency"]["violations"] == 2
    assert {f["index"] for f in report["residency"]["findings"]} == set(copy.violations)
    period = report["period"]
    assert period["first_index"] == 0
    assert period["last_index"] >= max(copy.violations)


def test_attack_time_column_moved_out_of_report_period(copy: ServedLog) -> None:
    _set_column(copy, "time", "1999-01-01T00:00:00.000000Z", copy.violations)
    done = report_of_the_period(copy)
    assert done.returncode == 1, (done.stdout, done.stderr)
    index = min(copy.violations)
    assert f"entry {index}: modified: its time column says" in done.stderr, done.stderr


def test_attack_time_column_moved_out_of_export_period(copy: ServedLog, tmp_path: Path) -> None:
    _set_column(copy, "time", "2999-01-01T00:00:00.000000Z", copy.violations)
    out = tmp_path / "export.jsonl"
    done = audit(
        "export",
        "--data-dir",
        str(copy.data_dir),
        "-o",
        str(out),
        "--since",
        copy.since,
        "--until",
        copy.until,
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    index = min(copy.violations)
    assert f"entry {index}: modified: its time column says" in done.stderr, done.stderr


def test_attack_kind_column_disagrees_with_payload(copy: ServedLog) -> None:
    _set_column(copy, "kind", "audit", copy.violations[1:])
    done = audit("report", "--data-dir", str(copy.data_dir), "--format", "json")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"entry {copy.violations[1]}" in done.stderr, done.stderr
    assert "kind column" in done.stderr, done.stderr


@pytest.mark.parametrize("command", ["report", "export"])
def test_attack_reversed_period_reports_intact(
    copy: ServedLog, command: str, tmp_path: Path
) -> None:
    extra = ["-o", str(tmp_path / "out.jsonl")] if command == "export" else []
    done = audit(
        command,
        "--data-dir",
        str(copy.data_dir),
        *extra,
        "--since",
        copy.until,
        "--until",
        copy.since,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "must be before --until" in done.stderr, done.stderr
    assert "intact" not in done.stdout


@pytest.mark.parametrize("command", ["report", "export"])
def test_attack_empty_period_reports_intact(copy: ServedLog, command: str, tmp_path: Path) -> None:
    extra = ["-o", str(tmp_path / "out.jsonl")] if command == "export" else []
    done = audit(
        command,
        "--data-dir",
        str(copy.data_dir),
        *extra,
        "--since",
        "2001-01-01",
        "--until",
        "2001-01-02",
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"nothing to {command}" in done.stderr, done.stderr
    assert "no entry" in done.stderr, done.stderr


# -- verify --key says what it proved (finding 3) --------------------------------------


def _verifier_key(log: ServedLog) -> str:
    done = audit("key", "--data-dir", str(log.data_dir))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _signed(log: ServedLog) -> ServedLog:
    """The log with a checkpoint covering every entry (as ``docket audit checkpoint``)."""
    done = audit("checkpoint", "--data-dir", str(log.data_dir))
    assert done.returncode == 0, done.stderr
    return log


def test_verify_with_key_says_what_it_proved(copy: ServedLog) -> None:
    _signed(copy)
    key = _verifier_key(copy)
    done = audit("verify", "--data-dir", str(copy.data_dir), "--key", key)
    assert done.returncode == 0, done.stderr
    size = len(
        sqlite3.connect(copy.data_dir / "docket.db")
        .execute("SELECT idx FROM audit_entry")
        .fetchall()
    )
    name = key.split("+")[0]
    assert (
        f"intact up to index {size - 1}, covered by the checkpoint of size {size} signed by {name}"
        in done.stdout
    ), done.stdout
    done = audit("verify", "--data-dir", str(copy.data_dir), "--key", key, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["covered_up_to"] == size - 1


def test_attack_verify_key_with_checkpoints_deleted(copy: ServedLog) -> None:
    _signed(copy)
    key = _verifier_key(copy)
    with sqlite3.connect(copy.data_dir / "docket.db") as conn:
        conn.execute("DELETE FROM audit_checkpoint")
    done = audit("verify", "--data-dir", str(copy.data_dir), "--key", key)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "intact" not in done.stdout
    assert f"no checkpoint signed by {key.split('+')[0]} covers it" in done.stderr, done.stderr
    done = audit("verify", "--data-dir", str(copy.data_dir), "--key", key, "--json")
    assert done.returncode == 1, (done.stdout, done.stderr)
    result = json.loads(done.stdout)
    assert result["intact"] is False
    assert "no checkpoint signed by" in result["problem"]


def test_attack_verify_key_on_rewritten_history(copy: ServedLog) -> None:
    # An attacker with write access rebuilds the log without the two violations: every
    # hash recomputed, no checkpoint (they cannot sign one with the log's key).
    from audit._store import Pending, Store

    _signed(copy)
    key = _verifier_key(copy)
    db = copy.data_dir / "docket.db"
    with sqlite3.connect(db) as conn:
        meta = dict(conn.execute("SELECT key, value FROM audit_meta").fetchall())
        rows = conn.execute("SELECT idx, kind, time, payload FROM audit_entry ORDER BY idx")
        kept = [Pending(k, t, p) for i, k, t, p in rows if i not in copy.violations]
    forged_path = copy.data_dir / "forged.db"
    forged = Store(f"sqlite:///{forged_path}")
    try:
        for name, value in meta.items():
            forged.set_meta(name, value)
        forged.append(kept)
    finally:
        forged.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    forged_path.rename(db)
    done = audit("verify", "--data-dir", str(copy.data_dir), "--key", key)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "no checkpoint signed by" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("column", "value"), [("time", "1999-01-01T00:00:00.000000Z"), ("kind", "audit")]
)
def test_attack_unhashed_column_edited_while_verify_says_intact(
    copy: ServedLog, column: str, value: str
) -> None:
    _set_column(copy, column, value, copy.violations)
    key = _verifier_key(_signed(copy))
    done = audit("verify", "--data-dir", str(copy.data_dir), "--key", key)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"entry {min(copy.violations)}: modified: its {column} column says" in done.stderr
