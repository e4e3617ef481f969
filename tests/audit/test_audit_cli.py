"""``docket audit …`` as a user runs it, on a data directory made the way a new user
makes one: ``docket serve`` on a fresh directory, a few decisions over gRPC, SIGTERM.

The server runs once (module fixture); tests that change the log work on a copy of the
directory. The end-to-end flow and the one-line usage errors run the real ``docket``
executable; the rest call the ``docket audit`` group in process (the same code, without
a 1.3 s interpreter start per call).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner, Result
from structlog.testing import capture_logs

from audit import AuditLog, Entry, Store
from audit.cli import audit as audit_group
from audit.note import Checkpoint, SignerKey, sign_checkpoint
from engine.cli import main as docket_root
from sdk.v1 import decisions_pb2 as pb
from sdk.v1 import decisions_pb2_grpc as pb_grpc
from tests.engine.runtime.test_serve import Served

ROOT = Path(__file__).resolve().parents[2]
DOCKET = str(Path(sys.executable).parent / "docket")
KEY = re.compile(r"^(?P<name>[^+\s]+)\+(?P<id>[0-9a-f]{8})\+(?P<b64>[A-Za-z0-9+/]+={0,2})$")
NOTE = re.compile(
    r"\A(?P<origin>[^\n]+)\n(?P<size>0|[1-9][0-9]*)\n(?P<root>[A-Za-z0-9+/]{43}=)\n\n"
    r"(?P<signatures>(?:\u2014 [^\n ]+ [A-Za-z0-9+/]+={0,2}\n)+)\Z"
)


def request(principal: str, resource: str = "public-website") -> pb.AuthorizeRequest:
    return pb.AuthorizeRequest(
        principal=pb.EntityRef(type="User", id=principal),
        action=pb.EntityRef(type="Action", id="read"),
        resource=pb.EntityRef(type="Data", id=resource),
    )


ALLOW, DENY = request("heidi"), request("mallory")


@dataclass(frozen=True)
class Made:
    """The data directory ``docket serve`` left behind, and what the test did to it."""

    data: Path
    served_key: str
    """The checkpoint key ``docket serve`` printed."""
    first: pb.AuthorizeResponse
    """The first Authorize answer (with its audit receipt)."""
    phase_a: tuple[int, ...]
    phase_b: tuple[int, ...]
    """Entries of the batch, all recorded in [t1, t2)."""
    phase_c: tuple[int, ...]
    t1: datetime
    t2: datetime
    decisions: int
    placements: int
    allowed: int
    denied: int

    @property
    def size(self) -> int:
        return 1 + len(self.phase_a) + len(self.phase_b) + len(self.phase_c)  # + bundle load

    @property
    def url(self) -> str:
        return f"sqlite:///{self.data / 'docket.db'}"


def _moment() -> datetime:
    time.sleep(0.01)  # entry times have microseconds; keep the phases apart
    moment = datetime.now(UTC)
    time.sleep(0.01)
    return moment


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    base = tmp_path_factory.mktemp("audit-cli")
    data = base / "data"
    server = Served(
        [
            "--bundle",
            str(ROOT / "policies"),
            "--data-dir",
            str(data),
            "--grpc",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
        ],
        base,
    )
    try:
        printed = server.printed + server.wait_for("SIGTERM", timeout=30)
        served_key = re.search(r"checkpoint key (\S+)", printed)[1]  # type: ignore[index]
        with grpc.insecure_channel(server.grpc) as channel:
            stub = pb_grpc.DecisionsStub(channel)
            first = stub.Authorize(ALLOW, timeout=10)
            denied = stub.Authorize(DENY, timeout=10)
            t1 = _moment()
            batch = stub.BatchAuthorize(
                pb.BatchAuthorizeRequest(requests=[ALLOW, DENY, ALLOW, ALLOW]), timeout=10
            ).results
            t2 = _moment()
            placed = stub.Place(
                pb.PlacementRequest(
                    workload_id="ehr-gateway",
                    classification="restricted",
                    residency=["eu"],
                    regulated=True,
                    users_in="eu",
                ),
                timeout=10,
            )
            last = stub.Authorize(ALLOW, timeout=10)
    finally:
        assert server.stop() == 0
    answers = [first, denied, *batch, last]
    assert [a.decision for a in answers] == [1, 2, 1, 2, 1, 1, 1]
    assert placed.allowed
    return Made(
        data=data,
        served_key=served_key,
        first=first,
        phase_a=(first.receipt.index, denied.receipt.index),
        phase_b=tuple(r.receipt.index for r in batch),
        phase_c=(placed.receipt.index, last.receipt.index),
        t1=t1,
        t2=t2,
        decisions=len(answers),
        placements=1,
        allowed=sum(a.decision == pb.DECISION_ALLOW for a in answers) + 1,  # + the placement
        denied=sum(a.decision == pb.DECISION_DENY for a in answers),
    )


@pytest.fixture
def copy(made: Made, tmp_path: Path) -> Path:
    """A data directory of its own, for a test that changes the log."""
    return Path(shutil.copytree(made.data, tmp_path / "data"))


@dataclass(frozen=True)
class Other:
    """A second, unrelated log: its key and its checkpoint."""

    key: str
    note: str


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Other:
    base = tmp_path_factory.mktemp("other-log")
    log = AuditLog.open(f"sqlite:///{base / 'docket.db'}", keys=base / "audit-keys").start()
    log.record([Entry(kind="audit", time=datetime.now(UTC), action="x") for _ in range(3)])
    log.close()
    store = Store(f"sqlite:///{base / 'docket.db'}", create=False)
    try:
        latest = store.latest_checkpoint()
        assert latest is not None
        return Other(key=(store.meta("verifier_keys") or "").strip(), note=latest.note)
    finally:
        store.close()


# -- running the CLI --------------------------------------------------------------------


def docket(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The installed ``docket`` executable, as a shell runs it."""
    return subprocess.run(
        [DOCKET, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def cli(*args: str | Path, code: int = 0) -> Result:
    """``docket audit ARGS`` in process; asserts the exit code and that no exception
    other than click's exit escaped (a traceback would also exit 1)."""
    with capture_logs():  # ``docket`` sends logs to stderr, at info
        result = CliRunner().invoke(
            docket_root, ["audit", *(str(a) for a in args)], prog_name="docket"
        )
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"docket audit {args} raised") from result.exception
    assert result.exit_code == code, (result.stdout, result.stderr)
    if code:
        assert_one_line(result.stderr)
    return result


def assert_one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("docket: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def key_of(data: Path) -> str:
    return cli("key", "--data-dir", data).stdout.strip()


def check_note(text: str, keys: list[str]) -> tuple[int, str]:
    """A C2SP checkpoint exactly: origin, size, root, blank line, one signature line
    by each of ``keys``, in order. Returns (size, root)."""
    match = NOTE.match(text)
    assert match, repr(text)
    assert len(base64.b64decode(match["root"])) == 32
    signatures = match["signatures"].splitlines()
    assert len(signatures) == len(keys), text
    for line, key in zip(signatures, keys, strict=True):
        parsed = KEY.match(key)
        assert parsed, key
        _, name, signature = line.split(" ")
        assert name == parsed["name"] == match["origin"]
        raw = base64.b64decode(signature)
        assert len(raw) == 4 + 64  # key id, Ed25519 signature
        assert raw[:4].hex() == parsed["id"]
    return int(match["size"]), match["root"]


# -- the whole flow, as a user -----------------------------------------------------------


def test_a_new_users_log_verifies_and_proves_a_decision(made: Made, tmp_path: Path) -> None:
    assert sorted([*made.phase_a, *made.phase_b, *made.phase_c]) == list(range(1, made.size))

    key = docket("audit", "key", "--data-dir", made.data)
    assert key.returncode == 0, key.stderr
    assert key.stdout.count("\n") == 1
    key_text = key.stdout.strip()
    parsed = KEY.match(key_text)
    assert parsed, key_text
    public = base64.b64decode(parsed["b64"])
    assert len(public) == 33  # algorithm byte (1: Ed25519) and the public key
    assert public[0] == 1
    assert key_text == made.served_key

    note = docket("audit", "checkpoint", "--data-dir", made.data)
    assert note.returncode == 0, note.stderr
    size, _ = check_note(note.stdout, [key_text])
    assert size == made.size  # serve signed one covering everything when it stopped

    verified = docket("audit", "verify", "--key", key_text, "--data-dir", made.data)
    assert verified.returncode == 0, verified.stderr
    origin = parsed["name"]
    assert verified.stdout.splitlines()[0] == f"audit log intact: {made.size} entries of {origin}"

    index = made.first.receipt.index
    proved = docket("audit", "prove", str(index), "--data-dir", made.data)
    assert proved.returncode == 0, proved.stderr
    receipt = json.loads(proved.stdout)
    assert receipt["index"] == index
    assert receipt["leaf_hash"] == made.first.receipt.leaf_hash.hex()
    assert receipt["entry"]["detail"]["decision_id"] == made.first.decision_id
    assert receipt["entry"]["decision"] == "allow"
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in receipt["inclusion_proof"])
    assert check_note(receipt["checkpoint"], [key_text])[0] == receipt["tree_size"] > index
    (tmp_path / "receipt.json").write_text(proved.stdout)

    checked = docket("audit", "verify-receipt", tmp_path / "receipt.json", "--key", key_text)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"receipt OK: entry {index} is in {origin}")


# -- key ----------------------------------------------------------------------------------


def audit_operations(data: Path) -> list[dict[str, Any]]:
    store = Store(f"sqlite:///{data / 'docket.db'}", create=False)
    try:
        documents = [json.loads(row.payload or b"null") for row in store.entries()]
    finally:
        store.close()
    return [d for d in documents if d and d["kind"] == "audit"]


def test_key_rotation_and_retirement_are_recorded(copy: Path) -> None:
    first = key_of(copy)
    rotated = cli("key", "--rotate", "--data-dir", copy).stdout.splitlines()
    assert len(rotated) == 1
    new = rotated[0]
    assert KEY.match(new)
    assert new != first
    assert new.split("+")[0] == first.split("+")[0]  # the same name: the log's origin
    assert cli("key", "--all", "--data-dir", copy).stdout.splitlines() == [new, first]
    assert key_of(copy) == new

    # During the overlap every new checkpoint carries both signatures.
    check_note(cli("checkpoint", "--data-dir", copy).stdout, [new, first])
    again = cli("key", "--rotate", "--data-dir", copy, code=2)
    assert "--retire-previous" in again.stderr

    assert cli("key", "--retire-previous", "--data-dir", copy).stdout.splitlines() == [new]
    # Retired keys are still listed (after the signing ones): old checkpoints need them.
    assert cli("key", "--all", "--data-dir", copy).stdout.splitlines() == [new, first]
    check_note(cli("checkpoint", "--data-dir", copy).stdout, [new])
    nothing = cli("key", "--retire-previous", "--data-dir", copy, code=2)
    assert "no previous key" in nothing.stderr

    operations = [(op["action"], op["detail"]["key"]) for op in audit_operations(copy)]
    assert operations == [("rotate-key", new), ("retire-key", first)]
    # An auditor holding both keys verifies the whole history.
    cli("verify", "--key", first, "--key", new, "--data-dir", copy)


# -- checkpoint and consistency -----------------------------------------------------------


def append_unsigned(data: Path, count: int) -> None:
    """Entries added by a writer without the signing key (no checkpoint is signed)."""
    log = AuditLog(Store(f"sqlite:///{data / 'docket.db'}", create=False), None).start()
    try:
        log.record([Entry(kind="audit", time=datetime.now(UTC), action="x")] * count)
    finally:
        log.close()


def test_checkpoint_final_prints_what_the_witnesses_cosigned(copy: Path) -> None:
    """``--final``: the checkpoint the site's pusher kept as final (with the witnesses'
    cosignatures), or exit 1 while there is none."""
    refused = cli("checkpoint", "--final", "--data-dir", copy, code=1).stderr
    assert "no checkpoint is final yet" in refused
    store = Store(f"sqlite:///{copy / 'docket.db'}", create=False)
    note = cli("checkpoint", "--data-dir", copy).stdout
    store.set_meta("final_checkpoint", note)
    store.close()
    assert cli("checkpoint", "--final", "--data-dir", copy).stdout == note


def test_checkpoints_grow_and_stay_consistent(copy: Path, tmp_path: Path, other: Other) -> None:
    key = key_of(copy)
    old_text = cli("checkpoint", "--data-dir", copy).stdout
    old_size, _ = check_note(old_text, [key])
    assert cli("checkpoint", "--data-dir", copy).stdout == old_text  # nothing new: same one
    append_unsigned(copy, 2)
    new_text = cli("checkpoint", "--data-dir", copy).stdout
    new_size, new_root = check_note(new_text, [key])
    assert new_size == old_size + 2
    old, new = tmp_path / "old.note", tmp_path / "new.note"
    old.write_text(old_text)
    new.write_text(new_text)

    shown = cli("consistency", old, new, "--key", key, "--data-dir", copy).stdout
    assert shown.startswith(
        f"consistent: the tree of size {new_size} extends the tree of size {old_size}"
    )
    proved = json.loads(
        cli("consistency", old, new, "--key", key, "--json", "--data-dir", copy).stdout
    )
    assert proved["consistent"] is True
    assert (proved["old"]["size"], proved["new"]["size"]) == (old_size, new_size)
    assert proved["new"]["root"] == new_root
    assert isinstance(proved["proof"], list)
    cli("consistency", old, "--key", key, "--data-dir", copy)  # against the latest

    kept = cli("verify", "--checkpoint", old, "--key", key, "--json", "--data-dir", copy)
    assert old_size in json.loads(kept.stdout)["checkpoints_checked"]

    origin = key.split("+")[0]
    stranger = SignerKey.generate(origin)  # same name, another key
    real = Checkpoint(origin=origin, size=new_size, root=base64.b64decode(new_root))
    (tmp_path / "stranger.note").write_text(sign_checkpoint(real, [stranger]))
    # The signing key file copied by someone who then signs a different tree.
    stolen = SignerKey.parse((copy / "audit-keys" / "signing.key").read_text().strip())
    rewritten = Checkpoint(origin=origin, size=new_size, root=hashlib.sha256(b"other").digest())
    (tmp_path / "rewritten.note").write_text(sign_checkpoint(rewritten, [stolen]))
    (tmp_path / "other-log.note").write_text(other.note)
    for forged in ("stranger.note", "rewritten.note", "other-log.note"):
        failed = cli(
            "consistency", old, tmp_path / forged, "--key", key, "--data-dir", copy, code=1
        )
        assert "NOT consistent" in failed.stderr, forged
        result = json.loads(
            cli(
                "consistency", old, tmp_path / forged, "--key", key, "--json",
                "--data-dir", copy, code=1,
            ).stdout
        )  # fmt: skip
        assert (result["consistent"], result["exit_code"]) == (False, 1), forged
        assert result["problem"].startswith("NOT consistent"), forged
    unreadable = cli("consistency", tmp_path / "missing.note", "--json", "--data-dir", copy, code=2)
    assert json.loads(unreadable.stdout)["consistent"] is None
    for forged in ("stranger.note", "rewritten.note", "other-log.note"):
        failed = cli(
            "verify", "--checkpoint", tmp_path / forged, "--key", key, "--data-dir", copy, code=1
        )
        assert "NOT intact" in failed.stderr, forged


# -- verify -------------------------------------------------------------------------------


def test_verify_says_what_it_checked(made: Made, other: Other) -> None:
    key = key_of(made.data)
    origin = key.split("+")[0]
    plain = cli("verify", "--key", key, "--data-dir", made.data).stdout.splitlines()
    assert plain[0] == f"audit log intact: {made.size} entries of {origin}"
    assert plain[1] == (
        f"intact up to index {made.size - 1}, covered by the checkpoint of size {made.size} "
        f"signed by {origin}"
    )
    assert plain[2].startswith(f"checked against the checkpoint of size {made.size}, root ")
    assert plain[3] == f"keys: {key}"
    assert not any(line.startswith("note:") for line in plain)

    verdict = json.loads(cli("verify", "--key", key, "--json", "--data-dir", made.data).stdout)
    assert verdict["intact"] is True
    assert (verdict["origin"], verdict["start"], verdict["size"]) == (origin, 0, made.size)
    assert verdict["checkpoint"]["size"] == made.size
    assert verdict["covered_up_to"] == made.size - 1
    assert verdict["keys"] == [key]
    assert verdict["redacted"] == []

    stored = cli("verify", "--data-dir", made.data).stdout
    assert "note: checked against the keys stored in the log; pass --key" in stored

    wrong = cli("verify", "--key", other.key, "--data-dir", made.data, code=1)
    assert "NOT intact" in wrong.stderr
    assert "no signature by a trusted key" in wrong.stderr
    failed = json.loads(
        cli("verify", "--key", other.key, "--json", "--data-dir", made.data, code=1).stdout
    )
    assert failed["intact"] is False
    assert failed["kind"] == "checkpoint"
    assert "no signature by a trusted key" in failed["problem"]


# -- prove and verify-receipt -------------------------------------------------------------


def test_receipts_verify_offline_and_tampering_is_caught(made: Made, tmp_path: Path) -> None:
    key = key_of(made.data)
    index = made.phase_b[1]  # a deny
    receipt = json.loads(cli("prove", index, "--data-dir", made.data).stdout)
    for field in ("index", "tree_size", "leaf_hash", "inclusion_proof", "checkpoint", "entry"):
        assert field in receipt
    assert receipt["index"] == index
    assert receipt["entry"]["decision"] == "deny"
    assert receipt["inclusion_proof"], "a tree of several leaves has a non-empty proof"

    def check(document: dict[str, Any], *args: str, code: int) -> Result:
        path = tmp_path / "receipt.json"
        path.write_text(json.dumps(document))
        return cli("verify-receipt", path, *args, code=code)

    assert check(receipt, "--key", key, code=0).stdout.startswith(f"receipt OK: entry {index} ")

    valid = json.loads(check(receipt, "--key", key, "--json", code=0).stdout)
    assert (valid["valid"], valid["index"], valid["entry_erased"]) == (True, index, False)
    assert valid["tree_size"] == receipt["tree_size"]

    forged_entry = {**receipt, "entry": {**receipt["entry"], "decision": "allow"}}
    assert "does NOT verify" in check(forged_entry, "--key", key, code=1).stderr
    failed = json.loads(check(forged_entry, "--key", key, "--json", code=1).stdout)
    assert (failed["valid"], failed["exit_code"]) == (False, 1)
    assert "does not hash to the receipt's leaf hash" in failed["problem"]
    assert json.loads(check(receipt, "--json", code=2).stdout)["valid"] is None
    proof = list(receipt["inclusion_proof"])
    proof[0] = ("0" if proof[0][0] != "0" else "1") + proof[0][1:]
    assert (
        "does NOT verify"
        in check({**receipt, "inclusion_proof": proof}, "--key", key, code=1).stderr
    )
    assert "--key is required" in check(receipt, code=2).stderr

    beyond = cli("prove", made.size, "--data-dir", made.data, code=2)
    assert f"there is no entry {made.size}" in beyond.stderr


# -- export -------------------------------------------------------------------------------


def export_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_exports_verify_offline_and_edits_are_named(made: Made, copy: Path, tmp_path: Path) -> None:
    key = key_of(copy)
    whole = tmp_path / "whole.jsonl"
    done = cli("export", "-o", whole, "--data-dir", copy)
    assert done.stderr.strip() == (
        f"exported entries 0..{made.size - 1} ({made.size}) to {whole}; "
        f"covered by the checkpoint of size {made.size}"
    )
    lines = export_lines(whole)
    assert [line["type"] for line in lines[:1] + lines[-1:]] == ["header", "end"]
    assert [line["index"] for line in lines if line["type"] == "entry"] == list(range(made.size))
    shown = cli("verify", "--export", whole, "--key", key).stdout
    assert shown.startswith(f"audit log intact: {made.size} entries of ")
    operations = audit_operations(copy)
    assert [(op["action"], op["detail"]["end"]) for op in operations] == [("export", made.size)]

    middle = tmp_path / "middle.jsonl"
    cli("export", "--since", made.t1.isoformat(), "--until", made.t2.isoformat(), "-o", middle,
        "--data-dir", copy)  # fmt: skip
    entries = [line for line in export_lines(middle) if line["type"] == "entry"]
    assert tuple(line["index"] for line in entries) == made.phase_b
    span = f"entries {made.phase_b[0]}..{made.phase_b[-1]} of "
    assert span in cli("verify", "--export", middle, "--key", key).stdout

    # One entry edited: its index is named.
    edited = tmp_path / "edited.jsonl"
    target = made.phase_b[1]
    rewritten = []
    for line in whole.read_text().splitlines():
        value = json.loads(line)
        if value.get("index") == target:
            value["entry"]["decision"] = "allow"
            line = json.dumps(value, ensure_ascii=False)
        rewritten.append(line + "\n")
    edited.write_text("".join(rewritten))
    failed = cli("verify", "--export", edited, "--key", key, code=1)
    assert f"entry {target}: modified" in failed.stderr

    # Cut off after a whole line: the end line is missing.
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(line + "\n" for line in whole.read_text().splitlines()[:-2]))
    assert "truncated" in cli("verify", "--export", cut, "--key", key, code=1).stderr


def test_an_export_cut_in_the_middle_of_a_line_is_truncated(copy: Path, tmp_path: Path) -> None:
    whole = tmp_path / "whole.jsonl"
    cli("export", "-o", whole, "--data-dir", copy)
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(whole.read_bytes()[:-200])  # mid-way through the last entry line
    failed = cli("verify", "--export", cut, "--key", key_of(copy), code=1)
    assert "truncated" in failed.stderr


# -- report -------------------------------------------------------------------------------


def report_json(*args: str | Path, code: int = 0) -> dict[str, Any]:
    return json.loads(cli("report", "--format", "json", *args, code=code).stdout)  # type: ignore[no-any-return]


def test_report_counts_what_was_decided(made: Made, tmp_path: Path) -> None:
    document = report_json("--data-dir", made.data)
    assert document["verification"]["intact"] is True
    assert document["verification"]["tree_size"] == made.size
    assert document["totals"]["decision"] == made.decisions
    assert document["totals"]["placement"] == made.placements
    assert document["totals"]["bundle"] == 1
    cells = document["decisions"]
    assert sum(c["allow"] + c["deny"] for c in cells) == made.decisions + made.placements
    assert sum(c["allow"] for c in cells) == made.allowed
    assert sum(c["deny"] for c in cells) == made.denied

    period = report_json(
        "--since", made.t1.isoformat(), "--until", made.t2.isoformat(), "--data-dir", made.data
    )
    assert period["entries"] == period["totals"]["decision"] == len(made.phase_b)

    table = cli("report", "--data-dir", made.data).stdout
    assert f"intact, {made.size} entries, checked against" in table
    assert "Decisions by classification and jurisdiction" in table

    rows = list(
        csv.DictReader(
            io.StringIO(cli("report", "--format", "csv", "--data-dir", made.data).stdout)
        )
    )
    decided = sum(int(r["value"]) for r in rows if r["section"] == "decisions")
    assert decided == made.decisions + made.placements

    page = tmp_path / "report.html"
    written = cli("report", "--format", "html", "-o", page, "--data-dir", made.data)
    assert written.stdout == ""
    assert written.stderr.strip() == f"report written to {page}"
    html = page.read_text()
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert not re.search(r"https?://", html), "the report must be one self-contained file"
    assert "Log intact" in html
    # The key the log was verified with is named (here the log's own).
    key_id = key_of(made.data).split("+")[1]
    assert "Verifying keys" in html
    assert key_id in html


def flip_payload_byte(data: Path, index: int, where: bytes | None) -> None:
    """Flip one bit of entry ``index``'s stored payload: in ``where`` (the JSON stays
    valid) or in its first byte (it does not)."""
    with sqlite3.connect(data / "docket.db") as db:
        (payload,) = db.execute(
            "SELECT payload FROM audit_entry WHERE idx = ?", (index,)
        ).fetchone()
        changed = bytearray(payload)
        changed[payload.index(where) if where else 0] ^= 0x01
        db.execute("UPDATE audit_entry SET payload = ? WHERE idx = ?", (bytes(changed), index))
    db.close()


@pytest.mark.parametrize("where", [b"mallory", None], ids=["still-json", "not-json"])
def test_report_on_a_tampered_log_says_not_intact(
    made: Made, copy: Path, where: bytes | None
) -> None:
    flip_payload_byte(copy, made.phase_a[1], where)
    table = cli("report", "--data-dir", copy, code=1)
    assert "NOT INTACT" in table.stdout
    assert f"entry {made.phase_a[1]}: modified" in table.stderr
    document = report_json("--data-dir", copy, code=1)
    assert document["verification"]["intact"] is False
    assert "modified" in document["verification"]["problem"]


# -- redact -------------------------------------------------------------------------------


def test_a_redacted_entry_still_verifies_and_proves(made: Made, copy: Path, tmp_path: Path) -> None:
    key = key_of(copy)
    index = made.phase_a[1]
    signer = tmp_path / "dpo.key"
    redaction = cli("redaction-key", "--new", signer).stdout.strip()
    assert redaction.startswith("docket-redaction+")
    assert cli("redaction-key", signer).stdout.strip() == redaction
    assert "exists" in cli("redaction-key", "--new", signer, code=2).stderr
    done = cli(
        "redact", index, "--reason", "GDPR erasure", "--by", "alice",
        "--redaction-key", signer, "--data-dir", copy,
    )  # fmt: skip
    assert done.stdout.strip() == (
        f"entry {index} redacted; recorded as entry {made.size}, order signed by docket-redaction"
    )
    shown = cli("verify", "--key", key, "--redaction-key", redaction, "--data-dir", copy).stdout
    assert f"redacted entries: {index}\n" in shown
    assert "at the request of alice (GDPR erasure); order signed by docket-redaction" in shown
    verdict = json.loads(
        cli(
            "verify", "--key", key, "--redaction-key", redaction, "--json", "--data-dir", copy
        ).stdout
    )  # fmt: skip
    assert verdict["redacted"] == [index]
    assert verdict["redactions"][0]["reason"] == "GDPR erasure"
    # With the auditor's own --key, the erasure needs the auditor's own --redaction-key.
    refused = cli("verify", "--key", key, "--data-dir", copy, code=1).stderr
    assert f"entry {index}: redaction:" in refused
    assert "pass --redaction-key" in refused
    # Without --key, the keys the log names (said so).
    shown = cli("verify", "--data-dir", copy).stdout
    assert "redactions checked against the redaction keys stored in the log" in shown

    receipt = cli("prove", index, "--data-dir", copy).stdout
    assert json.loads(receipt)["entry"] is None
    (tmp_path / "receipt.json").write_text(receipt)
    checked = cli("verify-receipt", tmp_path / "receipt.json", "--key", key).stdout
    assert "its payload was erased: only its leaf hash is proven" in checked

    record = json.loads(cli("prove", made.size, "--data-dir", copy).stdout)["entry"]
    assert (record["kind"], record["caller"]) == ("redaction", "alice")
    assert record["detail"]["reason"] == "GDPR erasure"
    assert record["detail"]["index"] == index
    assert record["detail"]["order"].startswith("docket-redaction/1\n")
    again = cli(
        "redact", index, "--reason", "x", "--redaction-key", signer, "--data-dir", copy, code=2
    )
    assert "already redacted" in again.stderr


# -- usage errors and help ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["verify", "--db", "sqlite:///{tmp}/nothing.db"], "no audit database at",
                     id="unknown-db"),
        pytest.param(["verify", "--key", "docket.local/x+zz+AAAA", "--data-dir", "{data}"],
                     "the key id must be 8 hex digits", id="malformed-key"),
        pytest.param(["report", "--since", "notadate", "--data-dir", "{data}"],
                     "--since 'notadate': not an ISO 8601 date or time", id="bad-since"),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line_exit_2(
    args: list[str], needle: str, made: Made, tmp_path: Path
) -> None:
    result = docket("audit", *(a.format(tmp=tmp_path, data=made.data) for a in args))
    assert result.returncode == 2, result
    assert needle in assert_one_line(result.stderr)
    assert result.stdout == ""
    assert not (tmp_path / "nothing.db").exists()


@pytest.mark.parametrize("kind", ["postgres-refused", "sqlite-not-a-database"])
def test_an_unusable_database_is_one_line_exit_2(kind: str, tmp_path: Path) -> None:
    if kind == "postgres-refused":
        with socket.socket() as bound:  # bound, never listening: connections are refused
            bound.bind(("127.0.0.1", 0))
            url = f"postgresql+psycopg://docket@127.0.0.1:{bound.getsockname()[1]}/docket"
            cli("verify", "--db", url, code=2)
    else:
        (tmp_path / "junk.db").write_text("not a database\n")
        cli("verify", "--db", f"sqlite:///{tmp_path / 'junk.db'}", code=2)


def test_help() -> None:
    result = docket("audit", "--help")
    assert result.returncode == 0, result.stderr
    for name in audit_group.commands:
        assert name in result.stdout


@pytest.mark.parametrize("command", sorted(audit_group.commands))
def test_each_subcommand_has_help(command: str) -> None:
    shown = cli(command, "--help").stdout
    assert shown.startswith(f"Usage: docket audit {command} ")
    summary = audit_group.commands[command].get_short_help_str(limit=30)
    assert summary.rstrip(".") in " ".join(shown.split())


def test_the_readme_auditor_session_runs(copy: Path, tmp_path: Path) -> None:
    """examples/auditor/session.sh is the README's session; every step must pass."""
    out = tmp_path / "session"
    result = subprocess.run(
        ["bash", str(ROOT / "examples" / "auditor" / "session.sh"), str(copy), str(out)],
        env={**os.environ, "DOCKET": DOCKET},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "audit log intact" in result.stdout
    assert "receipt OK" in result.stdout
    assert "consistent:" in result.stdout
    assert KEY.match((out / "log.pub").read_text().strip())
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")
    for step in ("verify", "report", "export"):
        assert f"caught by {step} " in result.stdout, result.stdout
    assert "caught by verify-receipt: docket: receipt does NOT verify" in result.stdout
    assert "caught by consistency: docket: NOT consistent" in result.stdout
    assert "entry 0: modified: its time column says" in result.stdout
