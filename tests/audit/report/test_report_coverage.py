"""What a report says it did not cover: entries whose payloads are not there to read
(pruned after archival, no archive given), counted apart and named in every format,
never read as "no decisions"; and several logs' reports added together (the fleet's
total), each finding naming the log it came from."""

from __future__ import annotations

import json

from report_samples import GENERATED, INTACT, at, build, csv_rows, decision, sample

from audit._report import Gap, merge_reports, render

PRUNED = Gap(first=0, last=3, reason="payloads pruned after archival; no archive holds them")


def _pruned_sample() -> list[tuple[int, object]]:
    """The sample log with its first four payloads gone (pruned)."""
    return [(index, None if index < 4 else entry) for index, entry in sample()]


def test_entries_in_a_gap_are_counted_as_not_covered_not_as_redacted() -> None:
    report = build(_pruned_sample(), gaps=[PRUNED])  # type: ignore[arg-type]
    assert report.not_covered == 4
    assert report.redacted == 1  # entry 8, erased by a redaction order
    assert report.entries == 16
    assert report.gaps == (PRUNED,)
    assert not report.complete
    assert build().complete


def test_a_gap_outside_the_period_leaves_the_period_complete() -> None:
    report = build(_pruned_sample(), gaps=[PRUNED], since=at(9))  # type: ignore[arg-type]
    assert (report.not_covered, report.gaps, report.complete) == (0, (), True)


def test_a_period_wholly_pruned_says_not_covered_never_no_decisions() -> None:
    entries = [(0, None), (1, None), (2, decision(10))]
    gap = Gap(first=0, last=1, reason="payloads pruned after archival; no archive holds them")
    report = build(entries, gaps=[gap], until=at(5))  # type: ignore[arg-type]
    assert (report.entries, report.not_covered) == (2, 2)
    table = render(report, "table")
    assert "INCOMPLETE" in table
    assert "entries 0..1 not covered: payloads pruned after archival" in table
    assert "No decisions, placements or admissions in this period." not in table
    assert "2 entries of this period could not be read" in table
    page = render(report, "html")
    assert "INCOMPLETE" in page
    assert "entries 0..1 not covered" in page
    document = json.loads(render(report, "json"))
    assert document["coverage"] == {
        "complete": False,
        "not_covered": 2,
        "gaps": [{"first": 0, "last": 1, "reason": gap.reason}],
    }
    rows = [r for r in csv_rows(report) if r["section"] == "coverage"]
    assert {(r["index"], r["metric"], r["value"]) for r in rows} >= {
        ("", "complete", "false"),
        ("", "not_covered", "2"),
        ("0", "gap_last", "1"),
    }


def test_a_complete_report_says_so() -> None:
    assert json.loads(render(build(), "json"))["coverage"] == {
        "complete": True,
        "not_covered": 0,
        "gaps": [],
    }
    assert "COMPLETE: every entry of the period was read" in render(build(), "table")


def test_merged_reports_add_up_and_name_each_findings_log() -> None:
    one, two = build(), build(since=at(9))
    total = merge_reports(
        [("eu-1", one), ("us-1", two)],
        status=INTACT,
        generated_at=GENERATED,
        since=None,
        until=None,
    )
    assert total.entries == one.entries + two.entries
    assert dict(total.totals)["decision"] == dict(one.totals)["decision"]
    assert total.allowed == one.allowed + two.allowed
    assert total.denied == one.denied + two.denied
    assert total.violations == one.violations + two.violations
    assert [(f.log, f.index) for f in total.findings] == [
        ("eu-1", 1),
        ("eu-1", 7),
        ("eu-1", 9),
        ("us-1", 9),
    ]
    assert dict(total.denials)["residency-guard"] == 2
    attestations = next(c for c in total.credentials if c.kind == "attestation")
    assert (attestations.issued, attestations.refused) == (2, 4)
    assert attestations.refusals == (("pcr mismatch", 4),)
    assert (total.first_time, total.last_time) == (at(0), at(15))
    assert (total.first_index, total.last_index) == (None, None)  # indices are per log
    assert "site us-1 entry 9" in render(total, "table")
    finding = json.loads(render(total, "json"))["residency"]["findings"][3]
    assert (finding["log"], finding["index"]) == ("us-1", 9)


def test_merged_gaps_name_their_log() -> None:
    pruned = build(_pruned_sample(), gaps=[PRUNED])  # type: ignore[arg-type]
    total = merge_reports(
        [("eu-1", pruned), ("us-1", build())],
        status=INTACT,
        generated_at=GENERATED,
        since=None,
        until=None,
    )
    assert total.not_covered == 4
    assert total.gaps == (Gap(0, 3, PRUNED.reason, log="eu-1"),)
    assert "site eu-1 entries 0..3 not covered: payloads pruned" in render(total, "table")
