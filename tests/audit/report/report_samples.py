"""Log entries for the report tests: a small log with something in every section, and
the builders that make one entry of each sort."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

from audit._entry import Entry
from audit._report import CSV_COLUMNS, Format, Gap, Report, ReportStatus, build_report, render

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
    gaps: list[Gap] | None = None,
) -> Report:
    return build_report(
        sample() if entries is None else entries,
        since=since,
        until=until,
        status=status,
        generated_at=GENERATED,
        gaps=gaps or (),
    )


def csv_rows(report: Report) -> list[dict[str, str]]:
    """The CSV report's rows, its header checked."""
    text = render(report, "csv")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    return list(reader)
