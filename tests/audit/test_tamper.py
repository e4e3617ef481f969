"""Tampering with a closed log, through the database file (stdlib ``sqlite3``) and through
SQLAlchemy on the same URL: every change is detected, at the right index, with the right
kind, by :func:`~audit.verify_store` and by ``docket audit verify``.

The standard log (``tests/audit/conftest.py``) has 40 entries and signed checkpoints at
10, 25 and 40. A hypothesis test then applies one random mutation to one entry row of a
30-entry log holding a redaction and checks that it is detected, with the few mutations
that are undetectable by design spelled out.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlmodel import Session

from audit import Entry, SignerKey, Store, TamperDetected, verify_store
from audit._errors import TamperKind
from audit._merkle import CompactRange, leaf_hash
from audit._note import Checkpoint, sign_checkpoint
from audit._store import GENESIS, AuditEntryRow, chain_hash
from engine.cli import main
from tests.audit.conftest import REDACTION_KEYS

if TYPE_CHECKING:
    from tests.audit.conftest import SealedLog

Tamper = Callable[[sqlite3.Connection, "SealedLog"], None]
COLUMNS = "idx, kind, time, payload, leaf, chain, nodes"


# -- helpers ----------------------------------------------------------------------------


def run_verify(sealed: SealedLog, *args: str) -> Result:
    """``docket audit verify --db URL --key KEY…`` in-process."""
    keys = [arg for key in sealed.keys for arg in ("--key", str(key))]
    return CliRunner().invoke(main, ["audit", "verify", "--db", sealed.url, *keys, *args])


def assert_detected(
    sealed: SealedLog, index: int, kind: TamperKind, *, saved: Path | None = None
) -> None:
    """Both the API and the CLI report the tampering at ``index`` as ``kind`` (checking
    against the ``saved`` checkpoint file too, when given)."""
    extra = [] if saved is None else [(str(saved), saved.read_text())]
    with pytest.raises(TamperDetected) as caught:
        verify_store(sealed.store, sealed.keys, extra=extra, redaction_keys=REDACTION_KEYS)
    assert (caught.value.index, caught.value.kind) == (index, kind), str(caught.value)
    result = run_verify(sealed, *([] if saved is None else ["--checkpoint", str(saved)]))
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("docket: audit log NOT intact: "), lines[0]
    assert f"entry {index}: {kind}: " in lines[0], lines[0]


@dataclass
class Row:
    idx: int
    kind: str
    time: str
    payload: bytes | None
    leaf: bytes
    chain: bytes
    nodes: bytes

    def values(self) -> tuple[Any, ...]:
        return (self.idx, self.kind, self.time, self.payload, self.leaf, self.chain, self.nodes)


def rows(db: sqlite3.Connection) -> list[Row]:
    return [Row(*r) for r in db.execute(f"SELECT {COLUMNS} FROM audit_entry ORDER BY idx")]


def rewrite(db: sqlite3.Connection, new: list[Row]) -> None:
    db.execute("DELETE FROM audit_entry")
    db.executemany(
        f"INSERT INTO audit_entry ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [r.values() for r in new],
    )


def flip(data: bytes, position: int) -> bytes:
    changed = bytearray(data)
    changed[position] ^= 0x01
    return bytes(changed)


def rehash(db: sqlite3.Connection, new: list[Row]) -> None:
    """Store ``new`` as an attacker who knows the scheme would: every leaf, chain value,
    stored subtree hash and the head row recomputed, so all that still disagrees with
    the log is the signed checkpoints."""
    chain, frontier = GENESIS, CompactRange()
    for row in new:
        if row.payload is not None:
            row.leaf = leaf_hash(row.payload)
        chain = row.chain = chain_hash(chain, row.leaf)
        row.nodes = frontier.push(row.leaf)
    rewrite(db, new)
    db.execute(
        "UPDATE audit_head SET size = ?, chain = ?, frontier = ?, root = ?",
        (len(new), chain, frontier.to_bytes(), frontier.root()),
    )


def forged_entry(sealed: SealedLog, index: int) -> bytes:
    """The canonical bytes of entry ``index`` with its decision turned around."""
    entry = sealed.entries[index]
    turned = "deny" if entry.decision == "allow" else "allow"
    return entry.model_copy(update={"decision": turned}).canonical()


# -- the cases, through the database file -----------------------------------------------


def flip_payload_byte(db: sqlite3.Connection, sealed: SealedLog) -> None:
    (payload,) = db.execute("SELECT payload FROM audit_entry WHERE idx = 17").fetchone()
    db.execute("UPDATE audit_entry SET payload = ? WHERE idx = 17", (flip(payload, 40),))


def change_leaf(db: sqlite3.Connection, sealed: SealedLog) -> None:
    (leaf,) = db.execute("SELECT leaf FROM audit_entry WHERE idx = 17").fetchone()
    db.execute("UPDATE audit_entry SET leaf = ? WHERE idx = 17", (flip(leaf, 0),))


def change_chain(db: sqlite3.Connection, sealed: SealedLog) -> None:
    (chain,) = db.execute("SELECT chain FROM audit_entry WHERE idx = 17").fetchone()
    db.execute("UPDATE audit_entry SET chain = ? WHERE idx = 17", (flip(chain, 31),))


def change_nodes(db: sqlite3.Connection, sealed: SealedLog) -> None:
    # Entry 15 completes the subtrees of levels 1 to 4 (16 divides 15 + 1).
    (nodes,) = db.execute("SELECT nodes FROM audit_entry WHERE idx = 15").fetchone()
    assert len(nodes) == 4 * 32
    db.execute("UPDATE audit_entry SET nodes = ? WHERE idx = 15", (flip(nodes, 100),))


def add_nodes(db: sqlite3.Connection, sealed: SealedLog) -> None:
    # Entry 16 completes no subtree: an added hash is as wrong as a changed one.
    db.execute("UPDATE audit_entry SET nodes = ? WHERE idx = 16", (bytes(32),))


def rewrite_payload_compatibly(db: sqlite3.Connection, sealed: SealedLog) -> None:
    # The new payload with its own leaf hash; the chain no longer continues.
    payload = forged_entry(sealed, 17)
    db.execute(
        "UPDATE audit_entry SET payload = ?, leaf = ? WHERE idx = 17",
        (payload, leaf_hash(payload)),
    )


def erase_payload(db: sqlite3.Connection, sealed: SealedLog) -> None:
    db.execute("UPDATE audit_entry SET payload = NULL WHERE idx = 17")


def delete_row(db: sqlite3.Connection, sealed: SealedLog) -> None:
    db.execute("DELETE FROM audit_entry WHERE idx = 17")


def delete_first_row(db: sqlite3.Connection, sealed: SealedLog) -> None:
    db.execute("DELETE FROM audit_entry WHERE idx = 0")


def delete_and_renumber(db: sqlite3.Connection, sealed: SealedLog) -> None:
    kept = [row for row in rows(db) if row.idx != 17]
    for row in kept:
        if row.idx > 17:
            row.idx -= 1
    rewrite(db, kept)


def swap(first: int, second: int) -> Tamper:
    def tamper(db: sqlite3.Connection, sealed: SealedLog) -> None:
        table = rows(db)
        table[first].idx, table[second].idx = second, first
        rewrite(db, table)

    return tamper


def insert_and_renumber(db: sqlite3.Connection, sealed: SealedLog) -> None:
    table = rows(db)
    for row in table[17:]:
        row.idx += 1
    # The forged row's chain value is made up: the entry after it still continues the
    # chain from the one before it, which is what marks the forged one as inserted.
    payload = forged_entry(sealed, 17)
    forged = Row(17, "decision", table[16].time, payload, leaf_hash(payload), bytes(32), b"")
    rewrite(db, [*table[:17], forged, *table[17:]])


def truncate_tail(db: sqlite3.Connection, sealed: SealedLog) -> None:
    db.execute("DELETE FROM audit_entry WHERE idx >= 35")


def truncate_tail_and_head(db: sqlite3.Connection, sealed: SealedLog) -> None:
    # The head row rewound consistently: only the checkpoint of 40 remembers more.
    rehash(db, rows(db)[:35])


def forge_row_past_head(db: sqlite3.Connection, sealed: SealedLog) -> None:
    # Well formed: the chain continues and the subtree hashes are right.
    table = rows(db)
    frontier = CompactRange()
    for row in table:
        frontier.push(row.leaf)
    payload = forged_entry(sealed, 39)
    leaf = leaf_hash(payload)
    nodes = frontier.push(leaf)
    db.execute(
        f"INSERT INTO audit_entry ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (40, "decision", table[-1].time, payload, leaf, chain_hash(table[-1].chain, leaf), nodes),
    )


def table_time(db: sqlite3.Connection) -> str:
    (time,) = db.execute("SELECT max(time) FROM audit_entry").fetchone()
    return str(time)


def garbage_row_past_head(db: sqlite3.Connection, sealed: SealedLog) -> None:
    payload = forged_entry(sealed, 39)
    db.execute(
        f"INSERT INTO audit_entry ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (40, "decision", table_time(db), payload, leaf_hash(payload), bytes(32), b""),
    )


def resign_checkpoint(db: sqlite3.Connection, sealed: SealedLog) -> None:
    (root,) = db.execute("SELECT root FROM audit_checkpoint WHERE size = 25").fetchone()
    impostor = SignerKey.generate(sealed.store.origin)
    note = sign_checkpoint(Checkpoint(sealed.store.origin, 25, root), [impostor])
    db.execute("UPDATE audit_checkpoint SET note = ? WHERE size = 25", (note,))


def change_checkpoint_root(db: sqlite3.Connection, sealed: SealedLog) -> None:
    (root,) = db.execute("SELECT root FROM audit_checkpoint WHERE size = 25").fetchone()
    db.execute("UPDATE audit_checkpoint SET root = ? WHERE size = 25", (flip(root, 5),))


def move_checkpoint_note(db: sqlite3.Connection, sealed: SealedLog) -> None:
    # A genuine note, filed under the wrong size.
    (note,) = db.execute("SELECT note FROM audit_checkpoint WHERE size = 10").fetchone()
    db.execute("UPDATE audit_checkpoint SET note = ? WHERE size = 25", (note,))


def rewrite_and_rehash(index: int) -> Tamper:
    def tamper(db: sqlite3.Connection, sealed: SealedLog) -> None:
        table = rows(db)
        table[index].payload = forged_entry(sealed, index)
        rehash(db, table)

    return tamper


def change_head_root(db: sqlite3.Connection, sealed: SealedLog) -> None:
    (root,) = db.execute("SELECT root FROM audit_head").fetchone()
    db.execute("UPDATE audit_head SET root = ?", (flip(root, 0),))


CASES = [
    pytest.param(flip_payload_byte, 17, "modified", id="payload-byte-flipped"),
    pytest.param(change_leaf, 17, "modified", id="leaf-hash-changed"),
    pytest.param(change_chain, 17, "modified", id="chain-hash-changed"),
    pytest.param(change_nodes, 15, "modified", id="subtree-hashes-changed"),
    pytest.param(add_nodes, 16, "modified", id="subtree-hash-added"),
    pytest.param(rewrite_payload_compatibly, 17, "modified", id="payload-and-leaf-rewritten"),
    pytest.param(erase_payload, 17, "modified", id="payload-erased-without-redaction"),
    pytest.param(delete_row, 17, "deleted", id="row-deleted"),
    pytest.param(delete_first_row, 0, "deleted", id="first-row-deleted"),
    # The verifier cannot tell "entry 17 deleted, the rest renumbered" from "entry 17's
    # leaf rewritten": either way entry 17 is the first that is not what was logged,
    # and the message names both readings.
    pytest.param(delete_and_renumber, 17, "modified", id="row-deleted-rest-renumbered"),
    pytest.param(swap(17, 18), 17, "reordered", id="adjacent-rows-swapped"),
    pytest.param(swap(9, 10), 9, "reordered", id="rows-swapped-across-checkpoint"),
    pytest.param(swap(12, 30), 12, "reordered", id="distant-rows-swapped"),
    pytest.param(insert_and_renumber, 17, "inserted", id="row-inserted-rest-renumbered"),
    pytest.param(truncate_tail, 35, "truncated", id="tail-truncated"),
    pytest.param(
        truncate_tail_and_head,
        35,
        "truncated",
        id="tail-truncated-head-rewound",
    ),
    pytest.param(forge_row_past_head, 40, "inserted", id="well-formed-row-past-head"),
    pytest.param(garbage_row_past_head, 40, "inserted", id="garbage-row-past-head"),
    pytest.param(resign_checkpoint, 25, "checkpoint", id="checkpoint-signed-by-another-key"),
    pytest.param(change_checkpoint_root, 25, "checkpoint", id="checkpoint-root-column-changed"),
    pytest.param(
        move_checkpoint_note,
        25,
        "checkpoint",
        id="checkpoint-note-of-another-size",
    ),
    # Every hash recomputed: only the signed roots disagree. The first checkpoint that
    # does not match bounds the damage from below: entries from the last one that did.
    pytest.param(rewrite_and_rehash(17), 10, "modified", id="entry-rewritten-hashes-recomputed"),
    pytest.param(rewrite_and_rehash(3), 0, "modified", id="first-span-rewritten-and-rehashed"),
    pytest.param(change_head_root, 40, "modified", id="head-root-changed"),
]


def test_untampered_log_verifies(sealed_log: SealedLog) -> None:
    verdict = verify_store(sealed_log.store, sealed_log.keys, redaction_keys=REDACTION_KEYS)
    assert verdict.log.size == 40
    assert verdict.log.checkpoints == (10, 25, 40)
    assert verdict.anchor is not None
    assert verdict.anchor.size == 40
    result = run_verify(sealed_log)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("audit log intact: 40 entries of ")
    assert result.stderr == ""


@pytest.mark.parametrize(("tamper", "index", "kind"), CASES)
def test_tampering_with_the_database_file_is_detected(
    sealed_log: SealedLog, tamper: Tamper, index: int, kind: TamperKind
) -> None:
    verify_store(sealed_log.store, sealed_log.keys, redaction_keys=REDACTION_KEYS)  # intact before
    with closing(sqlite3.connect(sealed_log.path)) as db, db:
        tamper(db, sealed_log)
    assert_detected(sealed_log, index, kind)


def test_truncation_hidden_by_deleting_checkpoints_needs_a_saved_checkpoint(
    sealed_log: SealedLog, tmp_path: Path
) -> None:
    """An attacker who also deletes the checkpoints the truncation contradicts leaves a
    log that is consistent in itself: only a checkpoint the auditor kept shows it."""
    saved = tmp_path / "checkpoint-40.note"
    latest = sealed_log.store.latest_checkpoint()
    assert latest is not None
    assert latest.size == 40
    saved.write_text(latest.note)
    with closing(sqlite3.connect(sealed_log.path)) as db, db:
        truncate_tail_and_head(db, sealed_log)
        db.execute("DELETE FROM audit_checkpoint WHERE size > 35")

    assert (
        verify_store(sealed_log.store, sealed_log.keys, redaction_keys=REDACTION_KEYS).log.size
        == 35
    )
    assert_detected(sealed_log, 35, "truncated", saved=saved)


# -- the cases, through SQLAlchemy on the store's own table model -----------------------


@pytest.fixture
def session(sealed_log: SealedLog) -> Iterator[Session]:
    engine = sa.create_engine(sealed_log.url)
    try:
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()


def orm_change_payload(session: Session) -> None:
    row = session.get_one(AuditEntryRow, 17)
    assert row.payload is not None
    row.payload = row.payload.replace(b'"decision":"allow"', b'"decision":"deny"')


def orm_delete(session: Session) -> None:
    session.delete(session.get_one(AuditEntryRow, 17))


def orm_swap(session: Session) -> None:
    first, second = session.get_one(AuditEntryRow, 17), session.get_one(AuditEntryRow, 18)
    for column in ("kind", "time", "payload", "leaf", "chain", "nodes"):
        a, b = getattr(first, column), getattr(second, column)
        setattr(first, column, b)
        setattr(second, column, a)


@pytest.mark.parametrize(
    ("tamper", "index", "kind"),
    [
        pytest.param(orm_change_payload, 17, "modified", id="payload-changed"),
        pytest.param(orm_delete, 17, "deleted", id="row-deleted"),
        pytest.param(orm_swap, 17, "reordered", id="adjacent-rows-swapped"),
    ],
)
def test_tampering_through_sqlalchemy_is_detected(
    sealed_log: SealedLog,
    session: Session,
    tamper: Callable[[Session], None],
    index: int,
    kind: TamperKind,
) -> None:
    tamper(session)
    session.commit()
    assert_detected(sealed_log, index, kind)


# -- any single mutation of an entry row ------------------------------------------------

HYPOTHESIS_SIZE = 30
REDACTED = 7
"""The 30-entry log: 29 entries, then entry 7 redacted (the redaction entry is 29);
checkpoints at 12 and 30."""


@dataclass(frozen=True)
class Pristine:
    path: Path
    keys: list[Any]
    rows: list[Row]


@pytest.fixture(scope="module")
def pristine(
    tmp_path_factory: pytest.TempPathFactory, log_builder: Callable[..., SealedLog]
) -> Iterator[Pristine]:
    sealed = log_builder(
        tmp_path_factory.mktemp("pristine"),
        batches=(4, 5, 3, 4, 6, 7),
        checkpoints=(12, 30),
        redact=(REDACTED,),
    )
    try:
        verdict = verify_store(sealed.store, sealed.keys, redaction_keys=REDACTION_KEYS)
        assert verdict.log.size == HYPOTHESIS_SIZE
        assert verdict.log.checkpoints == (12, 30)
        assert verdict.log.redacted == (REDACTED,)
        with closing(sqlite3.connect(sealed.path)) as db:
            table = rows(db)
        yield Pristine(sealed.path, sealed.keys, table)
    finally:
        sealed.store.close()


KINDS = ["decision", "placement", "admission", "attestation", "certificate", "bundle"]
BYTE_COLUMNS = ("payload", "leaf", "chain", "nodes")
rows_index = st.integers(0, HYPOTHESIS_SIZE - 1)
mutations = st.one_of(
    st.tuples(
        st.just("xor"),
        rows_index,
        st.sampled_from(BYTE_COLUMNS),
        st.integers(0, 2**16),
        st.integers(1, 255),
        st.binary(max_size=64),
    ),
    st.tuples(st.just("erase"), rows_index),
    st.tuples(st.just("delete"), rows_index),
    st.tuples(st.just("swap"), rows_index, rows_index),
    # Moved to an index no other row holds (the primary key refuses a taken one).
    st.tuples(
        st.just("idx"),
        rows_index,
        st.one_of(st.integers(-(2**40), -1), st.integers(HYPOTHESIS_SIZE, 2**40)),
    ),
    st.tuples(
        st.just("kind"),
        rows_index,
        st.one_of(
            st.sampled_from([*KINDS, "audit", "redaction"]),
            st.text(st.characters(exclude_categories=("Cs",)), max_size=16),
        ),
    ),
    st.tuples(
        st.just("time"),
        rows_index,
        st.text(st.characters(exclude_categories=("Cs",)), max_size=32),
    ),
)


def apply(db: sqlite3.Connection, table: list[Row], mutation: tuple[Any, ...]) -> bool:
    """Apply ``mutation``; False when it changed nothing."""
    op, index, *args = mutation
    row = table[index]
    if op == "xor":
        column, position, delta, replacement = args
        value = getattr(row, column)
        if value:  # change one byte
            new = flip_by(value, position % len(value), delta)
        else:  # an erased payload or an empty subtree list: put bytes there
            new = replacement if value is None or replacement else b"\x00"
        db.execute(f"UPDATE audit_entry SET {column} = ? WHERE idx = ?", (new, index))
        return True
    if op == "erase":
        db.execute("UPDATE audit_entry SET payload = NULL WHERE idx = ?", (index,))
        return row.payload is not None
    if op == "delete":
        db.execute("DELETE FROM audit_entry WHERE idx = ?", (index,))
        return True
    if op == "swap":
        (other,) = args
        if other == index:
            return False
        swapped = list(table)
        swapped[index], swapped[other] = table[other], table[index]
        rewrite(db, [Row(i, *r.values()[1:]) for i, r in enumerate(swapped)])
        return True
    (value,) = args
    db.execute(f"UPDATE audit_entry SET {op} = ? WHERE idx = ?", (value, index))
    return value != getattr(row, op)


def flip_by(data: bytes, position: int, delta: int) -> bytes:
    changed = bytearray(data)
    changed[position] ^= delta
    return bytes(changed)


def undetectable_by_design(table: list[Row], mutation: tuple[Any, ...]) -> bool:
    """The single-row mutations no verifier of this log can see, and why.

    * ``time`` or ``kind`` of an erased entry, to anything: the payload that held its
      true time and kind is gone by design, and an erased entry records nothing
      whatever its label. (Of any other entry both columns are compared with the
      hashed payload: a period or a kind is never selected by a column that lies.)
    """
    op, index, *_ = mutation
    return op in ("time", "kind") and table[index].payload is None


@settings(max_examples=60, deadline=None)
@given(mutation=mutations)
def test_any_single_mutation_of_an_entry_row_is_detected(
    pristine: Pristine, mutation: tuple[Any, ...]
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "docket.db"
        with (
            closing(sqlite3.connect(pristine.path)) as source,
            closing(sqlite3.connect(path)) as copy,
        ):
            source.backup(copy)
            with copy:
                changed = apply(copy, pristine.rows, mutation)
        store = Store(f"sqlite:///{path}", create=False)
        try:
            if not changed or undetectable_by_design(pristine.rows, mutation):
                verify_store(
                    store, pristine.keys, redaction_keys=REDACTION_KEYS
                )  # still verifies: outside what is signed
            else:
                with pytest.raises(TamperDetected):
                    verify_store(store, pristine.keys, redaction_keys=REDACTION_KEYS)
        finally:
            store.close()


def test_an_entry_passed_off_as_a_redaction_is_refused(
    open_log: Callable[..., Any], entry_factory: Callable[[int], Entry], tmp_path: Path
) -> None:
    """The kind column is not covered by the leaf hash: relabelling an ordinary entry
    whose detail happens to look like a redaction record must not make an erasure that
    nobody recorded look recorded."""
    log = open_log()
    receipts = log.record([entry_factory(i) for i in range(5)])
    quoting = entry_factory(5).model_copy(
        update={
            "kind": "audit",
            "detail": {"index": 2, "leaf_hash": receipts[2].leaf_hash.hex(), "reason": "x"},
        }
    )
    log.record([quoting])
    log.checkpoint()
    keys = log.verifiers()
    log.close()
    url = f"sqlite:///{tmp_path}/docket.db"
    with closing(sqlite3.connect(tmp_path / "docket.db")) as db, db:
        db.execute("UPDATE audit_entry SET kind = 'redaction' WHERE idx = 5")
        db.execute("UPDATE audit_entry SET payload = NULL WHERE idx = 2")
    store = Store(url, create=False)
    try:
        with pytest.raises(TamperDetected) as caught:
            verify_store(store, keys, redaction_keys=REDACTION_KEYS)
    finally:
        store.close()
    assert (caught.value.index, caught.value.kind) == (5, "modified"), str(caught.value)
