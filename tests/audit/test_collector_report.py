"""``docket audit report --fleet`` over what a real collector holds (SQLite; the
PostgreSQL collector of real processes: tests/e2e/test_fleet.py): three site logs
pushed with proofs and cosigned, one of them cut off with a backlog it reported,
another tampered with at the collector. Each is shown per site; the tampered one is
left out of the totals with its reason; the lagging one marks the report INCOMPLETE."""

from __future__ import annotations

import json

import sqlalchemy as sa
from click.testing import CliRunner
from structlog.testing import capture_logs

from engine.cli import main as docket_root
from tests.audit.conftest import SITES, WITNESS, Fleet


def report(fleet: Fleet, *args: str, code: int) -> tuple[dict[str, object], str]:
    """``docket audit report --fleet … --format json``: the document and stderr."""
    with capture_logs():
        result = CliRunner().invoke(
            docket_root,
            ["audit", "report", "--fleet", "--collector-db", fleet.url, "--format", "json", *args],
            prog_name="docket",
        )
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError("docket audit report --fleet raised") from result.exception
    assert result.exit_code == code, (result.stdout, result.stderr)
    return json.loads(result.stdout), result.stderr


def test_a_complete_fleet_is_reported_per_site_and_together(fleet: Fleet) -> None:
    document, _ = report(fleet, "--witness-key", str(WITNESS.verifier()), code=0)
    sites = {site["site"]: site for site in document["sites"]}  # type: ignore[attr-defined]
    assert set(sites) == set(SITES)
    for site in sites.values():
        assert site["coverage"]["state"] == "complete"
        assert (site["coverage"]["entries"], site["coverage"]["checkpoint"]) == (12, 12)
        assert site["report"]["entries"] == 12
    assert document["entries"] == 36
    assert document["coverage"] == {"complete": True, "not_covered": 0, "gaps": []}
    assert document["verification"]["intact"] is True
    one, _ = report(fleet, "--site", "eu-1", code=0)
    assert [site["site"] for site in one["sites"]] == ["eu-1"]  # type: ignore[index]
    assert one["entries"] == 12


def test_a_partitioned_site_is_shown_lagging_never_complete(fleet: Fleet) -> None:
    # eu-2 is cut off: it keeps logging, reports its head, the entries do not arrive.
    fleet.grow("eu-2", 20)
    with sa.create_engine(fleet.url).begin() as connection:  # what eu-2's heartbeat said
        connection.execute(sa.text("UPDATE collector_site SET head = 32 WHERE name = 'eu-2'"))
    document, said = report(fleet, code=1)
    sites = {site["site"]: site for site in document["sites"]}  # type: ignore[attr-defined]
    assert sites["eu-2"]["coverage"]["state"] == "LAGGING"
    assert sites["eu-2"]["coverage"]["behind"] == 20
    assert sites["eu-2"]["report"]["entries"] == 12  # what is held still counts
    assert document["entries"] == 36
    assert document["coverage"]["complete"] is False
    assert document["coverage"]["gaps"] == [
        {
            "log": "eu-2",
            "first": 12,
            "last": 31,
            "reason": "LAGGING: the site reported 32 entries, the collector holds 12",
        }
    ]
    assert "report INCOMPLETE" in said
    assert "site eu-2 entries 12..31 not covered" in said


def test_a_tampered_entry_at_the_collector_excludes_its_site_with_the_reason(
    fleet: Fleet,
) -> None:
    with sa.create_engine(fleet.url).begin() as connection:
        connection.execute(
            sa.text("UPDATE collector_entry SET payload = :p WHERE site = 'us-1' AND idx = 7"),
            {"p": b'{"kind":"decision","decision":"allow"}'},
        )
    document, said = report(fleet, code=1)
    sites = {site["site"]: site for site in document["sites"]}  # type: ignore[attr-defined]
    assert sites["us-1"]["coverage"]["state"] == "NOT VERIFIED"
    assert sites["us-1"]["report"] is None
    assert "entry 7: modified: site us-1" in sites["us-1"]["coverage"]["problem"]
    assert document["entries"] == 24  # eu-1 and eu-2 only
    assert document["verification"]["intact"] is False
    assert said.startswith("docket: site us-1 NOT VERIFIED, excluded from the totals: entry 7")


def test_fleet_usage_errors_are_one_line(fleet: Fleet) -> None:
    for args, message in (
        (["--site", "nowhere"], "the collector knows no site nowhere"),
        (["--db", "sqlite:///x.db"], "--fleet reads the collector's database"),
    ):
        with capture_logs():
            result = CliRunner().invoke(
                docket_root,
                ["audit", "report", "--fleet", "--collector-db", fleet.url, *args],
                prog_name="docket",
            )
        assert result.exit_code == 2, result.stderr
        assert message in result.stderr
    with capture_logs():
        result = CliRunner().invoke(docket_root, ["audit", "report", "--fleet"], prog_name="docket")
    assert result.exit_code == 2
    assert "--fleet needs --collector-db" in result.stderr
