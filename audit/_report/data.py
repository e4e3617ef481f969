"""The report as data: one JSON object and a long-format CSV table (schemas in the
package docstring)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from audit._report.fleet import FleetReport, SiteSection
from audit._report.model import Gap, Report
from audit._report.wording import clean, iso_time


def _gap_json(gap: Gap) -> dict[str, Any]:
    where = {} if gap.log is None else {"log": gap.log}
    return {**where, "first": gap.first, "last": gap.last, "reason": gap.reason}


def _json_document(report: Report) -> dict[str, Any]:
    status = report.status
    return {
        "report": "docket-residency",
        "version": 1,
        "generated_at": iso_time(report.generated_at),
        "period": {
            "since": iso_time(report.since),
            "until": iso_time(report.until),
            "first_entry": iso_time(report.first_time),
            "last_entry": iso_time(report.last_time),
            "first_index": report.first_index,
            "last_index": report.last_index,
        },
        "verification": {
            "intact": status.intact,
            "tree_size": status.tree_size,
            "checkpoint": status.checkpoint,
            "problem": status.problem,
            "redacted": list(status.redacted),
        },
        "entries": report.entries,
        "redacted": report.redacted,
        "totals": dict(report.totals),
        "decisions": [
            {
                "classification": cell.classification,
                "jurisdiction": cell.jurisdiction,
                "allow": cell.allow,
                "deny": cell.deny,
            }
            for cell in report.decisions
        ],
        "coverage": {
            "complete": report.complete,
            "not_covered": report.not_covered,
            "gaps": [_gap_json(g) for g in report.gaps],
        },
        "residency": {
            "violations": report.violations,
            "findings": [
                {
                    **({} if f.log is None else {"log": f.log}),
                    "index": f.index,
                    "time": iso_time(f.time),
                    "kind": f.kind,
                    "subject": f.subject,
                    "action": f.action,
                    "resource": f.resource,
                    "classification": f.classification,
                    "residency": list(f.residency),
                    "jurisdiction": f.jurisdiction,
                    "site": f.site,
                    "sites": list(f.sites),
                    "decision_id": f.decision_id,
                }
                for f in report.findings
            ],
        },
        "denials": [{"policy": policy, "count": count} for policy, count in report.denials],
        "credentials": {
            c.kind: {
                "issued": c.issued,
                "refused": c.refused,
                "refusals": [{"reason": r, "count": n} for r, n in c.refusals],
            }
            for c in report.credentials
        },
    }


def _site_coverage(site: SiteSection) -> dict[str, Any]:
    report = site.report
    return {
        "state": site.state,
        "problem": site.problem,
        "entries": site.entries,
        "checkpoint": site.checkpoint,
        "cosigned": iso_time(site.cosigned),
        "head": site.head,
        "behind": site.behind,
        "first_entry": None if report is None else iso_time(report.first_time),
        "last_entry": None if report is None else iso_time(report.last_time),
    }


def render_json(report: Report | FleetReport) -> str:
    if isinstance(report, FleetReport):
        document = {
            **_json_document(report.total),
            "report": "docket-fleet-residency",
            "sites": [
                {
                    "site": site.site,
                    "coverage": _site_coverage(site),
                    "report": None if site.report is None else _json_document(site.report),
                }
                for site in report.sites
            ],
        }
    else:
        document = _json_document(report)
    # ensure_ascii: control characters and bidi overrides arrive as \u escapes.
    return json.dumps(document, indent=2) + "\n"


# -- csv -------------------------------------------------------------------------------

CSV_COLUMNS = (
    "section",
    "kind",
    "classification",
    "jurisdiction",
    "policy",
    "reason",
    "index",
    "site",
    "metric",
    "value",
)


def _cell(value: str | int | bool | None) -> str | int:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return value
    text = clean(value)
    # A spreadsheet evaluates a cell starting with one of these as a formula.
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def _csv_rows(report: Report) -> Iterator[dict[str, str | int | bool | None]]:
    for metric, moment in (
        ("since", report.since),
        ("until", report.until),
        ("generated_at", report.generated_at),
        ("first_entry", report.first_time),
        ("last_entry", report.last_time),
    ):
        yield {"section": "period", "metric": metric, "value": iso_time(moment)}
    for metric, position in (
        ("first_index", report.first_index),
        ("last_index", report.last_index),
    ):
        yield {"section": "period", "metric": metric, "value": position}
    status = report.status
    for metric, value in (
        ("intact", status.intact),
        ("tree_size", status.tree_size),
        ("checkpoint", status.checkpoint),
        ("problem", status.problem),
        ("redacted_in_log", len(status.redacted)),
    ):
        yield {"section": "verification", "metric": metric, "value": value}
    yield {"section": "coverage", "metric": "complete", "value": report.complete}
    yield {"section": "coverage", "metric": "not_covered", "value": report.not_covered}
    for gap in report.gaps:
        key: dict[str, str | int | bool | None] = {
            "section": "coverage",
            "index": gap.first,
            "site": gap.log,
        }
        yield {**key, "metric": "gap_last", "value": gap.last}
        yield {**key, "metric": "gap_reason", "value": gap.reason}
    for metric, count in (
        ("entries", report.entries),
        ("redacted", report.redacted),
        ("residency_violations", report.violations),
    ):
        yield {"section": "summary", "metric": metric, "value": count}
    for kind, count in report.totals:
        yield {"section": "totals", "kind": kind, "metric": "entries", "value": count}
    for cell in report.decisions:
        group = {"classification": cell.classification, "jurisdiction": cell.jurisdiction}
        yield {"section": "decisions", **group, "metric": "allow", "value": cell.allow}
        yield {"section": "decisions", **group, "metric": "deny", "value": cell.deny}
    for policy, count in report.denials:
        yield {"section": "denials", "policy": policy, "metric": "denials", "value": count}
    for c in report.credentials:
        yield {"section": "credentials", "kind": c.kind, "metric": "issued", "value": c.issued}
        yield {"section": "credentials", "kind": c.kind, "metric": "refused", "value": c.refused}
        for reason, count in c.refusals:
            yield {
                "section": "refusals",
                "kind": c.kind,
                "reason": reason,
                "metric": "refusals",
                "value": count,
            }
    for f in report.findings:
        key = {
            "section": "residency_finding",
            "kind": f.kind,
            "classification": f.classification,
            "jurisdiction": f.jurisdiction,
            "index": f.index,
            "site": f.site,
        }
        yield {**key, "metric": "violation", "value": 1}
        for metric, value in (
            ("time", iso_time(f.time)),
            ("subject", f.subject),
            ("action", f.action),
            ("resource", f.resource),
            ("residency", " ".join(f.residency)),
            ("sites", " ".join(f.sites)),
            ("decision_id", f.decision_id),
        ):
            yield {**key, "metric": metric, "value": value}


def _fleet_rows(report: FleetReport) -> Iterator[dict[str, str | int | bool | None]]:
    """The fleet's rows: the totals (``log`` empty), then per site its coverage
    (section ``site``) and its report's rows."""
    yield from _csv_rows(report.total)
    for site in report.sites:
        for metric, value in _site_coverage(site).items():
            yield {"log": site.site, "section": "site", "metric": metric, "value": value}
        if site.report is not None:
            yield from ({"log": site.site, **row} for row in _csv_rows(site.report))


def render_csv(report: Report | FleetReport) -> str:
    """The long table; a fleet's has a first column more, ``log``: the site a row is of."""
    fleet = isinstance(report, FleetReport)
    columns = ("log", *CSV_COLUMNS) if fleet else CSV_COLUMNS
    rows = _fleet_rows(report) if isinstance(report, FleetReport) else _csv_rows(report)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({column: _cell(row.get(column)) for column in columns})
    return out.getvalue()
