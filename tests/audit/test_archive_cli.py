"""``docket audit archive``, ``prune`` and ``verify --archives`` as an operator runs
them, on a log written the way a server writes it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from structlog.testing import capture_logs

from audit import Store
from engine.cli import main as docket_root
from tests.audit.conftest import SealedLog, build_log
from tests.audit.test_audit_cli import assert_one_line


def run(*args: str | Path, code: int = 0, env: dict[str, str] | None = None) -> str:
    """``docket audit ARGS`` in process; the exit code asserted; stdout (or stderr)."""
    with capture_logs():
        result = CliRunner().invoke(
            docket_root, ["audit", *(str(a) for a in args)], prog_name="docket", env=env
        )
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"docket audit {args} raised") from result.exception
    assert result.exit_code == code, (result.stdout, result.stderr)
    if code:
        return assert_one_line(result.stderr)
    return result.stdout


@pytest.fixture
def sealed(tmp_path: Path) -> SealedLog:
    log = build_log(tmp_path / "data", redact=[3])
    log.store.close()
    return log


def at(sealed: SealedLog, *, keys: bool = True) -> list[str | Path]:
    """Where the log is (and its signing keys, for the commands that take them)."""
    data = sealed.path.parent
    return ["--data-dir", data, *(["--keys", data / "keys"] if keys else [])]


def test_archive_prune_and_verify_with_the_archives(sealed: SealedLog, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    shown = run("archive", "--to", archive, "--up-to", 30, *at(sealed))
    assert shown.startswith(f"archived entries 0..24 to {archive}/segment-0-24 (")
    assert shown.endswith("verified against the checkpoint of size 25\n")
    again = run("archive", "--to", archive, "--up-to", 30, *at(sealed), code=2)
    assert "nothing to archive: no signed checkpoint between entry 25 and entry 31" in again

    empty = tmp_path / "empty"
    refused = run("prune", "--archived-in", empty, *at(sealed), code=2)
    assert "no archived segment in" in refused
    assert "nothing is pruned without a verified archive" in refused
    assert "24 entries" not in run("verify", *at(sealed, keys=False))  # nothing was pruned

    pruned = run("prune", "--archived-in", archive, *at(sealed))
    assert pruned == f"pruned 24 payloads of entries 0..24 (archived in {archive}/segment-0-24)\n"
    missing = run("verify", *at(sealed, keys=False), code=1)
    assert "entry 0: missing: its payload was pruned after archival" in missing
    intact = run("verify", "--archives", archive, *at(sealed, keys=False))
    assert intact.startswith("audit log intact: ")
    assert (
        f"note: archived entries 0..24 verified in 1 segment(s) of {archive}; 24 payloads "
        "pruned from the live log are held there" in intact
    )
    verdict = json.loads(run("verify", "--archives", archive, "--json", *at(sealed, keys=False)))
    assert (verdict["intact"], verdict["pruned"], verdict["redacted"]) == (True, 24, [3])
    assert run("prune", "--archived-in", archive, *at(sealed)).startswith("nothing to prune")

    entries = archive / "segment-0-24" / "entries.jsonl"
    entries.write_bytes(entries.read_bytes().replace(b"user-7", b"user-8", 1))
    caught = run("verify", "--archives", archive, *at(sealed, keys=False), code=1)
    assert "archive segment-0-24: entries.jsonl does not hash to its manifest" in caught
    refused = run("prune", "--archived-in", archive, *at(sealed), code=1)
    assert "nothing pruned" in refused


def test_retention_archives_what_is_older(sealed: SealedLog, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    unset = run("archive", "--to", archive, "--retention", *at(sealed), code=2)
    assert "retention_days is not set" in unset
    # The standard log's entries are dated March 2025: all older than 30 days.
    shown = run(
        "archive", "--to", archive, "--retention", *at(sealed),
        env={"DOCKET_RETENTION_DAYS": "30"},
    )  # fmt: skip
    assert shown.startswith(f"archived entries 0..40 to {archive}/segment-0-40 ")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--to", "s3://", "--up-to", "3"], "s3://: not an s3://bucket/prefix URL"),
        (["--to", "{tmp}/a"], "give exactly one of --before DATE, --up-to INDEX, --retention"),
        (["--to", "{tmp}/a", "--up-to", "3", "--before", "2025-01-01"], "exactly one of"),
        (["--to", "{tmp}/a", "--before", "yesterday"], "--before 'yesterday': not an ISO 8601"),
    ],
)
def test_archive_usage_errors_are_one_line(
    args: list[str], needle: str, sealed: SealedLog, tmp_path: Path
) -> None:
    line = run("archive", *(a.format(tmp=tmp_path) for a in args), *at(sealed), code=2)
    assert needle in line


def test_prune_refuses_another_logs_archive(sealed: SealedLog, tmp_path: Path) -> None:
    other = build_log(tmp_path / "other")
    other.store.close()
    archive = tmp_path / "archive"
    run("archive", "--to", archive, "--up-to", 9, *at(other))
    refused = run("prune", "--archived-in", archive, *at(sealed), code=1)
    assert refused.startswith("docket: archive or log NOT intact, nothing pruned: ")
    assert "archive segment-0-9" in refused
    store = Store(sealed.url, create=False)
    try:
        erased = [row.idx for row in store.entries(0, 10) if row.payload is None]
    finally:
        store.close()
    assert erased == [3]  # the redacted one: nothing was pruned


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real S3 endpoint over HTTP (moto's server, on a free port) with an empty
    bucket; boto3 is pointed at it by the environment, as an operator would."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for name, value in {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "docket-test",
        "AWS_SECRET_ACCESS_KEY": "docket-test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3").create_bucket(Bucket="docket-archive")
    yield "s3://docket-archive/site-a"
    server.stop()


def test_an_s3_archive_round_trip(sealed: SealedLog, s3: str) -> None:
    import boto3

    assert run("archive", "--to", s3, "--up-to", 9, *at(sealed)).startswith(
        f"archived entries 0..9 to {s3}/segment-0-9 ("
    )
    assert run("archive", "--to", s3, "--up-to", 30, *at(sealed)).startswith(
        f"archived entries 10..24 to {s3}/segment-10-24 ("
    )
    client = boto3.client("s3")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="docket-archive")["Contents"]]
    assert "site-a/segment-10-24/manifest.json" in keys
    assert run("prune", "--archived-in", s3, *at(sealed)) == (
        f"pruned 9 payloads of entries 0..9 (archived in {s3}/segment-0-9)\n"
        f"pruned 15 payloads of entries 10..24 (archived in {s3}/segment-10-24)\n"
    )
    assert "entry 0: missing" in run("verify", *at(sealed, keys=False), code=1)
    intact = run("verify", "--archives", s3, *at(sealed, keys=False))
    assert f"verified in 2 segment(s) of {s3}; 24 payloads pruned" in intact

    key = "site-a/segment-0-9/entries.jsonl"
    body = client.get_object(Bucket="docket-archive", Key=key)["Body"].read()
    client.put_object(Bucket="docket-archive", Key=key, Body=body.replace(b"user-1", b"user-2", 1))
    caught = run("verify", "--archives", s3, *at(sealed, keys=False), code=1)
    assert "archive segment-0-9: entries.jsonl does not hash to its manifest" in caught


def test_a_report_over_a_pruned_log_needs_its_archive(sealed: SealedLog, tmp_path: Path) -> None:
    """Pruned payloads are read back from the verified archive, so the period is
    reported in full; without the archive they are reported as not covered (exit 1),
    never as a period without decisions; a tampered archive is not used."""
    before = tmp_path / "before.json"
    run("report", "--format", "json", "-o", before, *at(sealed, keys=False))
    full = json.loads(before.read_text())
    archive = tmp_path / "archive"
    run("archive", "--to", archive, "--up-to", 30, *at(sealed))
    run("prune", "--archived-in", archive, *at(sealed))

    after = tmp_path / "after.json"
    run("report", "--archives", archive, "--format", "json", "-o", after, *at(sealed, keys=False))
    shown = json.loads(after.read_text())
    assert shown["coverage"] == {"complete": True, "not_covered": 0, "gaps": []}
    for section in ("redacted", "decisions", "denials", "credentials"):
        assert shown[section] == full[section], section
    # Archiving and pruning are recorded in the log: two `audit` entries more.
    assert shown["totals"] == {**full["totals"], "audit": full["totals"]["audit"] + 2}
    assert shown["entries"] == full["entries"] + 2
    assert "archived entries 0..24 verified in 1 segment(s)" in shown["verification"]["checkpoint"]

    blind = tmp_path / "blind.json"
    said = run("report", "--format", "json", "-o", blind, *at(sealed, keys=False), code=1)
    assert "report INCOMPLETE: 24 entries of this period could not be read" in said
    partial = json.loads(blind.read_text())
    assert partial["verification"]["intact"] is True
    assert partial["coverage"]["complete"] is False
    assert partial["coverage"]["not_covered"] == 24
    reason = "payloads pruned after archival; no archive given holds them (pass --archives)"
    # Entry 3 was erased by a redaction order before: it is redacted, not a gap.
    assert partial["coverage"]["gaps"] == [
        {"first": 0, "last": 2, "reason": reason},
        {"first": 4, "last": 24, "reason": reason},
    ]
    assert partial["entries"] == shown["entries"]
    assert partial["redacted"] == full["redacted"]
    table = run("report", *at(sealed, keys=False), code=1)
    assert "report INCOMPLETE" in table

    entries = archive / "segment-0-24" / "entries.jsonl"
    entries.write_bytes(entries.read_bytes().replace(b"user-7", b"user-8", 1))
    tampered = tmp_path / "tampered.json"
    said = run("report", "--archives", archive, "-o", tampered, *at(sealed, keys=False), code=1)
    assert "archive segment-0-24: entries.jsonl does not hash to its manifest" in said
    assert "user-8" not in tampered.read_text()


def _entry_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if '"type": "entry"' in line]


def test_an_export_over_a_pruned_period_reads_its_archive(
    sealed: SealedLog, tmp_path: Path
) -> None:
    """An export over a pruned period takes the pruned payloads (and their times) from
    the verified archive: its entries are those of the export made before pruning, and
    it verifies. Without the archive it is refused naming the pruned entries, never
    written short."""
    period = ["--since", "2025-03-01T12:00:05Z", "--until", "2025-03-01T12:00:35Z"]
    before, whole_before = tmp_path / "before.jsonl", tmp_path / "whole-before.jsonl"
    run("export", *period, "-o", before, *at(sealed, keys=False))
    run("export", "-o", whole_before, *at(sealed, keys=False))
    archive = tmp_path / "archive"
    run("archive", "--to", archive, "--up-to", 30, *at(sealed))
    run("prune", "--archived-in", archive, *at(sealed))

    after, whole_after = tmp_path / "after.jsonl", tmp_path / "whole-after.jsonl"
    run("export", *period, "--archives", archive, "-o", after, *at(sealed, keys=False))
    assert _entry_lines(after) == _entry_lines(before)
    assert len(_entry_lines(after)) == 30
    run("export", "--archives", archive, "-o", whole_after, *at(sealed, keys=False))
    # The whole log: the entries before, then the archive's and the prune's records.
    assert _entry_lines(whole_after)[:41] == _entry_lines(whole_before)
    for export in (after, whole_after):
        assert run("verify", "--export", export).startswith("audit log intact: ")

    refused = run("export", *period, "-o", tmp_path / "short.jsonl", *at(sealed), code=1)
    assert refused == (
        "docket: cannot export that period: entries 0..2, 4..24 were pruned after archival and "
        "no archive given holds them, so their time is unknown and the period may include "
        "them; pass --archives with their archive"
    )
    assert not (tmp_path / "short.jsonl").exists()
    whole = run("export", "-o", tmp_path / "short.jsonl", *at(sealed), code=1)
    assert "entries 0..2, 4..24 were pruned after archival" in whole
    # A period after the pruned entries needs no archive.
    later = tmp_path / "later.jsonl"
    run("export", "--since", "2025-03-01T12:00:30Z", "-o", later, *at(sealed))
    assert run("verify", "--export", later).startswith("audit log intact: ")

    entries = archive / "segment-0-24" / "entries.jsonl"
    entries.write_bytes(entries.read_bytes().replace(b"user-7", b"user-8", 1))
    caught = run("export", "--archives", archive, "-o", tmp_path / "t.jsonl", *at(sealed), code=1)
    assert "archive segment-0-24: entries.jsonl does not hash to its manifest" in caught
