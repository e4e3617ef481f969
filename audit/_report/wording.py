"""How the report's values read, the same in every format: caller-supplied strings with
control and bidi-override characters escaped, times, the period and the verification line."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from audit._report.model import UNKNOWN, Finding, Gap, Report, ReportStatus

if TYPE_CHECKING:
    from audit._report.fleet import SiteSection

SHOWN_FINDINGS = 1000
"""Findings listed in the table and HTML reports; JSON and CSV always hold all of them."""

_BIDI = frozenset(
    {0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)},
)


def clean(value: str) -> str:
    """``value`` with control and bidi-override characters shown as escapes, so that a
    caller-supplied string cannot drive a terminal or disguise itself."""
    if value.isprintable() and not any(ord(char) in _BIDI for char in value):
        return value
    out: list[str] = []
    for char in value:
        code = ord(char)
        if code in _BIDI or (code < 0x20 or 0x7F <= code < 0xA0):
            out.append(f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def iso_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def utc_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def period_text(report: Report) -> str:
    start = utc_time(report.since) if report.since else "start of log"
    end = utc_time(report.until) if report.until else "end of log"
    span = (
        ""
        if report.first_index is None or report.last_index is None
        else f", entries {report.first_index}..{report.last_index}"
    )
    return f"{start} to {end} (end exclusive){span}"


def status_line(status: ReportStatus) -> str:
    if not status.intact:
        return f"NOT INTACT: {status.problem or 'the log does not verify'}"
    if status.checkpoint is None:
        return f"intact, {status.tree_size:,} entries, NOT checked against a signed checkpoint"
    return f"intact, {status.tree_size:,} entries, checked against {status.checkpoint}"


def place_of(finding: Finding) -> str:
    where = finding.jurisdiction or UNKNOWN
    if finding.site is None:
        return where
    more = len(finding.sites) - 1
    return f"site {finding.site} ({where})" + (f" and {more} more outside" if more > 0 else "")


def credential_label(kind: str) -> str:
    return {"attestation": "Attestations", "certificate": "Certificates"}.get(kind, kind)


def coverage_line(report: Report) -> str:
    """Whether every entry of the period was read, said plainly."""
    if report.complete:
        return "COMPLETE: every entry of the period was read"
    unread = f"{report.not_covered:,} entries of this period could not be read; " * bool(
        report.not_covered
    )
    return f"INCOMPLETE: {unread}{len(report.gaps)} gap(s), listed under Coverage"


def gap_text(gap: Gap) -> str:
    where = f"site {gap.log} " if gap.log is not None else ""
    return f"{where}entries {gap.first:,}..{gap.last:,} not covered: {gap.reason}"


def entry_label(finding: Finding) -> str:
    """The entry a finding is about: its index, and its log when there are several."""
    return (
        f"entry {finding.index}"
        if finding.log is None
        else f"site {finding.log} entry {finding.index}"
    )


def no_decisions(report: Report) -> str:
    """What the decisions section says when it counted none: never a plain "none" for
    a period some of whose entries could not be read."""
    if report.not_covered:
        return (
            f"No decisions, placements or admissions among the entries read: "
            f"{report.not_covered:,} entries of this period could not be read (see Coverage)."
        )
    return "No decisions, placements or admissions in this period."


SITE_COLUMNS = (
    "site",
    "state",
    "held",
    "checkpoint",
    "cosigned at",
    "behind",
    "allow",
    "deny",
    "violations",
    "entries from",
    "entries to",
)
"""The sites table of a fleet report (HTML; the terminal leaves out the last two)."""


def site_row(site: SiteSection) -> tuple[str, ...]:
    """One site's coverage and figures, as :data:`SITE_COLUMNS` reads them."""
    report = site.report

    def figure(value: int | None) -> str:
        return "-" if value is None else f"{value:,}"

    return (
        site.site,
        site.state,
        figure(site.entries),
        figure(site.checkpoint),
        "-" if site.cosigned is None else utc_time(site.cosigned).removesuffix(" UTC"),
        figure(site.behind),
        figure(None if report is None else report.allowed),
        figure(None if report is None else report.denied),
        figure(None if report is None else report.violations),
        "-" if report is None or report.first_time is None else utc_time(report.first_time),
        "-" if report is None or report.last_time is None else utc_time(report.last_time),
    )
