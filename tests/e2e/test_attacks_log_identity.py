"""Attacks on the audit log's identity (issue 14, finding 4), each against a real
``docket serve`` (a subprocess).

The attack: deleting or replacing ``docket.db`` while the server ran went unnoticed:
decisions kept being answered allow, with receipts, health stayed SERVING, and every
one of those entries was gone at restart (they went into a deleted file, or into one
that was no longer the log). A restart on an older copy of the database was not
detected either. Now the writer notices that its database was deleted, replaced,
truncated or rolled back, answers every later decision UNAVAILABLE and turns health
NOT_SERVING for good (until a restart); and the latest signed checkpoint is kept in
``<data-dir>/audit-checkpoint``, so that a start on a log shorter than (or inconsistent
with) it is refused until ``docket audit accept`` records that an operator meant it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import grpc
import pytest
import sqlalchemy
from e2e.docket_process import DOCKET, Docket, die_with_parent, start_docket
from e2e.docket_process import authorize as docket_authorize
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sdk.v1 import decisions_pb2 as pb

pytestmark = pytest.mark.e2e

SCHEMA = """
entity User;
entity Data;
action read appliesTo { principal: User, resource: Data };
"""
PERMIT_ALL = '@id("everyone-reads")\npermit (principal, action, resource);\n'
BOUND = 15.0
"""Seconds within which a lost database must show (health is polled every second)."""
STAYS = 3.0
"""Seconds the server is watched afterwards: probes must not clear the failure."""


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    path = tmp_path / "bundle"
    path.mkdir()
    (path / "schema.cedarschema").write_text(SCHEMA)
    (path / "policies.cedar").write_text(PERMIT_ALL)
    (path / "entities.json").write_text("[]")
    return path


def authorize(server: Docket) -> pb.AuthorizeResponse:
    return docket_authorize(server, "alice")


def refused_code(server: Docket) -> grpc.StatusCode | None:
    """The status an Authorize is refused with, or None when it was answered."""
    try:
        authorize(server)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return None


def health(server: Docket) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        status: int = (
            health_pb2_grpc.HealthStub(channel)
            .Check(health_pb2.HealthCheckRequest(), timeout=10)
            .status
        )
    return status


def database(server: Docket) -> Path:
    return server.data_dir / "docket.db"


def copy_of(db: Path, to: Path) -> Path:
    """A consistent copy of the live database (SQLite's backup API, as an operator's
    backup job would make it)."""
    with sqlite3.connect(db) as source, sqlite3.connect(to) as target:
        source.backup(target)
    return to


def assert_stops_deciding(server: Docket, what: str, *, where: str | None = None) -> None:
    """After the attack: the next decision is UNAVAILABLE (never allow), health turns
    NOT_SERVING within :data:`BOUND`, the log says what happened (``what``, a regular
    expression, about ``where``: the SQLite file by default), and it all stays so."""
    assert refused_code(server) == grpc.StatusCode.UNAVAILABLE, server.log.read_text()
    deadline = time.monotonic() + BOUND
    while health(server) != health_pb2.HealthCheckResponse.NOT_SERVING:
        assert time.monotonic() < deadline, server.log.read_text()
        time.sleep(0.1)
    time.sleep(STAYS)  # several health probes
    assert health(server) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert refused_code(server) == grpc.StatusCode.UNAVAILABLE
    text = server.log.read_text()
    place = re.escape(where or str(database(server)))
    assert re.search(f"audit database {place} was {what} while serving", text), text


def test_deleting_the_database_while_serving_stops_decisions(tmp_path: Path, bundle: Path) -> None:
    server = start_docket(tmp_path / "serve", bundle=bundle)  # with the webhook
    try:
        assert authorize(server).decision == pb.DECISION_ALLOW
        with server.admission_client() as http:
            assert http.get("/healthz").status_code == 200
            for suffix in ("", "-wal", "-shm"):
                Path(f"{database(server)}{suffix}").unlink(missing_ok=True)
            assert_stops_deciding(server, "deleted")
            assert http.get("/healthz").status_code == 503
    finally:
        server.stop()


def test_replacing_the_database_while_serving_stops_decisions(tmp_path: Path, bundle: Path) -> None:
    server = start_docket(tmp_path / "serve", "--admission", "off", bundle=bundle)
    try:
        assert authorize(server).decision == pb.DECISION_ALLOW
        # An identical copy: the same entries, only not the file the server writes.
        copy = copy_of(database(server), tmp_path / "copy.db")
        os.replace(copy, database(server))
        assert_stops_deciding(server, r"replaced \(inode changed\)")
    finally:
        server.stop()


def test_truncating_the_database_while_serving_stops_decisions(
    tmp_path: Path, bundle: Path
) -> None:
    server = start_docket(tmp_path / "serve", "--admission", "off", bundle=bundle)
    try:
        assert authorize(server).decision == pb.DECISION_ALLOW
        os.truncate(database(server), 0)
        assert_stops_deciding(server, r"truncated \(from \d+ to 0 bytes\)")
    finally:
        server.stop()


def test_rolling_back_the_database_while_serving_stops_decisions(
    tmp_path: Path, bundle: Path
) -> None:
    server = start_docket(tmp_path / "serve", "--admission", "off", bundle=bundle)
    try:
        assert authorize(server).decision == pb.DECISION_ALLOW
        early = copy_of(database(server), tmp_path / "early.db")
        for _ in range(3):
            assert authorize(server).decision == pb.DECISION_ALLOW
        # The older copy put back (by rename, as a restore from backup would).
        os.replace(early, database(server))
        assert refused_code(server) == grpc.StatusCode.UNAVAILABLE, server.log.read_text()
        assert_stops_deciding(server, r"replaced \(inode changed\)")
    finally:
        server.stop()


def test_rolling_back_a_postgresql_log_while_serving_stops_decisions(
    tmp_path: Path, bundle: Path, postgres_db: str
) -> None:
    # A restore of an older dump of a PostgreSQL log, done in place: the same database,
    # its entries, checkpoints and head row as they were after the first decision.
    server = start_docket(
        tmp_path / "serve", "--admission", "off", "--db", postgres_db, bundle=bundle
    )
    engine = sqlalchemy.create_engine(postgres_db)
    try:
        assert authorize(server).decision == pb.DECISION_ALLOW
        with engine.begin() as conn:
            saved = conn.execute(
                sqlalchemy.text("SELECT size, chain, frontier, root FROM audit_head")
            ).one()
        for _ in range(3):
            assert authorize(server).decision == pb.DECISION_ALLOW
        with engine.begin() as conn:
            for table in ("audit_entry WHERE idx", "audit_checkpoint WHERE size"):
                conn.execute(sqlalchemy.text(f"DELETE FROM {table} >= :size"), {"size": saved.size})
            conn.execute(
                sqlalchemy.text(
                    "UPDATE audit_head SET size = :size, chain = :chain, "
                    "frontier = :frontier, root = :root"
                ),
                saved._asdict(),
            )
        where = sqlalchemy.make_url(postgres_db).render_as_string(hide_password=True)
        assert_stops_deciding(server, rf"rolled back from \d+ to {saved.size} entries", where=where)
    finally:
        engine.dispose()
        server.stop()


# --- a restart on an older copy ---------------------------------------------------------


def restart(root: Path, bundle: Path) -> Docket:
    """``docket serve`` again on the same data directory."""
    shutil.rmtree(root / "policies")
    return start_docket(root, "--admission", "off", bundle=bundle)


def kept_size(data_dir: Path) -> int:
    kept = data_dir / "audit-checkpoint"
    return int(kept.read_text().split("\n")[1]) if kept.exists() else 0


def wait_for_kept(data_dir: Path, size: int) -> None:
    deadline = time.monotonic() + BOUND
    while kept_size(data_dir) < size:
        assert time.monotonic() < deadline, f"no checkpoint of size {size} kept"
        time.sleep(0.1)


def head_size(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (size,) = conn.execute("SELECT size FROM audit_head").fetchone()
    return int(size)


def test_restarting_on_an_older_copy_is_refused(tmp_path: Path, bundle: Path) -> None:
    root = tmp_path / "serve"
    server = start_docket(root, "--admission", "off", bundle=bundle)
    data = server.data_dir
    try:
        for _ in range(2):
            assert authorize(server).decision == pb.DECISION_ALLOW
    finally:
        assert server.stop() == 0
    early = tmp_path / "early.db"
    shutil.copy(data / "docket.db", early)
    early_size = head_size(early)

    server = restart(root, bundle)
    try:
        for _ in range(5):
            assert authorize(server).decision == pb.DECISION_ALLOW
        wait_for_kept(data, early_size + 5)
    finally:
        assert server.stop() == 0
    signed = kept_size(data)
    assert signed > early_size

    for suffix in ("-wal", "-shm"):
        Path(f"{data / 'docket.db'}{suffix}").unlink(missing_ok=True)
    shutil.copy(early, data / "docket.db")
    shutil.rmtree(root / "policies")
    shutil.copytree(bundle, root / "policies")
    refused = subprocess.run(
        die_with_parent(
            [
                DOCKET,
                "serve",
                "--bundle",
                str(root / "policies"),
                "--grpc",
                "127.0.0.1:0",
                "--metrics",
                "127.0.0.1:0",
                "--admission",
                "off",
                "--data-dir",
                str(data),
            ]
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert (
        f"the database holds {early_size} entries but the checkpoint kept in "
        f"{data / 'audit-checkpoint'} signed {signed}" in lines[0]
    ), lines
    assert "docket audit accept --reason" in lines[0]
    assert head_size(data / "docket.db") == early_size  # nothing was written to it

    accepted = subprocess.run(
        [
            DOCKET,
            "audit",
            "accept",
            "--reason",
            "restored the 09:00 backup",
            "--by",
            "ops",
            "--data-dir",
            str(data),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert accepted.returncode == 0, accepted.stderr
    assert len(accepted.stdout.strip().splitlines()) == 1, accepted.stdout
    assert list(data.glob("audit-checkpoint.rejected-*")), list(data.iterdir())
    again = subprocess.run(
        [DOCKET, "audit", "accept", "--reason", "twice", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 2, again.stdout + again.stderr
    assert len(again.stderr.strip().splitlines()) == 1, again.stderr

    server = restart(root, bundle)
    try:
        assert authorize(server).decision == pb.DECISION_ALLOW
    finally:
        assert server.stop() == 0
    (accept,) = [e for e in server.audit_entries("audit") if e["action"] == "accept-log"]
    assert accept["caller"] == "ops"
    detail = accept["detail"]
    assert detail["reason"] == "restored the 09:00 backup"
    assert detail["kept"]["size"] == signed
    assert detail["log"]["size"] == early_size
    verified = subprocess.run(
        [DOCKET, "audit", "verify", "--data-dir", str(data), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["size"] > early_size


def test_rotating_and_retiring_the_key_while_stopped_keeps_the_log_startable(
    tmp_path: Path, bundle: Path
) -> None:
    # Not an attack: the kept checkpoint must follow a key rotation done offline, or the
    # next start would refuse a log whose kept checkpoint only the retired key signed.
    root = tmp_path / "serve"
    server = start_docket(root, "--admission", "off", bundle=bundle)
    data = server.data_dir
    try:
        assert authorize(server).decision == pb.DECISION_ALLOW
    finally:
        assert server.stop() == 0
    before = kept_size(data)
    for step in ("--rotate", "--retire-previous"):
        done = subprocess.run(
            [DOCKET, "audit", "key", step, "--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    assert kept_size(data) == before + 2  # each operation's entry, kept signed
    server = restart(root, bundle)
    try:
        assert authorize(server).decision == pb.DECISION_ALLOW
    finally:
        assert server.stop() == 0
