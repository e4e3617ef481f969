"""The report model: what :func:`audit._report.build_report` counts and what it flags."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from report_samples import (
    FORMATS,
    GENERATED,
    INTACT,
    T0,
    at,
    build,
    decision,
    placement,
    sample,
)

from audit._entry import Entry
from audit._report import DEFAULT_DENY, NO_REASON, ReportStatus, build_report, render

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


@pytest.mark.parametrize(
    ("intact", "problem", "named"),
    [
        pytest.param(False, "entry 12: modified: its leaf hash differs", 12, id="modified"),
        pytest.param(False, "entry 40: truncated: the log ends early", 40, id="truncated"),
        pytest.param(False, "cannot read docket.db", None, id="no-entry-named"),
        pytest.param(False, "the checkpoint names entry 3: no", None, id="not-at-the-start"),
        pytest.param(False, None, None, id="no-problem"),
        pytest.param(True, "entry 5: stale", None, id="intact"),
    ],
)
def test_the_bad_entry_is_the_one_the_problem_names(
    intact: bool, problem: str | None, named: int | None
) -> None:
    status = ReportStatus(intact, 50, None, problem, ())
    assert status.bad_entry == named


def test_verifying_keys_default_to_none_given() -> None:
    assert ReportStatus(True, 1, None, None, ()).keys == ()
