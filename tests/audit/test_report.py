"""The residency and compliance report: what it counts, what it flags, and that every
format renders it faithfully (and safely: entries carry caller-supplied strings)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from audit._entry import Entry
from audit._report import (
    CSV_COLUMNS,
    DEFAULT_DENY,
    NO_REASON,
    Format,
    Report,
    ReportStatus,
    build_report,
    render,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
GENERATED = datetime(2025, 4, 1, 8, 30, tzinfo=UTC)
INTACT = ReportStatus(
    intact=True,
    tree_size=42,
    checkpoint="docket/3f2a size 42 root AAAA",
    problem=None,
    redacted=(7,),
)
XSS = "<script>alert(1)</script>"
FORMATS: tuple[Format, ...] = ("table", "json", "csv", "html")


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def decision(
    minutes: int,
    *,
    kind: str = "decision",
    decision: str = "allow",
    classification: str | None = "restricted",
    residency: tuple[str, ...] = ("eu",),
    jurisdiction: str | None = "eu",
    policies: tuple[str, ...] = (),
    subject: str = 'Docket::User::"alice"',
    detail: dict[str, Any] | None = None,
) -> Entry:
    return Entry.model_validate(
        {
            "kind": kind,
            "time": at(minutes),
            "subject": subject,
            "action": 'Docket::Action::"read"',
            "resource": 'Docket::Data::"patient-records-eu"',
            "classification": classification,
            "residency": residency,
            "jurisdiction": jurisdiction,
            "decision": decision,
            "policies": policies,
            "detail": {"decision_id": f"d-{minutes}"} if detail is None else detail,
        }
    )


def credential(minutes: int, kind: str, decision: str, **detail: Any) -> Entry:
    return Entry.model_validate(
        {"kind": kind, "time": at(minutes), "decision": decision, "detail": detail}
    )


def placement(minutes: int, sites: list[Any], *, jurisdiction: str = "eu") -> Entry:
    return decision(
        minutes,
        kind="placement",
        jurisdiction=jurisdiction,
        subject='Data::"training-corpus"',
        detail={"decision_id": f"p-{minutes}", "allowed": sites},
    )


def sample() -> list[tuple[int, Entry | None]]:
    """A small log with something in every section, including one violation of each sort."""
    entries: list[Entry | None] = [
        decision(0),  # 0 restricted/eu allow, compliant
        decision(1, jurisdiction="us"),  # 1 VIOLATION: restricted read from the US
        decision(2, jurisdiction="us", decision="deny", policies=("residency-guard",)),  # 2
        decision(3, classification="public", residency=(), jurisdiction="us"),  # 3
        decision(4, classification=None, residency=(), jurisdiction=None),  # 4 unclassified
        decision(5, kind="admission", decision="deny"),  # 5 default deny
        decision(
            6,
            classification="confidential",
            decision="deny",
            policies=("residency-guard", "posture"),
        ),  # 6
        decision(7, classification="confidential", residency=("eu", "uk"), jurisdiction=None),
        # 7 VIOLATION: jurisdiction unknown
        None,  # 8 redacted
        placement(
            9,
            [
                {"site": "eu-west-1-cloud", "jurisdiction": "eu", "region": "eu-west-1"},
                {"site": "us-east-1-cloud", "jurisdiction": "us", "region": "us-east-1"},
            ],
        ),  # 9 VIOLATION: an allowed site in the US
        credential(10, "attestation", "allow"),
        credential(11, "attestation", "deny", reason="pcr mismatch"),
        credential(12, "attestation", "deny", reason="pcr mismatch"),
        credential(13, "certificate", "allow"),
        credential(14, "certificate", "deny"),
        Entry(kind="bundle", time=at(15), decision="allow", bundle_version="v1"),
    ]
    return list(enumerate(entries))


def build(
    entries: list[tuple[int, Entry | None]] | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    status: ReportStatus = INTACT,
) -> Report:
    return build_report(
        sample() if entries is None else entries,
        since=since,
        until=until,
        status=status,
        generated_at=GENERATED,
    )


# -- building --------------------------------------------------------------------------


def test_totals_count_every_kind_and_redacted_entries_apart() -> None:
    report = build()
    totals = dict(report.totals)
    assert totals == {
        "decision": 7,
        "placement": 1,
        "admission": 1,
        "attestation": 3,
        "certificate": 2,
        "bundle": 1,
        "audit": 0,
        "redaction": 0,
    }
    assert report.redacted == 1
    assert report.entries == 16
    assert (report.first_time, report.last_time) == (at(0), at(15))


def test_decisions_by_classification_and_jurisdiction() -> None:
    cells = {(c.classification, c.jurisdiction): (c.allow, c.deny) for c in build().decisions}
    assert cells == {
        ("public", "us"): (1, 0),
        ("confidential", "eu"): (0, 1),
        ("confidential", "unknown"): (1, 0),
        ("restricted", "eu"): (2, 1),  # decision 0, placement 9; admission 5 denied
        ("restricted", "us"): (1, 1),
        ("unclassified", "unknown"): (1, 0),
    }


def test_decision_groups_are_ordered_by_classification_then_jurisdiction() -> None:
    order = [(c.classification, c.jurisdiction) for c in build().decisions]
    assert order == [
        ("public", "us"),
        ("confidential", "eu"),
        ("confidential", "unknown"),
        ("restricted", "eu"),
        ("restricted", "us"),
        ("unclassified", "unknown"),
    ]


def test_residency_findings_flag_exactly_the_allowed_entries_outside() -> None:
    findings = build().findings
    assert [(f.index, f.jurisdiction, f.site) for f in findings] == [
        (1, "us", None),
        (7, None, None),
        (9, "us", "us-east-1-cloud"),
    ]
    first = findings[0]
    assert first.kind == "decision"
    assert first.subject == 'Docket::User::"alice"'
    assert first.classification == "restricted"
    assert first.residency == ("eu",)
    assert first.decision_id == "d-1"
    assert first.time == at(1)
    assert findings[2].decision_id == "p-9"


@pytest.mark.parametrize(
    ("entry", "flagged"),
    [
        pytest.param(decision(0, jurisdiction="eu"), False, id="restricted-inside"),
        pytest.param(decision(0, jurisdiction="us"), True, id="restricted-outside"),
        pytest.param(
            decision(0, classification="confidential", jurisdiction="us"),
            True,
            id="confidential-outside",
        ),
        pytest.param(
            decision(0, jurisdiction="us", decision="deny"), False, id="deny-outside-is-not"
        ),
        # The residency rule is the policies' one: a declared residency binds whatever
        # the classification (issue 13: the report and placement disagreed on this).
        pytest.param(
            decision(0, classification="internal", jurisdiction="us"),
            True,
            id="internal-outside",
        ),
        pytest.param(
            decision(0, classification="public", jurisdiction=None), True, id="public-unknown"
        ),
        pytest.param(
            decision(0, classification=None, jurisdiction="apac"), True, id="unclassified-outside"
        ),
        pytest.param(
            decision(0, classification="internal", jurisdiction="eu"), False, id="internal-inside"
        ),
        pytest.param(
            decision(0, classification="public", residency=(), jurisdiction=None),
            False,
            id="no-residency-unknown-jurisdiction",
        ),
        pytest.param(decision(0, residency=(), jurisdiction="us"), False, id="no-residency"),
        pytest.param(decision(0, jurisdiction=None), True, id="unknown-jurisdiction"),
        pytest.param(
            decision(0, residency=("eu", "uk"), jurisdiction="uk"), False, id="second-of-two"
        ),
        pytest.param(
            decision(0, kind="admission", jurisdiction="apac"), True, id="admission-outside"
        ),
        pytest.param(
            Entry(
                kind="attestation",
                time=T0,
                decision="allow",
                classification="restricted",
                residency=("eu",),
                jurisdiction="us",
            ),
            False,
            id="credential-kinds-not-held-to-residency",
        ),
    ],
)
def test_residency_rule(entry: Entry, flagged: bool) -> None:
    assert build([(0, entry)]).violations == int(flagged)


def test_a_placement_is_one_finding_naming_its_best_ranked_site_outside() -> None:
    entry = placement(
        0,
        [
            {"site": "eu-west-1-cloud", "jurisdiction": "eu"},
            {"site": "us-east-1-cloud", "jurisdiction": "us"},
            {"site": "ap-1-edge", "jurisdiction": "apac"},
            {"site": "mystery"},
            "not a site record",
        ],
    )
    (finding,) = build([(3, entry)]).findings
    assert (finding.index, finding.site, finding.jurisdiction) == (3, "us-east-1-cloud", "us")
    assert finding.sites == ("us-east-1-cloud", "ap-1-edge", "mystery", "(unnamed site)")
    assert finding.decision_id == "p-0"


@pytest.mark.parametrize("classification", ["public", "internal", "confidential", "restricted"])
def test_a_placement_outside_its_residency_is_flagged_whatever_its_classification(
    classification: str,
) -> None:
    entry = decision(
        0,
        kind="placement",
        classification=classification,
        detail={"allowed": [{"site": "uk-south-1-edge-lon", "jurisdiction": "uk"}]},
        jurisdiction="uk",
    )
    assert [(f.site, f.sites) for f in build([(0, entry)]).findings] == [
        ("uk-south-1-edge-lon", ("uk-south-1-edge-lon",))
    ]


def test_a_placement_inside_its_residency_or_without_one_is_not_flagged() -> None:
    inside = placement(0, [{"site": "eu-west-1-cloud", "jurisdiction": "eu"}])
    unconstrained = decision(
        1,
        kind="placement",
        classification="confidential",
        residency=(),
        jurisdiction="us",
        detail={"allowed": [{"site": "us-east-1-cloud", "jurisdiction": "us"}]},
    )
    assert build([(0, inside), (1, unconstrained)]).findings == ()


def test_a_placement_outside_twice_over_is_one_finding() -> None:
    # The best site is outside and is the entry's own jurisdiction too: one decision, one row.
    entry = placement(
        0,
        [
            {"site": "us-east-1-cloud", "jurisdiction": "us"},
            {"site": "uk-south-1-cloud", "jurisdiction": "uk"},
        ],
        jurisdiction="us",
    )
    findings = build([(0, entry)]).findings
    assert [(f.site, f.jurisdiction, f.sites) for f in findings] == [
        ("us-east-1-cloud", "us", ("us-east-1-cloud", "uk-south-1-cloud"))
    ]


def test_placement_on_an_outside_site_is_flagged_once() -> None:
    # The chosen site is the entry's jurisdiction and the first allowed site.
    entry = placement(0, [{"site": "us-east-1-cloud", "jurisdiction": "us"}], jurisdiction="us")
    assert [(f.site, f.jurisdiction) for f in build([(0, entry)]).findings] == [
        ("us-east-1-cloud", "us")
    ]


def test_placement_whose_own_jurisdiction_is_outside_is_flagged_without_sites() -> None:
    entry = placement(0, [], jurisdiction="us")
    assert [(f.site, f.jurisdiction) for f in build([(0, entry)]).findings] == [(None, "us")]


def test_denials_by_policy_count_each_determining_policy() -> None:
    assert build().denials == (
        ("residency-guard", 2),
        (DEFAULT_DENY, 1),
        ("posture", 1),
    )


def test_credentials_issued_and_refused_with_reasons() -> None:
    attestation, certificate = build().credentials
    assert (attestation.kind, attestation.issued, attestation.refused) == ("attestation", 1, 2)
    assert attestation.refusals == (("pcr mismatch", 2),)
    assert (certificate.kind, certificate.issued, certificate.refused) == ("certificate", 1, 1)
    assert certificate.refusals == ((NO_REASON, 1),)


def test_refusal_without_reason_falls_back_to_policies() -> None:
    entry = Entry(kind="certificate", time=T0, decision="deny", policies=("ca-expired", "tier"))
    (_, certificate) = build([(0, entry)]).credentials
    assert certificate.refusals == (("ca-expired, tier", 1),)


def test_since_until_is_half_open() -> None:
    report = build(since=at(1), until=at(7))
    assert sum(count for _, count in report.totals) == 6  # entries 1..6
    assert [f.index for f in report.findings] == [1]
    assert report.redacted == 0  # entry 8 lies after entry 7
    assert (report.first_time, report.last_time) == (at(1), at(6))


def test_redacted_entry_counts_when_its_neighbours_place_it_in_the_period() -> None:
    assert build(since=at(7), until=at(10)).redacted == 1  # between 7 and 9
    assert build(since=at(9)).redacted == 1  # it may be as late as entry 9, at since
    assert build(since=at(9) + timedelta(seconds=1)).redacted == 0  # it is before entry 9
    assert build(until=at(8)).redacted == 1  # after 7 (< until), could be before until
    assert build(until=at(7)).redacted == 0  # entry 7 already at until: 8 is after it


def test_redacted_entries_at_the_edges_of_the_log() -> None:
    entries: list[tuple[int, Entry | None]] = [(0, None), (1, decision(5)), (2, None)]
    assert build(entries).redacted == 2
    assert build(entries, since=at(6)).redacted == 1  # only the trailing one can be after
    assert build(entries, until=at(5)).redacted == 1  # only the leading one can be before


def test_build_streams_a_generator_once() -> None:
    consumed: list[int] = []

    def stream() -> Iterator[tuple[int, Entry | None]]:
        for index, entry in sample():
            consumed.append(index)
            yield index, entry

    report = build_report(stream(), since=None, until=None, status=INTACT, generated_at=GENERATED)
    assert consumed == list(range(16))
    assert report.entries == 16


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="since"):
        build(since=datetime(2025, 3, 1))


def test_empty_log() -> None:
    report = build([])
    assert (report.entries, report.violations, report.decisions) == (0, 0, ())
    for fmt in FORMATS:
        assert render(report, fmt)


# -- rendering -------------------------------------------------------------------------


def test_json_is_one_object_matching_the_counts() -> None:
    document = json.loads(render(build(since=at(0), until=at(20)), "json"))
    assert document["period"] == {
        "since": "2025-03-01T12:00:00Z",
        "until": "2025-03-01T12:20:00Z",
        "first_entry": "2025-03-01T12:00:00Z",
        "last_entry": "2025-03-01T12:15:00Z",
        "first_index": 0,
        "last_index": 15,
    }
    assert document["generated_at"] == "2025-04-01T08:30:00Z"
    assert document["verification"] == {
        "intact": True,
        "tree_size": 42,
        "checkpoint": "docket/3f2a size 42 root AAAA",
        "problem": None,
        "redacted": [7],
    }
    assert (document["entries"], document["redacted"]) == (16, 1)
    assert document["totals"]["decision"] == 7
    assert {"classification": "restricted", "jurisdiction": "us", "allow": 1, "deny": 1} in (
        document["decisions"]
    )
    assert document["residency"]["violations"] == 3
    assert document["residency"]["findings"][0] == {
        "index": 1,
        "time": "2025-03-01T12:01:00Z",
        "kind": "decision",
        "subject": 'Docket::User::"alice"',
        "action": 'Docket::Action::"read"',
        "resource": 'Docket::Data::"patient-records-eu"',
        "classification": "restricted",
        "residency": ["eu"],
        "jurisdiction": "us",
        "site": None,
        "sites": [],
        "decision_id": "d-1",
    }
    assert document["residency"]["findings"][2]["sites"] == ["us-east-1-cloud"]
    assert document["denials"][0] == {"policy": "residency-guard", "count": 2}
    assert document["credentials"]["attestation"] == {
        "issued": 1,
        "refused": 2,
        "refusals": [{"reason": "pcr mismatch", "count": 2}],
    }


def csv_rows(report: Report) -> list[dict[str, str]]:
    text = render(report, "csv")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    return list(reader)


def test_csv_is_a_long_table_with_the_counts_and_findings() -> None:
    rows = csv_rows(build())

    def value(**match: str) -> str:
        (row,) = [r for r in rows if all(r[k] == v for k, v in match.items())]
        return row["value"]

    assert value(section="summary", metric="residency_violations") == "3"
    assert value(section="summary", metric="redacted") == "1"
    assert value(section="verification", metric="intact") == "true"
    assert value(section="totals", kind="attestation") == "3"
    restricted_eu = {"classification": "restricted", "jurisdiction": "eu"}
    assert value(section="decisions", **restricted_eu, metric="allow") == "2"
    assert value(section="decisions", **restricted_eu, metric="deny") == "1"
    assert value(section="denials", policy="residency-guard") == "2"
    assert value(section="refusals", kind="attestation", reason="pcr mismatch") == "2"
    violations = [r for r in rows if r["metric"] == "violation"]
    assert [(r["index"], r["site"]) for r in violations] == [
        ("1", ""),
        ("7", ""),
        ("9", "us-east-1-cloud"),
    ]
    assert (
        value(section="residency_finding", index="1", metric="subject") == 'Docket::User::"alice"'
    )
    assert value(section="residency_finding", index="9", metric="sites") == "us-east-1-cloud"
    assert value(section="residency_finding", index="1", metric="sites") == ""


def test_csv_neutralises_spreadsheet_formulas() -> None:
    entry = decision(0, jurisdiction="us", subject='=HYPERLINK("x","y")')
    rows = csv_rows(build([(0, entry)]))
    (subject,) = [r["value"] for r in rows if r["metric"] == "subject"]
    assert subject == '\'=HYPERLINK("x","y")'


def test_every_format_names_a_placements_sites_outside_in_one_row() -> None:
    entry = placement(
        0,
        [
            {"site": "eu-west-1-cloud", "jurisdiction": "eu"},
            {"site": "uk-south-1-edge-lon", "jurisdiction": "uk"},
            {"site": "us-east-1-edge-nyc", "jurisdiction": "us"},
        ],
    )
    report = build([(0, entry)])
    table = " ".join(render(report, "table").split())  # the terminal width wraps lines
    assert "at site uk-south-1-edge-lon (uk) and 1 more outside" in table
    assert "sites outside uk-south-1-edge-lon us-east-1-edge-nyc" in table
    assert "site uk-south-1-edge-lon (uk) and 1 more outside" in render(report, "html")
    (finding,) = json.loads(render(report, "json"))["residency"]["findings"]
    assert (finding["site"], finding["sites"]) == (
        "uk-south-1-edge-lon",
        ["uk-south-1-edge-lon", "us-east-1-edge-nyc"],
    )
    rows = csv_rows(report)
    assert [r["site"] for r in rows if r["metric"] == "violation"] == ["uk-south-1-edge-lon"]


def test_table_has_every_heading_and_flags_violations_loudly() -> None:
    text = render(build(), "table")
    for heading in (
        "Docket residency and compliance report",
        "Verification",
        "Totals",
        "Decisions by classification and jurisdiction",
        "Residency findings",
        "Denials by policy",
        "Attestations and certificates",
    ):
        assert heading in text
    assert "VIOLATIONS: 3" in text
    assert "us-east-1-cloud" in text
    assert "\x1b" not in text  # no colour unless asked for


def test_table_says_none_when_compliant() -> None:
    text = render(build([(0, decision(0))]), "table")
    assert "NONE" in text
    assert "VIOLATIONS" not in text


def test_table_escapes_terminal_control_sequences_and_markup() -> None:
    entry = decision(0, jurisdiction="us", subject="\x1b[2J[bold]evil[/bold]\u202e")
    text = render(build([(0, entry)]), "table")
    assert "\x1b" not in text
    assert "\u202e" not in text
    assert "[bold]evil" in text


def test_table_in_colour_for_a_terminal() -> None:
    assert "\x1b[" in render(build(), "table", color=True)


def html_of(report: Report) -> str:
    return render(report, "html")


def test_html_is_self_contained() -> None:
    text = html_of(build())
    assert text.startswith("<!DOCTYPE html>")
    assert "<title>" in text
    assert "http://" not in text
    assert "https://" not in text
    assert not re.search(r"\b(src|href)\s*=", text)
    assert "<script" not in text
    assert "<link" not in text
    assert "@import" not in text
    assert "url(" not in text


def test_html_has_charts_tables_and_the_verification_status() -> None:
    text = html_of(build())
    assert text.count("<svg") == 3
    assert "<title>restricted / us: 1 allow</title>" in text
    assert '<th scope="col">' in text
    assert "status ok" in text
    assert "docket/3f2a size 42 root AAAA" in text
    assert "3 RESIDENCY VIOLATIONS" in text
    assert 'table class="findings"' in text


def test_html_says_no_violations_in_green_when_compliant() -> None:
    text = html_of(build([(0, decision(0))]))
    assert "No residency violations" in text
    assert 'class="findings"' not in text
    assert "VIOLATION" not in text


def test_html_shows_a_log_that_did_not_verify_in_red() -> None:
    broken = ReportStatus(
        intact=False,
        tree_size=0,
        checkpoint=None,
        problem="entry 3: hash chain broken",
        redacted=(),
    )
    text = html_of(build(status=broken))
    assert "status bad" in text
    assert "entry 3: hash chain broken" in text


def test_html_escapes_entry_text() -> None:
    entries: list[tuple[int, Entry | None]] = [
        (0, decision(0, jurisdiction=XSS, subject=XSS, policies=(XSS,))),
        (1, decision(1, decision="deny", policies=(XSS,))),
        (2, credential(2, "certificate", "deny", reason=XSS)),
        (3, decision(3, subject='"><img src=x onerror=alert(1)> https://evil.example/')),
    ]
    text = html_of(build(entries))
    assert "<script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<img" not in text
    assert not re.search(r"\b(src|href)\s*=\s*[\"']?[a-z]*:?//", text)


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="format"):
        render(build(), "pdf")  # type: ignore[arg-type]
