"""The audit log on a real PostgreSQL: one tree from many threads and many processes,
proofs against signed checkpoints, tampering done with psql and caught, the ``docket
audit`` commands, and entries durable once acknowledged.

Every test has a new, empty database of its own (``postgres_db``). Processes that write
to one log run audit_writer_process.py next to this file; they are killed by PID when a
test fails or runs out of time, and by the kernel if this process dies
(PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from e2e.docket_process import die_with_parent
from e2e.postgres import HOST, SUPERUSER, PostgresServer

from audit import (
    AuditLog,
    Entry,
    ProofError,
    Receipt,
    Store,
    TamperDetected,
    VerifierKey,
    verify_store,
)
from audit._keys import KeyRing
from audit.merkle import leaf_hash, verify_consistency, verify_inclusion
from audit.note import Checkpoint, SignerKey, open_checkpoint, sign_checkpoint

pytestmark = pytest.mark.e2e

DOCKET = Path(sys.executable).with_name("docket")
WRITER = Path(__file__).with_name("audit_writer_process.py")
TIMEOUT = 60  # seconds for a subprocess (a CLI command, a writer process) to finish
QUIET: dict[str, Any] = {
    "checkpoint_every": 10**9,
    "checkpoint_interval": 3600.0,
}  # checkpoints on demand


def _entry(subject: str, n: int) -> Entry:
    return Entry(
        kind="decision",
        time=datetime.now(UTC),
        subject=subject,
        decision="allow",
        detail={"n": n},
    )


def _conninfo(url: str) -> str:
    """The libpq URL of a SQLAlchemy ``postgresql+psycopg://`` URL."""
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _bytea(data: bytes) -> str:
    return f"'\\x{data.hex()}'::bytea"


def _psql(server: PostgresServer, url: str, sql: str) -> None:
    """Run ``sql`` with the psql client, as someone with database access would."""
    psql = server.binaries.initdb.with_name("psql")
    if not os.access(psql, os.X_OK):
        found = shutil.which("psql")
        assert found is not None, "no psql next to initdb or on PATH"
        psql = Path(found)
    database = sa.make_url(url).database
    assert database is not None
    command = [str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST]
    command += ["-p", str(server.port), "-U", SUPERUSER, "-d", database, "-c", sql]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
        check=False,
    )
    assert done.returncode == 0, f"psql failed: {done.stderr}"


def _docket(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``docket audit ARGS`` with no DOCKET_* setting inherited from this environment."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("DOCKET_")}
    return subprocess.run(
        [str(DOCKET), "audit", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def _docket_together(cwd: Path, *commands: Sequence[str]) -> list[subprocess.CompletedProcess[str]]:
    """Run ``docket audit`` commands at the same time; each must exit 0."""
    with ThreadPoolExecutor(len(commands)) as pool:
        done = list(pool.map(lambda args: _docket(cwd, *args), commands))
    for args, result in zip(commands, done, strict=True):
        assert result.returncode == 0, f"docket audit {args[0]}: {result.stderr}"
    return done


def _create_log(url: str, keys: Path) -> list[VerifierKey]:
    """Create the tables and the signing key once, as ``docket serve`` does before it
    starts its workers; the verifier keys."""
    log = AuditLog.open(url, keys=keys)
    try:
        return log.verifiers()
    finally:
        log.close()


def _signed_roots(store: Store, keys: Sequence[VerifierKey]) -> list[Checkpoint]:
    """Every stored checkpoint, opened with ``keys`` (its root as signed, not as stored)."""
    return [open_checkpoint(c.note, keys, origin=store.origin)[0] for c in store.checkpoints()]


def _check_proofs(
    store: Store, checkpoints: Sequence[Checkpoint], leaves: dict[int, bytes]
) -> None:
    """Inclusion proofs of a few entries in a few checkpoints (the first, the last and
    some between), consistency proofs between every two consecutive ones; all verified
    against the signed roots."""
    step = max(1, len(checkpoints) // 4)
    for checkpoint in [*checkpoints[::step], checkpoints[-1]]:
        size, root = checkpoint.size, checkpoint.root
        for index in sorted({0, 1, size // 3, size // 2, size - 2, size - 1} & set(range(size))):
            proof = store.inclusion_proof(index, size)
            verify_inclusion(index, size, leaves[index], proof, root)
            if size > 1:  # in a tree of one leaf, the next leaf is that leaf
                with pytest.raises(ProofError):
                    verify_inclusion(index, size, leaves[(index + 1) % size], proof, root)
    # RFC 9162 has no consistency proof from the empty tree: it is a prefix of every tree.
    for old, new in itertools.pairwise([c for c in checkpoints if c.size > 0]):
        proof = store.consistency_proof(old.size, new.size)
        verify_consistency(old.size, new.size, old.root, new.root, proof)


# -- threads and processes ----------------------------------------------------------------


def test_threads_append_to_one_tree_with_proofs(postgres_db: str, tmp_path: Path) -> None:
    log = AuditLog.open(
        postgres_db, keys=tmp_path / "keys", checkpoint_every=60, checkpoint_interval=0.05
    ).start()
    try:

        def work(thread: int) -> list[tuple[Receipt, Entry]]:
            done: list[tuple[Receipt, Entry]] = []
            for call in range(25):
                batch = [_entry(f"thread:{thread}", call * 3 + k) for k in range(1 + call % 3)]
                receipts = log.record(batch)
                first = receipts[0].index
                assert [r.index for r in receipts] == list(range(first, first + len(batch)))
                done.extend(zip(receipts, batch, strict=True))
            return done

        with ThreadPoolExecutor(8) as pool:
            recorded = [pair for done in pool.map(work, range(8)) for pair in done]
        size = len(recorded)
        assert sorted(receipt.index for receipt, _ in recorded) == list(range(size))
        for receipt, entry in recorded:
            stored = log.store.entry(receipt.index)
            assert stored is not None
            assert stored.payload == entry.canonical()
            assert stored.leaf == receipt.leaf_hash == leaf_hash(entry.canonical())
        first = log.checkpoint()
        assert first.size == size
        log.record([_entry("late", n) for n in range(37)])
        second = log.checkpoint()
        assert second.size == size + 37

        keys = log.verifiers()
        verdict = verify_store(log.store, keys)
        assert verdict.log.size == size + 37
        assert verdict.anchor is not None
        assert verdict.anchor.size == size + 37
        checkpoints = _signed_roots(log.store, keys)
        assert {first.size, second.size} <= {c.size for c in checkpoints}
        assert verdict.log.checkpoints == tuple(c.size for c in checkpoints)
        leaves = {row.idx: row.leaf for row in log.store.entries()}
        _check_proofs(log.store, checkpoints, leaves)
    finally:
        log.close()


@dataclass
class Writer:
    tag: str
    process: subprocess.Popen[bytes]
    out: Path
    err: Path

    def lines(self) -> list[str]:
        text = self.out.read_text()
        return text[: text.rfind("\n") + 1].splitlines()  # complete lines only

    def receipts(self) -> list[tuple[int, bytes, int]]:
        """``(index, leaf hash, n)`` of every entry the process was told is recorded."""
        found = []
        for line in self.lines():
            if line.startswith("R "):
                _, index, leaf, n = line.split()
                found.append((int(index), bytes.fromhex(leaf), int(n)))
        return found


@contextlib.contextmanager
def _writers(
    url: str,
    keys: Path,
    tags: Sequence[str],
    count: int,
    threads: int,
    tmp_path: Path,
    *flags: str,
) -> Iterator[list[Writer]]:
    """Start one audit_writer_process.py per tag, wait until each is ready, then release
    them together. Whatever still runs on the way out is killed."""
    writers: list[Writer] = []
    try:
        for tag in tags:
            out, err = tmp_path / f"{tag}.out", tmp_path / f"{tag}.err"
            with out.open("wb") as stdout, err.open("wb") as stderr:
                process = subprocess.Popen(
                    die_with_parent(
                        [sys.executable, WRITER, url, keys, tag, str(count), str(threads), *flags],
                        "KILL",
                    ),
                    stdin=subprocess.PIPE,
                    stdout=stdout,
                    stderr=stderr,
                    cwd=tmp_path,
                )
            writers.append(Writer(tag, process, out, err))
        deadline = time.monotonic() + TIMEOUT
        for writer in writers:
            while "ready" not in writer.lines():
                if writer.process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"writer {writer.tag} did not start: {writer.err.read_text()}")
                time.sleep(0.01)
        for writer in writers:
            assert writer.process.stdin is not None
            writer.process.stdin.write(b"go\n")
            writer.process.stdin.close()
        yield writers
    finally:
        for writer in writers:
            if writer.process.poll() is None:
                writer.process.kill()
            writer.process.wait(TIMEOUT)


def _finish(writers: Sequence[Writer]) -> None:
    deadline = time.monotonic() + TIMEOUT
    for writer in writers:
        try:
            code = writer.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"writer {writer.tag} did not finish in {TIMEOUT} s")
        errors = writer.err.read_text()
        assert code == 0, f"writer {writer.tag} exited {code}: {errors}"
        assert "failed" not in errors, f"writer {writer.tag}: {errors}"
        assert writer.lines()[-1] == "done"


def test_processes_build_one_consistent_tree(postgres_db: str, tmp_path: Path) -> None:
    """Three processes, four threads each, 1,500 entries each (in calls of 1 to 5), while
    every process signs checkpoints as fast as it can: one tree, in one order, with no
    index twice."""
    keys = _create_log(postgres_db, tmp_path / "keys")
    tags, count = ("a", "b", "c"), 1_500
    flags = ("--batch", "5", "--sign")
    with _writers(postgres_db, tmp_path / "keys", tags, count, 4, tmp_path, *flags) as writers:
        _finish(writers)
    receipts = {writer.tag: writer.receipts() for writer in writers}

    total = len(tags) * count
    indices = [index for found in receipts.values() for index, _, _ in found]
    assert sorted(indices) == list(range(total))
    store = Store(postgres_db, create=False)
    try:
        assert store.head().size == total
        rows = {row.idx: row for row in store.entries()}
        owner = {}
        for tag, found in receipts.items():
            assert sorted(n for _, _, n in found) == list(range(count))
            for index, leaf, n in found:
                row = rows[index]
                assert row.leaf == leaf
                assert row.payload is not None
                document = json.loads(row.payload)
                assert (document["subject"], document["detail"]) == (f"proc:{tag}", {"n": n})
                owner[index] = tag
        # The processes really wrote at the same time: their entries interleave.
        runs = 1 + sum(owner[i] != owner[i - 1] for i in range(1, total))
        assert runs > 3 * len(tags)

        verdict = verify_store(store, keys)
        assert verdict.log.size == total
        checkpoints = _signed_roots(store, keys)
        assert len(checkpoints) >= 4
        assert checkpoints[-1].size == total
        # Signed by three processes at once, and every one's root is the tree's.
        assert verdict.log.checkpoints == tuple(c.size for c in checkpoints)
        _check_proofs(store, checkpoints, {i: row.leaf for i, row in rows.items()})
    finally:
        store.close()


def test_processes_create_a_new_log_together(postgres_db: str, tmp_path: Path) -> None:
    """Replicas starting at once on an empty database (their shared key already made):
    the tables, the head and the verifier-key record are created once, without errors."""
    keys = tmp_path / "keys"
    verifier = KeyRing(keys).ensure("docket.example/replicas").verifier()
    tags = ("p", "q", "r", "s")
    with _writers(postgres_db, keys, tags, 20, 2, tmp_path, "--create") as writers:
        _finish(writers)
    store = Store(postgres_db, create=False)
    try:
        assert store.head().size == 20 * len(tags)
        assert store.meta("verifier_keys") == str(verifier)
        verdict = verify_store(store, [verifier])
        assert verdict.log.size == 20 * len(tags)
    finally:
        store.close()


def test_acknowledged_entries_survive_a_killed_writer(postgres_db: str, tmp_path: Path) -> None:
    """SIGKILL a process in the middle of writing: every entry it had been told was
    recorded is there, nothing half-written is, and the log goes on."""
    keys = _create_log(postgres_db, tmp_path / "keys")
    with _writers(postgres_db, tmp_path / "keys", ["k"], 10**6, 4, tmp_path, "--sign") as writers:
        (writer,) = writers
        deadline = time.monotonic() + TIMEOUT
        while len(writer.receipts()) < 600:
            assert writer.process.poll() is None, writer.err.read_text()
            assert time.monotonic() < deadline, "the writer recorded too little"
            time.sleep(0.02)
        writer.process.kill()
        writer.process.wait(TIMEOUT)
    acknowledged = writer.receipts()

    log = AuditLog.open(postgres_db, keys=tmp_path / "keys", **QUIET).start()
    try:
        rows = {row.idx: row for row in log.store.entries()}
        for index, leaf, _ in acknowledged:
            assert rows[index].leaf == leaf
        verdict = verify_store(log.store, keys)
        assert verdict.log.size == len(rows) >= len(acknowledged)
        (receipt,) = log.record([_entry("after", 0)])
        assert receipt.index == len(rows)
        log.checkpoint()
        assert verify_store(log.store, keys).log.size == len(rows) + 1
    finally:
        log.close()


def test_a_recorded_entry_is_committed(postgres_db: str, tmp_path: Path) -> None:
    """Once record() returns, any other connection sees the entry and the moved head."""
    log = AuditLog.open(postgres_db, keys=tmp_path / "keys", **QUIET).start()
    conninfo = _conninfo(postgres_db)
    try:

        def work(thread: int) -> list[int]:
            indices = []
            with psycopg.connect(conninfo, autocommit=True) as connection:
                for n in range(25):
                    entry = _entry(f"durable:{thread}", n)
                    (receipt,) = log.record([entry])
                    row = connection.execute(
                        "SELECT leaf, payload FROM audit_entry WHERE idx = %s", (receipt.index,)
                    ).fetchone()
                    assert row is not None, f"entry {receipt.index} is not visible"
                    assert (row[0], row[1]) == (receipt.leaf_hash, entry.canonical())
                    head = connection.execute("SELECT size FROM audit_head").fetchone()
                    assert head is not None
                    assert head[0] > receipt.index
                    indices.append(receipt.index)
            return indices

        with ThreadPoolExecutor(4) as pool:
            checked = [index for found in pool.map(work, range(4)) for index in found]
        assert sorted(checked) == list(range(100))
    finally:
        log.close()


def test_verify_while_the_log_grows(postgres_db: str, tmp_path: Path) -> None:
    """An auditor verifies the database of a running service: entries appended while
    verification reads are no tampering."""
    log = AuditLog.open(postgres_db, keys=tmp_path / "keys", **QUIET).start()
    auditor = Store(postgres_db, create=False)
    try:
        for batch in range(2):
            log.record([_entry("bulk", batch * 10_000 + n) for n in range(10_000)])
        log.checkpoint()
        grown: list[Receipt] = []

        def grow(done: int) -> None:
            # Half-way through reading, a service appends, as it would at any moment.
            if done == 10_000 and not grown:
                grown.extend(log.record([_entry("live", n) for n in range(5)]))

        verdict = verify_store(auditor, log.verifiers(), progress=grow)
        assert [receipt.index for receipt in grown] == list(range(20_000, 20_005))
        assert verdict.log.size == 20_000
        assert verify_store(auditor, log.verifiers()).log.size == 20_005
    finally:
        auditor.close()
        log.close()


# -- tampering through psql ---------------------------------------------------------------


@dataclass(frozen=True)
class SmallLog:
    """40 entries, checkpoints of 16 and 40 (their notes), the head row at 16."""

    url: str
    keys: list[VerifierKey]
    notes: dict[int, str]
    roots: dict[int, bytes]
    head_16: tuple[bytes, bytes, bytes]  # chain, frontier, root


def _small_log(url: str, keys: Path) -> SmallLog:
    log = AuditLog.open(url, keys=keys, **QUIET).start()
    try:
        log.record([_entry("alice", n) for n in range(16)])
        first = log.checkpoint()
        head = log.store.head()
        log.record([_entry("bob", n) for n in range(16, 40)])
        second = log.checkpoint()
        return SmallLog(
            url,
            log.verifiers(),
            {16: first.note, 40: second.note},
            {16: first.root, 40: second.root},
            (head.chain, head.frontier.to_bytes(), head.root),
        )
    finally:
        log.close()


def _forged_note(log: SmallLog) -> str:
    """Checkpoint 16's note with another root, its signature left as it was."""
    real = base64.b64encode(log.roots[16]).decode()
    fake = base64.b64encode(bytes([0x11]) * 32).decode()
    assert log.notes[16].count(real) == 1
    return log.notes[16].replace(real, fake)


def _foreign_note(log: SmallLog) -> str:
    """A checkpoint of size 16 signed by a key of the same name that is not the log's."""
    origin = log.notes[16].split("\n", 1)[0]
    attacker = SignerKey.generate(log.keys[0].name)
    return sign_checkpoint(Checkpoint(origin, 16, bytes([0x11]) * 32), [attacker])


@dataclass(frozen=True)
class Tamper:
    sql: Callable[[SmallLog], str]
    index: int
    kind: str
    saved: bool = False  # the auditor passes the checkpoint of 40 they kept


TAMPERING = [
    pytest.param(
        Tamper(
            lambda _: (
                "UPDATE audit_entry SET payload = "
                "overlay(payload placing '\\x00'::bytea from 5 for 1) WHERE idx = 7"
            ),
            7,
            "modified",
        ),
        id="payload-byte-flipped",
    ),
    pytest.param(
        Tamper(lambda _: "DELETE FROM audit_entry WHERE idx = 7", 7, "deleted"),
        id="row-deleted",
    ),
    pytest.param(
        Tamper(
            lambda _: (
                "UPDATE audit_entry AS a SET kind = b.kind, time = b.time, "
                "payload = b.payload, leaf = b.leaf, chain = b.chain, nodes = b.nodes "
                "FROM audit_entry AS b WHERE (a.idx, b.idx) IN ((7, 8), (8, 7))"
            ),
            7,
            "reordered",
        ),
        id="two-rows-swapped",
    ),
    pytest.param(
        Tamper(lambda _: "DELETE FROM audit_entry WHERE idx >= 35", 35, "truncated"),
        id="tail-truncated",
    ),
    pytest.param(
        Tamper(
            lambda log: (
                "DELETE FROM audit_entry WHERE idx >= 16; "
                f"UPDATE audit_head SET size = 16, chain = {_bytea(log.head_16[0])}, "
                f"frontier = {_bytea(log.head_16[1])}, root = {_bytea(log.head_16[2])}"
            ),
            16,
            "truncated",
        ),
        id="tail-truncated-head-rewound",
    ),
    pytest.param(
        Tamper(
            lambda log: (
                "DELETE FROM audit_entry WHERE idx >= 16; "
                "DELETE FROM audit_checkpoint WHERE size > 16; "
                f"UPDATE audit_head SET size = 16, chain = {_bytea(log.head_16[0])}, "
                f"frontier = {_bytea(log.head_16[1])}, root = {_bytea(log.head_16[2])}"
            ),
            16,
            "truncated",
            saved=True,
        ),
        id="tail-truncated-head-rewound-checkpoint-deleted",
    ),
    pytest.param(
        Tamper(
            lambda log: (
                f"UPDATE audit_checkpoint SET note = $n${_forged_note(log)}$n$, "
                f"root = {_bytea(bytes([0x11]) * 32)} WHERE size = 16"
            ),
            16,
            "checkpoint",
        ),
        id="checkpoint-note-root-replaced",
    ),
    pytest.param(
        Tamper(
            lambda log: (
                f"UPDATE audit_checkpoint SET note = $n${_foreign_note(log)}$n$ WHERE size = 16"
            ),
            16,
            "checkpoint",
        ),
        id="checkpoint-note-signed-by-another-key",
    ),
    pytest.param(
        Tamper(
            lambda _: f"UPDATE audit_checkpoint SET root = {_bytea(bytes(32))} WHERE size = 16",
            16,
            "checkpoint",
        ),
        id="checkpoint-root-column-altered",
    ),
    pytest.param(
        Tamper(
            lambda log: f"UPDATE audit_checkpoint SET note = $n${log.notes[40]}$n$ WHERE size = 16",
            16,
            "checkpoint",
        ),
        id="checkpoint-note-replaced-by-another-checkpoint",
    ),
]


@pytest.mark.parametrize("tamper", TAMPERING)
def test_tampering_through_psql_is_detected(
    tamper: Tamper, postgres_db: str, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    log = _small_log(postgres_db, tmp_path / "keys")
    store = Store(postgres_db, create=False)
    try:
        assert verify_store(store, log.keys).log.size == 40
        _psql(postgres_server, postgres_db, tamper.sql(log))
        extra = [("saved checkpoint", log.notes[40])] if tamper.saved else []
        if tamper.saved:  # what the auditor's copy is for: without it, nothing shows
            assert verify_store(store, log.keys).log.size == tamper.index
        with pytest.raises(TamperDetected) as caught:
            verify_store(store, log.keys, extra=extra)
    finally:
        store.close()
    assert (caught.value.index, caught.value.kind) == (tamper.index, tamper.kind)

    saved = tmp_path / "checkpoint-40.note"
    saved.write_text(log.notes[40])
    args = ["verify", "--db", postgres_db, "--key", str(log.keys[0])]
    done = _docket(tmp_path, *args, *(["--checkpoint", str(saved)] if tamper.saved else []))
    assert done.returncode == 1, done.stderr
    expected = f"docket: audit log NOT intact: entry {tamper.index}: {tamper.kind}: "
    assert done.stderr.startswith(expected), done.stderr


# -- the CLI ------------------------------------------------------------------------------


def test_cli_against_postgres(postgres_db: str, tmp_path: Path) -> None:
    """checkpoint, consistency, prove, verify-receipt, export and verify (of the export
    and of the database), given the database URL. Commands that do not depend on each
    other run at once."""
    keys_dir = tmp_path / "keys"
    log = AuditLog.open(postgres_db, keys=keys_dir, **QUIET).start()
    try:
        log.record([_entry("alice", n) for n in range(30)])
        old = log.checkpoint()
        key = str(log.verifiers()[0])
    finally:
        log.close()
    unsigned = AuditLog.open(postgres_db, keys=None).start()  # appends, signs nothing
    try:
        unsigned.record([_entry("bob", n) for n in range(30, 42)])
    finally:
        unsigned.close()
    db, keys = ("--db", postgres_db), ("--keys", str(keys_dir))
    (tmp_path / "old.note").write_text(old.note)

    (signed,) = _docket_together(tmp_path, ("checkpoint", *db, *keys))
    checkpoint, _ = open_checkpoint(signed.stdout, [VerifierKey.parse(key)])
    assert checkpoint.size == 42
    store = Store(postgres_db, create=False)
    try:
        assert checkpoint.root == store.head().root
    finally:
        store.close()

    consistent, _ = _docket_together(
        tmp_path,
        ("consistency", "old.note", *db, "--key", key),
        ("prove", "35", *db, *keys, "-o", "receipt.json"),
    )
    assert "the tree of size 42 extends the tree of size 30" in consistent.stdout
    receipt = json.loads((tmp_path / "receipt.json").read_text())
    assert (receipt["index"], receipt["tree_size"]) == (35, 42)
    assert (receipt["entry"]["subject"], receipt["entry"]["detail"]) == ("bob", {"n": 35})

    checked, _ = _docket_together(
        tmp_path,
        ("verify-receipt", "receipt.json", "--key", key),
        ("export", "-o", "export.jsonl", *db, *keys),
    )
    assert checked.stdout.startswith("receipt OK: entry 35 ")

    exported, whole = _docket_together(
        tmp_path,
        ("verify", "--export", "export.jsonl", "--key", key),
        ("verify", *db, "--key", key),
    )
    assert exported.stdout.startswith("audit log intact: 42 entries of ")
    # The export recorded itself in the log (entry 42), and signed a checkpoint of it.
    assert whole.stdout.startswith("audit log intact: 43 entries of ")
    assert "checked against the checkpoint of size 43" in whole.stdout


# -- throughput (printed, not asserted) ---------------------------------------------------


def test_append_rate(postgres_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """32 threads recording one entry per call, then 20 threads recording 100-entry
    batches; every receipt is distinct and the log verifies afterwards."""
    log = AuditLog.open(postgres_db, keys=tmp_path / "keys").start()
    try:

        def run(threads: int, batch: int, seconds: float) -> tuple[list[int], float]:
            start = time.monotonic()
            stop = start + seconds

            def work(thread: int) -> list[int]:
                indices: list[int] = []
                while time.monotonic() < stop:
                    entries = [_entry(f"bench:{thread}", n) for n in range(batch)]
                    indices.extend(r.index for r in log.record(entries))
                return indices

            with ThreadPoolExecutor(threads) as pool:
                indices = [i for found in pool.map(work, range(threads)) for i in found]
            return indices, time.monotonic() - start

        single, single_time = run(32, 1, 5.0)
        batched, batched_time = run(20, 100, 2.0)
        indices = single + batched
        assert sorted(indices) == list(range(len(indices)))
        log.checkpoint()
        assert verify_store(log.store, log.verifiers()).log.size == len(indices)
    finally:
        log.close()
    with capsys.disabled():
        print(
            f"\nPostgreSQL appends: 32 threads x 1 entry: {len(single) / single_time:,.0f}/s "
            f"({len(single):,} in {single_time:.1f} s); 20 threads x 100-entry batches: "
            f"{len(batched) / batched_time:,.0f}/s ({len(batched):,} in {batched_time:.1f} s)"
        )
