"""The residency and compliance report behind ``docket audit report``.

:func:`build_report` reads log entries once, in order, and keeps only counts per group
(plus the residency findings, whose expected number is zero); :func:`render` turns the
resulting :class:`Report` into ``table`` (a terminal), ``json``, ``csv`` or ``html`` text.
Both are pure: the caller reads the store, verifies the log (:class:`ReportStatus`) and
passes ``generated_at``.

Sections:

- **period and totals**: entries in ``[since, until)`` by kind, and how many had their
  payload redacted (those are counted but cannot be classified);
- **decisions** (kinds ``decision``, ``placement``, ``admission``): allow and deny counts
  per classification (``unclassified`` when absent) and jurisdiction (``unknown``);
- **residency findings**: the residency rule, the same one the default bundle's
  policies enforce (``placement-residency``, ``placement-data-catalog-residency`` and
  the access guard ``restricted-requires-resident-jurisdiction``): a residency declared
  on the data binds, whatever its classification. An *allowed* decision, placement or
  admission whose entry has a non-empty ``residency`` is a violation when its
  jurisdiction is unknown or outside it, or, for a placement, when any allowed site
  (``detail["allowed"]``, ranked) is outside it. An entry without a residency is never
  a violation. One finding per violating entry: for a placement it names the first
  (best-ranked) allowed site outside the residency in ``site`` and every such site in
  ``sites``; for a decision, ``site`` is empty and ``jurisdiction`` says where from;
- **denials by policy**: deny decisions, placements and admissions counted once per
  determining policy id (``(default deny)`` when there is none), so an entry denied by
  two policies counts for both;
- **credentials**: ``attestation`` and ``certificate`` entries issued (``allow``) and
  refused (``deny``), refusals by reason (``detail["reason"]``, else the policy ids);
- **verification**: the :class:`ReportStatus` the caller's verifier produced.

A redacted entry has no time: it is counted in a period when its dated neighbours in the
log allow it to lie there (the last dated entry before it is before ``until``, the next
one after it at or after ``since``).

JSON (``render(report, "json")``), one object, keys always present, times RFC 3339 UTC::

    {"report": "docket-residency", "version": 1, "generated_at": T,
     "period": {"since": T|null, "until": T|null, "first_entry": T|null, "last_entry": T|null,
                "first_index": int|null, "last_index": int|null},
     "verification": {"intact": bool, "tree_size": int, "checkpoint": str|null,
                      "problem": str|null, "redacted": [int]},
     "entries": int, "redacted": int, "totals": {kind: int},      # every kind, zeros too
     "decisions": [{"classification", "jurisdiction", "allow", "deny"}],
     "residency": {"violations": int,
                   "findings": [{"index", "time", "kind", "subject", "action", "resource",
                                 "classification", "residency": [str], "jurisdiction",
                                 "site", "sites": [str], "decision_id"}]},
     "denials": [{"policy", "count"}],                             # most first
     "credentials": {"attestation"|"certificate":
                     {"issued", "refused", "refusals": [{"reason", "count"}]}}}

CSV (``render(report, "csv")``), a long format with the header
``section,kind,classification,jurisdiction,policy,reason,index,site,metric,value``;
columns that do not apply to a row are empty:

=================  ==========================================  ===========================
section            identifying columns                         metric
=================  ==========================================  ===========================
period             --                                          since, until, generated_at,
                                                               first_entry, last_entry,
                                                               first_index, last_index
verification       --                                          intact, tree_size,
                                                               checkpoint, problem,
                                                               redacted_in_log
summary            --                                          entries, redacted,
                                                               residency_violations
totals             kind                                        entries
decisions          classification, jurisdiction                allow, deny
denials            policy                                      denials
credentials        kind (attestation, certificate)             issued, refused
refusals           kind, reason                                refusals
residency_finding  kind, classification, jurisdiction, index,  violation (value 1), time,
                   site (empty: the entry itself)              subject, action, resource,
                                                               residency, sites,
                                                               decision_id
=================  ==========================================  ===========================

Text taken from entries is caller-supplied: every renderer escapes control and
bidirectional-override characters, HTML escapes all of it, and CSV cells that a
spreadsheet would read as a formula (``=``, ``+``, ``-``, ``@``) are prefixed with ``'``.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from audit._entry import Entry, EntryKind

Format = Literal["table", "html", "json", "csv"]
FORMATS: tuple[str, ...] = get_args(Format)

DECISION_KINDS = frozenset({"decision", "placement", "admission"})
CREDENTIAL_KINDS: tuple[str, ...] = ("attestation", "certificate")
UNCLASSIFIED = "unclassified"
UNKNOWN = "unknown"
DEFAULT_DENY = "(default deny)"
NO_REASON = "(no reason given)"
SHOWN_FINDINGS = 1000
"""Findings listed in the table and HTML reports; JSON and CSV always hold all of them."""

_KINDS: tuple[str, ...] = get_args(EntryKind)
_CLASSIFICATION_ORDER = ("public", "internal", "confidential", "restricted", UNCLASSIFIED)


@dataclass(frozen=True, slots=True)
class ReportStatus:
    """What verifying the log found, as the report shows it.

    ``checkpoint`` names what the log was checked against (``None``: no signed
    checkpoint); ``problem`` is the first problem when the log is not intact;
    ``redacted`` the indices of entries whose payload was erased.
    """

    intact: bool
    tree_size: int
    checkpoint: str | None
    problem: str | None
    redacted: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class DecisionCount:
    """Allowed and denied decisions, placements and admissions of one group."""

    classification: str
    jurisdiction: str
    allow: int
    deny: int


@dataclass(frozen=True, slots=True)
class Finding:
    """An allowed access to, or placement of, data outside its declared residency: one
    per violating entry.

    For a placement, ``sites`` are the allowed sites outside the residency, best-ranked
    first, and ``site`` is the first of them (its jurisdiction in ``jurisdiction``).
    ``site`` is ``None`` (and ``sites`` empty) when the finding is about the entry's own
    jurisdiction: where an access came from (``None``: unknown).
    """

    index: int
    time: datetime
    kind: str
    subject: str | None
    action: str | None
    resource: str | None
    classification: str
    residency: tuple[str, ...]
    jurisdiction: str | None
    site: str | None
    sites: tuple[str, ...]
    decision_id: str | None


@dataclass(frozen=True, slots=True)
class CredentialCount:
    """Attestations or certificates issued and refused, refusals by reason (most first)."""

    kind: str
    issued: int
    refused: int
    refusals: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Report:
    """The report model: what :func:`build_report` counted, ready for :func:`render`.

    ``totals`` lists every entry kind in a fixed order (zeros included) and does not
    count redacted entries, which are in ``redacted``; ``entries`` is both together.
    ``first_time``/``last_time`` are the earliest and latest entry times counted,
    ``first_index``/``last_index`` the lowest and highest index of a dated entry counted
    (the period's index range, by the time inside each hashed payload).
    """

    since: datetime | None
    until: datetime | None
    generated_at: datetime
    first_time: datetime | None
    last_time: datetime | None
    first_index: int | None
    last_index: int | None
    entries: int
    totals: tuple[tuple[str, int], ...]
    redacted: int
    decisions: tuple[DecisionCount, ...]
    findings: tuple[Finding, ...]
    denials: tuple[tuple[str, int], ...]
    credentials: tuple[CredentialCount, ...]
    status: ReportStatus

    @property
    def violations(self) -> int:
        """Residency findings; a compliant log has none."""
        return len(self.findings)

    @property
    def allowed(self) -> int:
        """Allowed decisions, placements and admissions."""
        return sum(cell.allow for cell in self.decisions)

    @property
    def denied(self) -> int:
        """Denied decisions, placements and admissions."""
        return sum(cell.deny for cell in self.decisions)


# -- building --------------------------------------------------------------------------


def _aware(value: datetime | None, name: str) -> None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _outside(jurisdiction: str | None, residency: tuple[str, ...]) -> bool:
    """The residency rule: a jurisdiction is inside only when it is known and declared."""
    return jurisdiction is None or jurisdiction not in residency


def _finding(index: int, entry: Entry) -> Finding | None:
    """The residency finding of one entry, or None when it complies.

    Only an allowed decision, placement or admission with a declared (non-empty)
    residency can violate it, whatever its classification.
    """
    if entry.kind not in DECISION_KINDS or entry.decision != "allow" or not entry.residency:
        return None
    where = entry.jurisdiction
    outside: list[tuple[str, str | None]] = []
    if entry.kind == "placement":
        allowed = entry.detail.get("allowed")
        for item in allowed if isinstance(allowed, list) else ():
            # A malformed site record cannot show it is inside: it is reported.
            site = item if isinstance(item, dict) else {}
            jurisdiction = _text(site.get("jurisdiction"))
            if _outside(jurisdiction, entry.residency):
                outside.append((_text(site.get("site")) or "(unnamed site)", jurisdiction))
    if outside:
        where = outside[0][1]
    elif not _outside(where, entry.residency):
        return None
    return Finding(
        index=index,
        time=entry.time,
        kind=entry.kind,
        subject=entry.subject,
        action=entry.action,
        resource=entry.resource,
        classification=entry.classification or UNCLASSIFIED,
        residency=entry.residency,
        jurisdiction=where,
        site=outside[0][0] if outside else None,
        sites=tuple(name for name, _ in outside),
        decision_id=_text(entry.detail.get("decision_id")),
    )


def _refusal_reason(entry: Entry) -> str:
    reason = _text(entry.detail.get("reason"))
    if reason:
        return reason
    return ", ".join(entry.policies) if entry.policies else NO_REASON


def _classification_key(name: str) -> tuple[int, str]:
    order = _CLASSIFICATION_ORDER
    return (order.index(name), "") if name in order else (len(order), name)


def build_report(
    entries: Iterable[tuple[int, Entry | None]],
    *,
    since: datetime | None,
    until: datetime | None,
    status: ReportStatus,
    generated_at: datetime,
) -> Report:
    """Count ``entries`` — ``(index, entry)`` in log order, ``None`` for a redacted
    payload — whose time is in ``[since, until)`` (``None``: unbounded) into a
    :class:`Report`.

    One pass; memory grows with the number of groups and findings, not of entries.
    Raises ``ValueError`` for a naive ``since``, ``until`` or ``generated_at``.
    """
    _aware(since, "since")
    _aware(until, "until")
    _aware(generated_at, "generated_at")
    kinds: Counter[str] = Counter()
    cells: dict[tuple[str, str], list[int]] = {}
    denials: Counter[str] = Counter()
    issued: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    refusals: dict[str, Counter[str]] = {kind: Counter() for kind in CREDENTIAL_KINDS}
    findings: list[Finding] = []
    first: datetime | None = None
    last: datetime | None = None
    low: int | None = None
    high: int | None = None
    redacted = 0
    pending = 0  # redacted entries since the last dated one, placed by the next one
    previous: datetime | None = None
    for index, entry in entries:
        if entry is None:
            if until is None or previous is None or previous < until:
                pending += 1
            continue
        time = entry.time
        if pending:
            if since is None or time >= since:
                redacted += pending
            pending = 0
        previous = time
        if (since is not None and time < since) or (until is not None and time >= until):
            continue
        kinds[entry.kind] += 1
        first = time if first is None or time < first else first
        last = time if last is None or time > last else last
        low = index if low is None else min(low, index)
        high = index if high is None else max(high, index)
        if entry.kind in DECISION_KINDS and entry.decision is not None:
            key = (entry.classification or UNCLASSIFIED, entry.jurisdiction or UNKNOWN)
            cell = cells.setdefault(key, [0, 0])
            if entry.decision == "allow":
                cell[0] += 1
                found = _finding(index, entry)
                if found is not None:
                    findings.append(found)
            else:
                cell[1] += 1
                denials.update(set(entry.policies) or {DEFAULT_DENY})
        elif entry.kind in CREDENTIAL_KINDS:
            if entry.decision == "allow":
                issued[entry.kind] += 1
            elif entry.decision == "deny":
                refused[entry.kind] += 1
                refusals[entry.kind][_refusal_reason(entry)] += 1
    redacted += pending

    def most_first(counter: Counter[str]) -> tuple[tuple[str, int], ...]:
        return tuple(sorted(counter.items(), key=lambda item: (-item[1], item[0])))

    ordered = sorted(
        cells.items(),
        key=lambda item: (
            _classification_key(item[0][0]),
            item[0][1] == UNKNOWN,
            item[0][1],
        ),
    )
    dated = sum(kinds.values())
    return Report(
        since=since,
        until=until,
        generated_at=generated_at,
        first_time=first,
        last_time=last,
        first_index=low,
        last_index=high,
        entries=dated + redacted,
        totals=tuple((kind, kinds[kind]) for kind in _KINDS),
        redacted=redacted,
        decisions=tuple(
            DecisionCount(classification=c, jurisdiction=j, allow=allow, deny=deny)
            for (c, j), (allow, deny) in ordered
        ),
        findings=tuple(findings),
        denials=most_first(denials),
        credentials=tuple(
            CredentialCount(
                kind=kind,
                issued=issued[kind],
                refused=refused[kind],
                refusals=most_first(refusals[kind]),
            )
            for kind in CREDENTIAL_KINDS
        ),
        status=status,
    )


# -- rendering helpers -----------------------------------------------------------------

_BIDI = frozenset(
    {0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)},
)


def _clean(value: str) -> str:
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


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _period(report: Report) -> str:
    start = _when(report.since) if report.since else "start of log"
    end = _when(report.until) if report.until else "end of log"
    span = (
        ""
        if report.first_index is None or report.last_index is None
        else f", entries {report.first_index}..{report.last_index}"
    )
    return f"{start} to {end} (end exclusive){span}"


def _status_line(status: ReportStatus) -> str:
    if not status.intact:
        return f"NOT INTACT: {status.problem or 'the log does not verify'}"
    if status.checkpoint is None:
        return f"intact, {status.tree_size:,} entries, NOT checked against a signed checkpoint"
    return f"intact, {status.tree_size:,} entries, checked against {status.checkpoint}"


def _where(finding: Finding) -> str:
    where = finding.jurisdiction or UNKNOWN
    if finding.site is None:
        return where
    more = len(finding.sites) - 1
    return f"site {finding.site} ({where})" + (f" and {more} more outside" if more > 0 else "")


def _credential_label(kind: str) -> str:
    return {"attestation": "Attestations", "certificate": "Certificates"}.get(kind, kind)


# -- json ------------------------------------------------------------------------------


def _json_document(report: Report) -> dict[str, Any]:
    status = report.status
    return {
        "report": "docket-residency",
        "version": 1,
        "generated_at": _iso(report.generated_at),
        "period": {
            "since": _iso(report.since),
            "until": _iso(report.until),
            "first_entry": _iso(report.first_time),
            "last_entry": _iso(report.last_time),
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
        "residency": {
            "violations": report.violations,
            "findings": [
                {
                    "index": f.index,
                    "time": _iso(f.time),
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


def _render_json(report: Report) -> str:
    # ensure_ascii: control characters and bidi overrides arrive as \u escapes.
    return json.dumps(_json_document(report), indent=2) + "\n"


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
    text = _clean(value)
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
        yield {"section": "period", "metric": metric, "value": _iso(moment)}
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
        key: dict[str, str | int | bool | None] = {
            "section": "residency_finding",
            "kind": f.kind,
            "classification": f.classification,
            "jurisdiction": f.jurisdiction,
            "index": f.index,
            "site": f.site,
        }
        yield {**key, "metric": "violation", "value": 1}
        for metric, value in (
            ("time", _iso(f.time)),
            ("subject", f.subject),
            ("action", f.action),
            ("resource", f.resource),
            ("residency", " ".join(f.residency)),
            ("sites", " ".join(f.sites)),
            ("decision_id", f.decision_id),
        ):
            yield {**key, "metric": metric, "value": value}


def _render_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for row in _csv_rows(report):
        writer.writerow({column: _cell(row.get(column)) for column in CSV_COLUMNS})
    return out.getvalue()


# -- table -----------------------------------------------------------------------------


def _t(value: str | int | None, style: str = "") -> Text:
    """Entry-derived text as a rich ``Text``: never read as markup, controls escaped."""
    text = "-" if value is None else value if isinstance(value, str) else f"{value:,}"
    return Text(_clean(text), style=style)


def _table(*columns: str, numeric: Sequence[str] = ()) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=False)
    for column in columns:
        if column in numeric:
            table.add_column(column, justify="right", no_wrap=True)
        else:
            table.add_column(column, overflow="fold")
    return table


def _render_table(report: Report, *, color: bool) -> str:
    out = io.StringIO()
    console = Console(
        file=out,
        width=100,
        color_system="standard" if color else None,
        force_terminal=color,
        no_color=not color,
        markup=False,
        highlight=False,
        emoji=False,
        legacy_windows=False,
    )

    def heading(title: str) -> None:
        console.print()
        console.print(Text(title, style="bold"))
        console.print(Text("=" * len(title)))

    console.print(Text("Docket residency and compliance report", style="bold"))
    console.print(_t(f"Period:    {_period(report)}"))
    console.print(_t(f"Generated: {_when(report.generated_at)}"))
    status = report.status
    console.print(
        _t(f"Log:       {_status_line(status)}", "bold green" if status.intact else "bold red")
    )

    heading("Verification")
    table = _table("check", "result")
    table.add_row("intact", _t("yes" if status.intact else "NO", "" if status.intact else "red"))
    table.add_row("tree size", _t(status.tree_size))
    table.add_row("checkpoint", _t(status.checkpoint or "none (not checked against a signature)"))
    table.add_row("problem", _t(status.problem))
    table.add_row("redacted in log", _t(len(status.redacted)))
    console.print(table)

    heading("Totals")
    table = _table("kind", "entries", numeric=("entries",))
    for kind, count in report.totals:
        table.add_row(kind, _t(count))
    table.add_row(_t("redacted (unclassifiable)"), _t(report.redacted))
    table.add_row(_t("all", "bold"), _t(report.entries, "bold"))
    console.print(table)

    heading("Decisions by classification and jurisdiction")
    if report.decisions:
        table = _table("classification", "jurisdiction", "allow", "deny", numeric=("allow", "deny"))
        for cell in report.decisions:
            table.add_row(
                _t(cell.classification), _t(cell.jurisdiction), _t(cell.allow), _t(cell.deny)
            )
        table.add_row(_t("all", "bold"), _t(""), _t(report.allowed), _t(report.denied))
        console.print(table)
    else:
        console.print("No decisions, placements or admissions in this period.")

    heading("Residency findings")
    if not report.findings:
        console.print(_t("NONE: no data was accessed or placed outside its declared residency."))
    else:
        console.print(
            _t(
                f"VIOLATIONS: {report.violations}: data was allowed outside its declared residency",
                "bold red",
            )
        )
        # One block per finding: entry uids are long and would not fit as columns.
        for f in report.findings[:SHOWN_FINDINGS]:
            console.print()
            console.print(
                Text.assemble(
                    (f"entry {f.index}", "bold"),
                    f"  {_when(f.time)}  {f.kind}  ",
                    _t(f.classification),
                    "  residency ",
                    _t(" ".join(f.residency)),
                    "  at ",
                    _t(_where(f), "bold red"),
                )
            )
            grid = Table.grid(padding=(0, 2))
            grid.add_column(no_wrap=True)
            grid.add_column(overflow="fold")
            grid.add_row("    subject", _t(f.subject))
            grid.add_row("    action", _t(f.action))
            grid.add_row("    resource", _t(f.resource))
            if f.sites:
                grid.add_row("    sites outside", _t(" ".join(f.sites)))
            grid.add_row("    decision id", _t(f.decision_id))
            console.print(grid)
        if report.violations > SHOWN_FINDINGS:
            hidden = report.violations - SHOWN_FINDINGS
            console.print(_t(f"... and {hidden:,} more: use --format json or csv for all."))

    heading("Denials by policy")
    if report.denials:
        table = _table("policy", "denials", numeric=("denials",))
        for policy, count in report.denials:
            table.add_row(_t(policy), _t(count))
        console.print(table)
    else:
        console.print("No denials in this period.")

    heading("Attestations and certificates")
    table = _table("kind", "issued", "refused", numeric=("issued", "refused"))
    for c in report.credentials:
        table.add_row(_credential_label(c.kind), _t(c.issued), _t(c.refused))
    console.print(table)
    refusals = [(c.kind, reason, n) for c in report.credentials for reason, n in c.refusals]
    if refusals:
        table = _table("refused", "reason", "count", numeric=("count",))
        for kind, reason, count in refusals:
            table.add_row(kind, _t(reason), _t(count))
        console.print(table)
    # rich pads every cell to its column's width.
    return "".join(line.rstrip() + "\n" for line in out.getvalue().splitlines())


# -- html ------------------------------------------------------------------------------

_ALLOW = "#2e7d32"
_DENY = "#c62828"
_CHART_ROWS = 30

_CSS = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --soft: #f6f8fa;
  --ok: #1a7f37; --ok-bg: #dafbe1; --bad: #cf222e; --bad-bg: #ffebe9;
  --warn: #9a6700; --warn-bg: #fff8c5; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1100px; padding: 24px; color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; padding-bottom: 4px;
  border-bottom: 1px solid var(--line); }
.meta { color: var(--muted); margin: 0 0 12px; }
.status { border-left: 6px solid; border-radius: 6px; padding: 10px 14px; margin: 12px 0; }
.status.ok { border-color: var(--ok); background: var(--ok-bg); }
.status.warn { border-color: var(--warn); background: var(--warn-bg); }
.status.bad { border-color: var(--bad); background: var(--bad-bg); }
.status strong { font-size: 15px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(130px, 1fr));
  gap: 10px; margin: 16px 0; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
.card .n { display: block; font-size: 24px; font-weight: 600;
  font-variant-numeric: tabular-nums; }
.card .l { color: var(--muted); font-size: 12px; }
.card.bad { border-color: var(--bad); background: var(--bad-bg); color: var(--bad); }
.card.ok { border-color: var(--ok); }
table { border-collapse: collapse; width: 100%; margin: 8px 0; }
th, td { text-align: left; vertical-align: top; padding: 4px 8px;
  border-bottom: 1px solid var(--line); }
thead th { background: var(--soft); font-weight: 600; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.t, code { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  overflow-wrap: anywhere; }
tr.total td { font-weight: 600; }
.banner { border-radius: 6px; padding: 10px 14px; font-weight: 600; margin: 8px 0; }
.banner.bad { background: var(--bad); color: #fff; font-size: 16px; }
.banner.ok { background: var(--ok-bg); color: var(--ok); border: 1px solid var(--ok); }
table.findings td { background: var(--bad-bg); }
table.findings td.where { color: var(--bad); font-weight: 600; }
.muted { color: var(--muted); }
strong.bad { color: var(--bad); }
svg.chart { display: block; width: 100%; max-width: 820px; height: auto; margin: 8px 0; }
svg.chart text { font-size: 12px; fill: var(--ink); }
footer { margin-top: 32px; color: var(--muted); font-size: 12px; }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  section, .cards, svg.chart, tr { break-inside: avoid; }
  h2 { break-after: avoid; }
  thead { display: table-header-group; }
}
"""


def _h(value: str | int | None) -> str:
    """Any value as HTML text: controls escaped, markup characters escaped."""
    if value is None:
        return '<span class="muted">-</span>'
    text = value if isinstance(value, str) else f"{value:,}"
    return html.escape(_clean(text), quote=True)


def _short(text: str, limit: int = 32) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _svg_bars(
    chart_id: str,
    title: str,
    series: Sequence[tuple[str, str]],
    rows: Sequence[tuple[str, Sequence[int]]],
) -> str:
    """A horizontal (stacked, when there are several ``series``) bar chart as inline SVG.

    ``series`` are (name, colour); each row is (label, one value per series). Every bar
    has an SVG ``<title>`` naming its group, series and value.
    """
    label_w, bars_w, row_h, bar_h, top = 250, 460, 22, 14, 26
    width = label_w + bars_w + 130  # room for the figures after the longest bar
    height = top + row_h * len(rows) + 4
    scale = max((sum(values) for _, values in rows), default=0) or 1
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" font-size="12" '
        f'aria-labelledby="{chart_id}-title">',
        f'<title id="{chart_id}-title">{_h(title)}</title>',
    ]
    x = label_w
    for name, colour in series:
        parts.append(
            f'<rect x="{x}" y="6" width="12" height="12" fill="{colour}"/>'
            f'<text x="{x + 16}" y="16">{_h(name)}</text>'
        )
        x += 24 + 8 * len(name)
    for number, (label, values) in enumerate(rows):
        y = top + number * row_h
        parts.append(
            f'<text x="{label_w - 8}" y="{y + bar_h - 2}" text-anchor="end">'
            f"<title>{_h(label)}</title>{_h(_short(label))}</text>"
        )
        x_pos = float(label_w)
        for (name, colour), value in zip(series, values, strict=True):
            if value:
                bar = bars_w * value / scale
                parts.append(
                    f'<rect x="{x_pos:.1f}" y="{y}" width="{max(bar, 1.0):.1f}" '
                    f'height="{bar_h}" fill="{colour}">'
                    f"<title>{_h(label)}: {value:,} {_h(name)}</title></rect>"
                )
                x_pos += bar
        figures = " / ".join(f"{value:,}" for value in values)
        parts.append(f'<text x="{x_pos + 6:.1f}" y="{y + bar_h - 2}">{figures}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _html_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    numeric: Sequence[int] = (),
    css: str = "",
    total: Sequence[str] | None = None,
) -> str:
    """A table of already-escaped cells; ``numeric`` column positions align right."""

    def cells(row: Sequence[str], tag: str) -> str:
        return "".join(
            f'<{tag} class="num">{c}</{tag}>' if i in numeric else f"<{tag}>{c}</{tag}>"
            for i, c in enumerate(row)
        )

    head = "".join(
        f'<th scope="col" class="num">{_h(h)}</th>'
        if i in numeric
        else f'<th scope="col">{_h(h)}</th>'
        for i, h in enumerate(headers)
    )
    body = "".join(f"<tr>{cells(row, 'td')}</tr>" for row in rows)
    if total is not None:
        body += f'<tr class="total">{cells(total, "td")}</tr>'
    klass = f' class="{css}"' if css else ""
    return f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_status(status: ReportStatus) -> str:
    if not status.intact:
        return (
            '<div class="status bad" role="alert"><strong>Log NOT intact.</strong> '
            f"{_h(status.problem or 'the log does not verify')}<br>"
            "The counts below come from entries that did not verify.</div>"
        )
    if status.checkpoint is None:
        return (
            '<div class="status warn"><strong>Log intact</strong> '
            f"({_h(status.tree_size)} entries), but not checked against a signed "
            "checkpoint.</div>"
        )
    return (
        f'<div class="status ok"><strong>Log intact</strong> ({_h(status.tree_size)} '
        f"entries), verified against checkpoint <code>{_h(status.checkpoint)}</code>.</div>"
    )


def _card(value: int, label: str, css: str = "") -> str:
    klass = f"card {css}".strip()
    return (
        f'<div class="{klass}"><span class="n">{_h(value)}</span>'
        f'<span class="l">{label}</span></div>'
    )


def _render_html(report: Report) -> str:
    status = report.status
    issued = sum(c.issued for c in report.credentials)
    refused = sum(c.refused for c in report.credentials)
    out: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # Defence in depth: even a string that escaped escaping could not load or run anything.
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Docket residency and compliance report: {_h(_period(report))}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<header><h1>Docket residency and compliance report</h1>",
        f'<p class="meta">Period: {_h(_period(report))}<br>'
        f"Generated: {_h(_when(report.generated_at))}",
    ]
    if report.first_time is not None and report.last_time is not None:
        out.append(
            f"<br>Entries from {_h(_when(report.first_time))} to {_h(_when(report.last_time))}"
        )
    out += ["</p>", _html_status(status), "</header>", "<main>"]

    violation_css = "bad" if report.violations else "ok"
    out += [
        '<section aria-label="Summary"><div class="cards">',
        _card(report.entries, "entries in period"),
        _card(report.allowed, "allowed decisions"),
        _card(report.denied, "denied decisions"),
        _card(report.violations, "residency violations", violation_css),
        _card(issued, "credentials issued"),
        _card(refused, "credentials refused"),
        _card(report.redacted, "redacted entries"),
        "</div></section>",
    ]

    out.append('<section><h2 id="findings">Residency findings</h2>')
    if not report.findings:
        out.append(
            '<div class="banner ok">No residency violations: no data was accessed or placed '
            "outside its declared residency.</div>"
        )
    else:
        out.append(
            f'<div class="banner bad" role="alert">{report.violations:,} RESIDENCY '
            f"VIOLATION{'S' if report.violations != 1 else ''}: data was allowed outside "
            "its declared residency.</div>"
        )
        out.append(
            _html_table(
                (
                    "Entry",
                    "Time",
                    "Kind",
                    "Subject",
                    "Action",
                    "Resource",
                    "Classification",
                    "Residency",
                    "Where",
                    "Decision id",
                ),
                (
                    (
                        _h(str(f.index)),
                        _h(_when(f.time)),
                        _h(f.kind),
                        f"<code>{_h(f.subject)}</code>",
                        f"<code>{_h(f.action)}</code>",
                        f"<code>{_h(f.resource)}</code>",
                        _h(f.classification),
                        _h(", ".join(f.residency)),
                        _h(_where(f)),
                        f"<code>{_h(f.decision_id)}</code>",
                    )
                    for f in report.findings[:SHOWN_FINDINGS]
                ),
                css="findings",
            )
        )
        if report.violations > SHOWN_FINDINGS:
            hidden = report.violations - SHOWN_FINDINGS
            out.append(
                f'<p class="banner bad">... and {hidden:,} more findings: use '
                "<code>--format json</code> or <code>csv</code> for all of them.</p>"
            )
    out.append("</section>")

    out.append('<section><h2 id="decisions">Decisions by classification and jurisdiction</h2>')
    if report.decisions:
        out.append(
            '<p class="muted">Access decisions, placements and admissions; jurisdiction is '
            "where the request came from, or the chosen site's for a placement.</p>"
        )
        rows = [
            (f"{cell.classification} / {cell.jurisdiction}", (cell.allow, cell.deny))
            for cell in report.decisions
        ]
        out.append(
            _svg_bars(
                "chart-decisions",
                "Allowed and denied decisions by classification and jurisdiction",
                (("allow", _ALLOW), ("deny", _DENY)),
                rows[:_CHART_ROWS],
            )
        )
        if len(rows) > _CHART_ROWS:
            out.append(f'<p class="muted">Chart shows the first {_CHART_ROWS} groups.</p>')
        out.append(
            _html_table(
                ("Classification", "Jurisdiction", "Allow", "Deny"),
                (
                    (_h(c.classification), _h(c.jurisdiction), _h(c.allow), _h(c.deny))
                    for c in report.decisions
                ),
                numeric=(2, 3),
                total=("All", "", _h(report.allowed), _h(report.denied)),
            )
        )
    else:
        out.append('<p class="muted">No decisions, placements or admissions in this period.</p>')
    out.append("</section>")

    out.append('<section><h2 id="denials">Denials by policy</h2>')
    if report.denials:
        out.append(
            '<p class="muted">Each denial counts once for every policy that determined it.</p>'
        )
        out.append(
            _svg_bars(
                "chart-denials",
                "Denials by policy",
                (("denials", _DENY),),
                [(policy, (count,)) for policy, count in report.denials[:_CHART_ROWS]],
            )
        )
        if len(report.denials) > _CHART_ROWS:
            out.append(f'<p class="muted">Chart shows the top {_CHART_ROWS} policies.</p>')
        out.append(
            _html_table(
                ("Policy", "Denials"),
                ((f"<code>{_h(p)}</code>", _h(n)) for p, n in report.denials),
                numeric=(1,),
            )
        )
    else:
        out.append('<p class="muted">No denials in this period.</p>')
    out.append("</section>")

    out.append('<section><h2 id="credentials">Attestations and certificates</h2>')
    if issued or refused:
        out.append(
            _svg_bars(
                "chart-credentials",
                "Attestations and certificates issued and refused",
                (("issued", _ALLOW), ("refused", _DENY)),
                [(_credential_label(c.kind), (c.issued, c.refused)) for c in report.credentials],
            )
        )
    else:
        out.append('<p class="muted">No attestations or certificates in this period.</p>')
    out.append(
        _html_table(
            ("Kind", "Issued", "Refused"),
            ((_credential_label(c.kind), _h(c.issued), _h(c.refused)) for c in report.credentials),
            numeric=(1, 2),
        )
    )
    refusals = [(c.kind, reason, n) for c in report.credentials for reason, n in c.refusals]
    if refusals:
        out.append(
            _html_table(
                ("Refused", "Reason", "Count"),
                ((_h(kind), _h(reason), _h(n)) for kind, reason, n in refusals),
                numeric=(2,),
            )
        )
    out.append("</section>")

    out.append('<section><h2 id="totals">Entries by kind</h2>')
    out.append(
        _html_table(
            ("Kind", "Entries"),
            [(_h(kind), _h(count)) for kind, count in report.totals]
            + [("redacted (payload erased, unclassifiable)", _h(report.redacted))],
            numeric=(1,),
            total=("All", _h(report.entries)),
        )
    )
    out.append("</section>")

    redacted = ", ".join(str(index) for index in status.redacted[:50])
    if len(status.redacted) > 50:
        redacted += f", \u2026 ({len(status.redacted):,} in all)"
    out.append('<section><h2 id="verification">Verification</h2>')
    out.append(
        _html_table(
            ("Check", "Result"),
            (
                ("Intact", "yes" if status.intact else '<strong class="bad">NO</strong>'),
                ("Tree size", _h(status.tree_size)),
                ("Checkpoint", f"<code>{_h(status.checkpoint or 'none')}</code>"),
                ("Problem", _h(status.problem)),
                ("Redacted entries in the log", _h(redacted or "none")),
            ),
        )
    )
    out.append("</section></main>")
    out.append(
        "<footer>Produced by <code>docket audit report</code> from the tamper-evident audit "
        "log. Residency findings list every allowed access to, or placement of, data "
        "outside its declared residency, whatever its classification, one per decision; "
        "the expected number is zero.</footer>"
    )
    out.append("</body></html>\n")
    return "\n".join(out)


# -- entry point -----------------------------------------------------------------------


def render(report: Report, fmt: Format, *, color: bool = False) -> str:
    """``report`` as ``table`` (terminal text), ``json``, ``csv`` or ``html`` (one
    self-contained file). ``color`` adds ANSI colours to ``table`` (for a terminal).

    Raises ``ValueError`` for any other format.
    """
    if fmt == "table":
        return _render_table(report, color=color)
    if fmt == "json":
        return _render_json(report)
    if fmt == "csv":
        return _render_csv(report)
    if fmt == "html":
        return _render_html(report)
    raise ValueError(f"unknown report format {fmt!r}: expected one of {', '.join(FORMATS)}")
