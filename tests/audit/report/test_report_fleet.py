"""The fleet's report: per site and together, each site's coverage shown; a site that
lags is marked and makes the report incomplete; a site whose data does not verify is
excluded from the totals, with its reason, in every format."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

from report_samples import GENERATED, build

from audit._report import FleetReport, SiteSection, fleet_report, render


def _fleet() -> FleetReport:
    now = GENERATED
    return fleet_report(
        [
            SiteSection.judge(
                "eu-1", build(), entries=16, checkpoint=16, cosigned=now, head=16, now=now
            ),
            SiteSection.judge(
                "eu-2",
                build(),
                entries=16,
                checkpoint=16,
                cosigned=now - timedelta(seconds=5),
                head=36,
                now=now,
            ),
            SiteSection.judge(
                "us-1",
                None,
                entries=12,
                checkpoint=12,
                cosigned=now,
                head=12,
                now=now,
                problem="entry 7: modified: site us-1: the payload is not its leaf's",
            ),
        ],
        since=None,
        until=None,
        generated_at=now,
    )


def test_each_site_has_its_state_and_only_verified_sites_are_counted() -> None:
    fleet = _fleet()
    assert [(s.site, s.state, s.behind) for s in fleet.sites] == [
        ("eu-1", "complete", 0),
        ("eu-2", "LAGGING", 20),
        ("us-1", "NOT VERIFIED", 0),
    ]
    one = build()
    assert fleet.total.entries == 2 * one.entries  # us-1 is left out
    assert fleet.total.allowed == 2 * one.allowed
    assert not fleet.total.status.intact
    assert fleet.total.status.problem == (
        "site us-1 NOT VERIFIED, excluded from the totals: "
        "entry 7: modified: site us-1: the payload is not its leaf's"
    )
    assert not fleet.complete
    reasons = [(g.log, g.first, g.last) for g in fleet.total.gaps]
    assert reasons == [("eu-2", 16, 35), ("us-1", 0, 11)]


def test_a_site_whose_last_cosignature_is_old_lags_too() -> None:
    old = GENERATED - timedelta(hours=1)
    site = SiteSection.judge(
        "eu-3", build(), entries=16, checkpoint=16, cosigned=old, head=16, now=GENERATED
    )
    assert site.state == "LAGGING"
    assert site.problem == "last cosigned 3,600 s ago: it may have entries the collector lacks"


def test_the_table_and_page_show_every_sites_coverage() -> None:
    table = render(_fleet(), "table")
    assert "Docket fleet residency and compliance report" in table
    rows = {
        line.split()[0]: line.split() for line in table.splitlines() if line[:3] in ("eu-", "us-")
    }
    assert rows["eu-1"][1] == "complete"
    assert rows["eu-2"][1:3] == ["LAGGING", "16"]
    assert rows["us-1"][1:3] == ["NOT", "VERIFIED"]
    assert "site eu-2 entries 16..35 not covered" in table
    assert "INCOMPLETE" in table
    page = render(_fleet(), "html")
    assert 'id="sites"' in page
    assert "NOT VERIFIED" in page
    assert "LAGGING" in page


def test_json_and_csv_hold_each_sites_report_and_coverage() -> None:
    document = json.loads(render(_fleet(), "json"))
    assert document["report"] == "docket-fleet-residency"
    assert document["coverage"]["complete"] is False
    sites = {site["site"]: site for site in document["sites"]}
    assert sites["eu-2"]["coverage"] == {
        "state": "LAGGING",
        "problem": "the site reported 36 entries, the collector holds 16",
        "entries": 16,
        "checkpoint": 16,
        "cosigned": "2025-04-01T08:29:55Z",
        "head": 36,
        "behind": 20,
        "first_entry": "2025-03-01T12:00:00Z",
        "last_entry": "2025-03-01T12:15:00Z",
    }
    assert sites["eu-2"]["report"]["entries"] == 16
    assert sites["us-1"]["report"] is None
    rows = list(csv.DictReader(io.StringIO(render(_fleet(), "csv"), newline="")))
    assert {r["log"] for r in rows} == {"", "eu-1", "eu-2", "us-1"}
    state = {
        r["log"]: r["value"] for r in rows if r["section"] == "site" and r["metric"] == "state"
    }
    assert state == {"eu-1": "complete", "eu-2": "LAGGING", "us-1": "NOT VERIFIED"}


def test_a_site_that_forked_counts_but_leaves_the_record_in_doubt() -> None:
    fork = "two roots for size 16"
    site = SiteSection.judge(
        "eu-4", build(), entries=16, checkpoint=16, cosigned=GENERATED, head=16, now=GENERATED,
        fork=fork,
    )  # fmt: skip
    fleet = fleet_report([site], since=None, until=None, generated_at=GENERATED)
    assert (site.state, site.problem) == ("FORKED", fork)
    assert fleet.total.entries == 16
    assert not fleet.complete
