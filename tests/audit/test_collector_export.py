"""``docket audit export --fleet`` over what a real collector holds (SQLite, the
harness of test_collector_report.py): one export per site, each checked by the
auditor's own ``docket audit verify --export FILE --checkpoint …``, and a manifest with
each site's coverage and cosigned checkpoint; a tampered site is refused with its
reason, a lagging one marked."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from structlog.testing import capture_logs

from audit._collector_store import _erasures
from engine.cli import main as docket_root
from tests.audit.conftest import REDACTION_KEY, REDACTION_KEYS, SITES, T0, WITNESS, Fleet


def docket(*args: str | Path, code: int) -> tuple[str, str]:
    """``docket audit ARGS`` in process, its exit code asserted: stdout and stderr."""
    with capture_logs():
        result = CliRunner().invoke(
            docket_root, ["audit", *(str(a) for a in args)], prog_name="docket"
        )
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"docket audit {args} raised") from result.exception
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout, result.stderr


def export(fleet: Fleet, out: Path, *args: str, code: int) -> tuple[dict[str, dict], str]:
    """``docket audit export --fleet``: the manifest's sites by name, and stderr."""
    _, said = docket(
        "export", "--fleet", "--collector-db", fleet.url, "--out", out, *args, code=code
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "docket-audit-fleet-export/1"
    return {site["site"]: site for site in manifest["sites"]}, said


def verified(fleet: Fleet, out: Path, site: dict) -> str:
    """The site's export checked as an auditor checks any export: its file, the site's
    cosigned checkpoint beside it, the site's own key."""
    (key,) = fleet.logs[site["site"]].verifiers()
    shown, _ = docket(
        "verify", "--export", out / site["export"], "--checkpoint", out / site["checkpoint"],
        "--key", str(key), code=0,
    )  # fmt: skip
    return shown


def test_each_site_is_exported_verifiable_with_a_manifest(fleet: Fleet, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    sites, said = export(fleet, out, "--witness-key", str(WITNESS.verifier()), code=0)
    assert set(sites) == set(SITES)
    for name, site in sites.items():
        assert site["state"] == "complete"
        assert (site["start"], site["end"], site["entries"], site["held"]) == (0, 12, 12, 12)
        assert site["export"] == f"{name}.jsonl"
        assert site["sha256"] == hashlib.sha256((out / site["export"]).read_bytes()).hexdigest()
        assert site["checkpoint_size"] == 12
        assert "collector.test/w1" in site["signatures"]
        assert (out / site["checkpoint"]).read_text() == site["cosigned_checkpoint"]
        shown = verified(fleet, out, site)
        assert "audit log intact: 12 entries of" in shown
        assert f"your checkpoint {out / site['checkpoint']} (size 12)" in shown
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True
    assert manifest["witness_keys"] == [str(WITNESS.verifier())]
    assert said.endswith("fleet: 3 site(s), 36 entries exported to " + f"{out}\n")


def test_a_period_is_chosen_per_site(fleet: Fleet, tmp_path: Path) -> None:
    out = tmp_path / "period"
    # sample_entry(i) is dated T0 + i seconds.
    period = ["--since", "2025-03-01T12:00:03Z", "--until", "2025-03-01T12:00:07Z"]
    sites, _ = export(fleet, out, *period, "--site", "eu-1", code=0)
    assert list(sites) == ["eu-1"]
    assert (sites["eu-1"]["start"], sites["eu-1"]["end"]) == (3, 7)
    assert "entries 3..6 of" in verified(fleet, out, sites["eu-1"])


def test_a_tampered_site_is_refused_with_its_reason_a_lagging_one_marked(
    fleet: Fleet, tmp_path: Path
) -> None:
    with sa.create_engine(fleet.url).begin() as connection:
        connection.execute(
            sa.text("UPDATE collector_entry SET payload = :p WHERE site = 'us-1' AND idx = 7"),
            {"p": b'{"kind":"decision","decision":"allow"}'},
        )
        # eu-2 is cut off: it reported 32 entries, the collector holds 12.
        connection.execute(sa.text("UPDATE collector_site SET head = 32 WHERE name = 'eu-2'"))
    out = tmp_path / "incomplete"
    sites, said = export(fleet, out, code=1)
    assert sites["us-1"]["state"] == "NOT VERIFIED"
    assert sites["us-1"]["export"] is None
    assert "entry 7: modified: site us-1" in sites["us-1"]["problem"]
    assert not (out / "us-1.jsonl").exists()
    assert sites["eu-2"]["state"] == "LAGGING"
    assert (sites["eu-2"]["behind"], sites["eu-2"]["held"]) == (20, 12)
    assert "12 entries of" in verified(fleet, out, sites["eu-2"])  # what is held
    assert sites["eu-1"]["state"] == "complete"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False
    assert said.splitlines()[-1] == (
        "docket: fleet export INCOMPLETE: site eu-2 LAGGING: the site reported 32 entries, "
        "the collector holds 12; site us-1 NOT VERIFIED, not exported: entry 7: modified: "
        "site us-1: the payload is not its leaf's (manifest written to "
        f"{out / 'manifest.json'})"
    )


def test_fleet_export_usage_errors_are_one_line(fleet: Fleet, tmp_path: Path) -> None:
    for args, message in (
        (["--fleet", "--collector-db", fleet.url], "--fleet writes one export per site"),
        (["--fleet", "--out", tmp_path], "--fleet needs --collector-db"),
        (["--fleet", "--collector-db", fleet.url, "--out", tmp_path, "--site", "x"],
         "the collector knows no site x"),
        (["--fleet", "--collector-db", fleet.url, "--out", tmp_path, "--db", "sqlite:///x"],
         "--fleet reads the collector's database: drop --db"),
        (["--out", tmp_path], "--output FILE is needed"),
    ):  # fmt: skip
        _, said = docket("export", *args, code=2)
        assert message in said, said


def test_an_erasure_at_a_site_erases_the_collectors_copy(fleet: Fleet, tmp_path: Path) -> None:
    """A site redacts an entry it has already pushed: the collector's copy of the payload
    must go too (an erasure that stays at the collector is no erasure), and the fleet
    export then carries it as erased, verifiable with the site's redaction key only."""
    log = fleet.logs["eu-1"]
    erased = log.store.entry(4)
    assert erased is not None
    assert erased.payload is not None
    log.redact(4, reason="erasure request", requested_by="dpo", now=T0, signer=REDACTION_KEY)
    log.checkpoint()
    fleet.push("eu-1")
    held = {index: payload for index, payload, _ in fleet.collector.store.entries("eu-1", 0, 13)}
    assert held[4] is None
    assert erased.payload not in held.values()
    assert held[12] is not None  # the redaction entry itself, with its order
    for other in ("eu-2", "us-1"):  # a site's redaction erases nothing of another site's
        assert all(p is not None for _, p, _ in fleet.collector.store.entries(other, 0, 12))
    key = str(REDACTION_KEYS[0])
    out = tmp_path / "with-key"
    sites, _ = export(fleet, out, "--site", "eu-1", "--redaction-key", key, code=0)
    assert sites["eu-1"]["state"] == "complete"
    assert sites["eu-1"]["entries"] == 13
    (site_key,) = fleet.logs["eu-1"].verifiers()
    shown, _ = docket(
        "verify", "--export", out / sites["eu-1"]["export"],
        "--checkpoint", out / sites["eu-1"]["checkpoint"],
        "--key", str(site_key), "--redaction-key", key, code=0,
    )  # fmt: skip
    assert "audit log intact: 13 entries of" in shown
    # Without the site's redaction key the erased entry cannot be vouched for.
    sites, _ = export(fleet, tmp_path / "without", "--site", "eu-1", code=1)
    assert sites["eu-1"]["state"] == "NOT VERIFIED"
    assert "entry 4" in sites["eu-1"]["problem"], sites["eu-1"]["problem"]


def _redaction(index: object, leaf: object = "ab" * 32) -> bytes:
    detail = {"index": index, "leaf_hash": leaf, "order": "…", "reason": "r"}
    return json.dumps({"kind": "redaction", "detail": detail}, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("payload", "erased"),
    [
        (_redaction(3), [(3, bytes.fromhex("ab" * 32))]),
        (_redaction(10), []),  # not an earlier entry (the push starts at 10)
        (_redaction(-1), []),
        (_redaction("3"), []),
        (_redaction(True), []),
        (_redaction(3, "zz" * 32), []),
        (_redaction(3, "ab"), []),
        (b'{"kind":"decision","detail":{"index":3,"leaf_hash":"' + b"ab" * 32 + b'"}}', []),
        (b'{"kind":"redaction"', []),  # not JSON
        (None, []),  # erased itself
    ],
    ids=["earlier", "later", "negative", "text", "bool", "not-hex", "short", "decision",
         "broken", "erased"],
)  # fmt: skip
def test_only_a_redaction_naming_an_earlier_entry_erases(
    payload: bytes | None, erased: list[tuple[int, bytes]]
) -> None:
    push = SimpleNamespace(old_size=10, entries=[(payload, b"\0" * 32)])
    assert _erasures(push) == erased  # type: ignore[arg-type]
