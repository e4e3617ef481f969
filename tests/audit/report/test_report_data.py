"""The report as JSON and CSV: the same counts, and cells a spreadsheet cannot run."""

from __future__ import annotations

import json

from report_samples import at, build, csv_rows, decision

from audit._report import render


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
