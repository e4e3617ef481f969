"""Attacks on redaction (issue 14, finding 2), each against a log written by a real
``docket serve`` and checked with the real ``docket audit`` CLI.

The attack: anyone who could write the database erased an entry's payload and appended
a matching ``redaction`` entry (hashes recomputed; the server's next checkpoint then
signs it), and ``audit verify --key --checkpoint`` said intact; in an export any entry
could be replaced by ``null`` and ``verify --export`` exited 0. Now an erasure verifies
only with a redaction order signed by a redaction key the operator holds apart from
the checkpoint key, naming that very entry (origin, index, leaf hash), the reason and
the requester — in the log's redaction entry, and beside the erased entry in an export.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from e2e.docket_process import DOCKET, start_docket
from e2e.test_attacks_placement import grpc_read

from audit._entry import Entry
from audit._log import pending
from audit._note import SignerKey
from audit._redaction import RedactionOrder, sign_order
from audit._store import Store

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class ServedLog:
    data_dir: Path
    victims: tuple[int, ...]
    """Indices of decision entries (what an attacker would like to erase)."""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> ServedLog:
    root = tmp_path_factory.mktemp("redaction")
    docket = start_docket(root / "serve")
    try:
        for principal in ("alice", "bob", "carol"):
            grpc_read(docket, principal, "team-wiki-eu", "eu")
    finally:
        assert docket.stop() == 0, docket.log.read_text()
    with sqlite3.connect(docket.data_dir / "docket.db") as db:
        victims = tuple(
            int(idx) for (idx,) in db.execute("SELECT idx FROM audit_entry WHERE kind='decision'")
        )
    assert len(victims) >= 3
    done = audit("checkpoint", "--data-dir", str(docket.data_dir))
    assert done.returncode == 0, done.stderr
    return ServedLog(docket.data_dir, victims)


@pytest.fixture
def copy(served: ServedLog, tmp_path: Path) -> ServedLog:
    target = tmp_path / "data"
    shutil.copytree(served.data_dir, target)
    return ServedLog(target, served.victims)


def audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOCKET, "audit", *args], capture_output=True, text=True, timeout=120)


def key_of(log: ServedLog) -> str:
    done = audit("key", "--data-dir", str(log.data_dir))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def saved_checkpoint(log: ServedLog, tmp_path: Path) -> Path:
    """The latest signed checkpoint, as an auditor keeps it."""
    with sqlite3.connect(log.data_dir / "docket.db") as db:
        (note,) = db.execute("SELECT note FROM audit_checkpoint ORDER BY size DESC").fetchone()
    path = tmp_path / "kept.note"
    path.write_text(note)
    return path


def forge_erasure(log: ServedLog, index: int, detail_extra: dict[str, object]) -> None:
    """What someone with write access to the database does: erase the payload and
    append a redaction entry that names it, every hash recomputed; then the log's own
    key signs the next checkpoint (as the server would within a second)."""
    db = log.data_dir / "docket.db"
    with sqlite3.connect(db) as conn:
        (leaf,) = conn.execute("SELECT leaf FROM audit_entry WHERE idx = ?", (index,)).fetchone()
        conn.execute("UPDATE audit_entry SET payload = NULL WHERE idx = ?", (index,))
    conn.close()
    record = Entry(
        kind="redaction",
        time=datetime.now(UTC),
        caller="dpo@example.org",
        action="redact",
        resource=f"entry:{index}",
        detail={"index": index, "reason": "erasure request", "leaf_hash": leaf.hex()}
        | detail_extra,
    )
    store = Store(f"sqlite:///{db}", create=False)
    try:
        store.append([pending(record)])
    finally:
        store.close()
    done = audit("checkpoint", "--data-dir", str(log.data_dir))
    assert done.returncode == 0, done.stderr


def new_redaction_key(path: Path) -> str:
    done = audit("redaction-key", "--new", str(path))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_attack_erasure_with_a_forged_redaction_entry(copy: ServedLog, tmp_path: Path) -> None:
    key = key_of(copy)
    kept = saved_checkpoint(copy, tmp_path)
    victim = copy.victims[0]
    forge_erasure(copy, victim, {})
    done = audit(
        "verify", "--data-dir", str(copy.data_dir), "--key", key, "--checkpoint", str(kept)
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "intact" not in done.stdout
    assert f"entry {victim}: redaction:" in done.stderr, done.stderr
    # Without --key (the keys the log names) the same.
    done = audit("verify", "--data-dir", str(copy.data_dir), "--json")
    assert done.returncode == 1, (done.stdout, done.stderr)
    result = json.loads(done.stdout)
    assert (result["intact"], result["index"], result["kind"]) == (False, victim, "redaction")


def test_attack_erasure_signed_with_the_attackers_own_redaction_key(
    copy: ServedLog, tmp_path: Path
) -> None:
    operator = new_redaction_key(tmp_path / "operator.key")
    attacker = SignerKey.generate("docket-redaction")
    victim = copy.victims[1]
    with sqlite3.connect(copy.data_dir / "docket.db") as db:
        (leaf,) = db.execute("SELECT leaf FROM audit_entry WHERE idx = ?", (victim,)).fetchone()
        origin = db.execute("SELECT value FROM audit_meta WHERE key='origin'").fetchone()[0]
        # The attacker also names their key in the log, where `verify` without keys looks.
        db.execute(
            "INSERT INTO audit_meta (key, value) VALUES ('redaction_keys', ?)",
            (str(attacker.verifier()),),
        )
    order = RedactionOrder(origin, victim, leaf, datetime.now(UTC), "dpo", "erasure request")
    forge_erasure(copy, victim, {"order": sign_order(order, attacker)})
    key = key_of(copy)
    done = audit(
        "verify", "--data-dir", str(copy.data_dir), "--key", key, "--redaction-key", operator
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"entry {victim}: redaction:" in done.stderr, done.stderr
    # With --key but no --redaction-key, the log's own word about redaction keys is not
    # taken: the erasure cannot be shown authorized.
    done = audit("verify", "--data-dir", str(copy.data_dir), "--key", key)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "pass --redaction-key" in done.stderr, done.stderr


def test_attack_a_valid_order_replayed_onto_another_entry(copy: ServedLog, tmp_path: Path) -> None:
    redaction = new_redaction_key(tmp_path / "dpo.key")
    first, second = copy.victims[0], copy.victims[1]
    done = audit(
        "redact", str(first), "--reason", "Art. 17 request 7", "--by", "dpo@example.org",
        "--redaction-key", str(tmp_path / "dpo.key"), "--data-dir", str(copy.data_dir),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(copy.data_dir / "docket.db") as db:
        (payload,) = db.execute(
            "SELECT payload FROM audit_entry WHERE kind='redaction' ORDER BY idx DESC"
        ).fetchone()
    order = json.loads(payload)["detail"]["order"]
    forge_erasure(copy, second, {"order": order})
    done = audit(
        "verify", "--data-dir", str(copy.data_dir), "--key", key_of(copy),
        "--redaction-key", redaction,
    )  # fmt: skip
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"entry {second}: redaction:" in done.stderr, done.stderr
    assert f"the order erases entry {first}, not {second}" in done.stderr, done.stderr


def test_attack_export_entry_replaced_by_null(copy: ServedLog, tmp_path: Path) -> None:
    exported = tmp_path / "period.jsonl"
    done = audit("export", "-o", str(exported), "--data-dir", str(copy.data_dir))
    assert done.returncode == 0, done.stderr
    victim = copy.victims[2]
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    for line in lines:
        if line.get("type") == "entry" and line["index"] == victim:
            line["entry"] = None
    exported.write_text("".join(json.dumps(line) + "\n" for line in lines))
    for extra in ([], ["--key", key_of(copy)]):
        done = audit("verify", "--export", str(exported), *extra)
        assert done.returncode == 1, (extra, done.stdout, done.stderr)
        assert f"entry {victim}: redaction:" in done.stderr, done.stderr


def test_an_authorized_redaction_verifies_in_the_store_and_in_exports(
    copy: ServedLog, tmp_path: Path
) -> None:
    redaction = new_redaction_key(tmp_path / "dpo.key")
    key = key_of(copy)
    victim = copy.victims[0]
    before = datetime.now(UTC).isoformat()
    done = audit(
        "redact", str(victim), "--reason", "GDPR Art. 17 request #1234",
        "--by", "dpo@example.org", "--redaction-key", str(tmp_path / "dpo.key"),
        "--data-dir", str(copy.data_dir),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"entry {victim} redacted" in done.stdout
    done = audit(
        "verify", "--data-dir", str(copy.data_dir), "--key", key, "--redaction-key", redaction
    )
    assert done.returncode == 0, done.stderr
    assert f"entry {victim} erased on" in done.stdout
    assert (
        "at the request of dpo@example.org (GDPR Art. 17 request #1234); order signed by "
        "docket-redaction" in done.stdout
    ), done.stdout
    done = audit(
        "verify", "--json", "--data-dir", str(copy.data_dir), "--key", key,
        "--redaction-key", redaction,
    )  # fmt: skip
    (entry,) = json.loads(done.stdout)["redactions"]
    assert (entry["index"], entry["requested_by"]) == (victim, "dpo@example.org")

    # An export that ends before the redaction entry carries the order beside the entry.
    exported = tmp_path / "before.jsonl"
    done = audit("export", "--until", before, "-o", str(exported), "--data-dir", str(copy.data_dir))
    assert done.returncode == 0, done.stderr
    erased = [
        line
        for line in map(json.loads, exported.read_text().splitlines())
        if line.get("type") == "entry" and line["entry"] is None
    ]
    assert [line["index"] for line in erased] == [victim]
    assert "docket-redaction/1" in erased[0]["redaction_order"]
    done = audit("verify", "--export", str(exported), "--key", key, "--redaction-key", redaction)
    assert done.returncode == 0, done.stderr
    # The order cannot be dropped from the export.
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    for line in lines:
        line.pop("redaction_order", None)
    exported.write_text("".join(json.dumps(line) + "\n" for line in lines))
    done = audit("verify", "--export", str(exported), "--key", key, "--redaction-key", redaction)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"entry {victim}: redaction:" in done.stderr


def test_the_checkpoint_key_cannot_authorize_an_erasure(copy: ServedLog) -> None:
    victim = copy.victims[0]
    done = audit(
        "redact", str(victim), "--reason", "x", "--data-dir", str(copy.data_dir),
        "--redaction-key", str(copy.data_dir / "audit-keys" / "signing.key"),
    )  # fmt: skip
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "must not be a checkpoint signing key" in done.stderr
    with sqlite3.connect(copy.data_dir / "docket.db") as db:
        (payload,) = db.execute(
            "SELECT payload FROM audit_entry WHERE idx = ?", (victim,)
        ).fetchone()
    assert payload is not None


def test_redact_needs_a_redaction_key(copy: ServedLog) -> None:
    done = audit("redact", str(copy.victims[0]), "--reason", "x", "--data-dir", str(copy.data_dir))
    assert done.returncode == 2
    assert "--redaction-key" in done.stderr
