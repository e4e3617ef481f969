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
     "coverage": {"complete": bool, "not_covered": int,           # entries not read
                  "gaps": [{"log"?, "first", "last", "reason"}]},
     "decisions": [{"classification", "jurisdiction", "allow", "deny"}],
     "residency": {"violations": int,
                   "findings": [{"log"?, "index", "time", "kind", "subject", "action", "resource",
                                 "classification", "residency": [str], "jurisdiction",
                                 "site", "sites": [str], "decision_id"}]},
     "denials": [{"policy", "count"}],                             # most first
     "credentials": {"attestation"|"certificate":
                     {"issued", "refused", "refusals": [{"reason", "count"}]}}}

``"log"`` is there only in a report of several logs (the fleet's total): the site.
The fleet's report (``render(fleet, "json")``, a :class:`FleetReport`) is the total's
object with ``"report": "docket-fleet-residency"`` and ``"sites": [{"site",
"coverage": {"state", "problem", "entries", "checkpoint", "cosigned", "head", "behind",
"first_entry", "last_entry"}, "report": {…one log's object…} | null}]``.

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
coverage           index (a gap's first), site (its log)       complete, not_covered,
                                                               gap_last, gap_reason
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

The fleet's CSV has a first column more, ``log``: empty for the total's rows, the site's
name for its own rows and for its coverage (section ``site``, metrics as the JSON's).

Modules, one reason to change each: :mod:`~audit._report.model` (the counts and
:func:`build_report`), :mod:`~audit._report.text` (the terminal table),
:mod:`~audit._report.data` (JSON and CSV), :mod:`~audit._report.html` (the page, from
``templates/report.html.j2`` and ``templates/report.css``) and
:mod:`~audit._report.wording` (how values read in every format); the fleet's sections
and states in :mod:`~audit._report.fleet`.

Text taken from entries is caller-supplied: every renderer escapes control and
bidirectional-override characters, HTML escapes all of it, and CSV cells that a
spreadsheet would read as a formula (``=``, ``+``, ``-``, ``@``) are prefixed with ``'``.
"""

from __future__ import annotations

from typing import Literal, get_args

from audit._report.data import CSV_COLUMNS, render_csv, render_json
from audit._report.fleet import LAG_SECONDS, FleetReport, SiteSection, fleet_report
from audit._report.html import render_html
from audit._report.model import (
    CREDENTIAL_KINDS,
    DECISION_KINDS,
    DEFAULT_DENY,
    NO_REASON,
    UNCLASSIFIED,
    UNKNOWN,
    CredentialCount,
    DecisionCount,
    Finding,
    Gap,
    Report,
    ReportStatus,
    build_report,
    merge_reports,
)
from audit._report.text import render_table
from audit._report.wording import SHOWN_FINDINGS

__all__ = [
    "CREDENTIAL_KINDS",
    "CSV_COLUMNS",
    "DECISION_KINDS",
    "DEFAULT_DENY",
    "FORMATS",
    "LAG_SECONDS",
    "NO_REASON",
    "SHOWN_FINDINGS",
    "UNCLASSIFIED",
    "UNKNOWN",
    "CredentialCount",
    "DecisionCount",
    "Finding",
    "FleetReport",
    "Format",
    "Gap",
    "Report",
    "ReportStatus",
    "SiteSection",
    "build_report",
    "fleet_report",
    "merge_reports",
    "render",
]

Format = Literal["table", "html", "json", "csv"]
FORMATS: tuple[str, ...] = get_args(Format)


def render(report: Report | FleetReport, fmt: Format, *, color: bool = False) -> str:
    """``report`` (one log's, or the fleet's) as ``table`` (terminal text), ``json``,
    ``csv`` or ``html`` (one self-contained file). ``color`` adds ANSI colours to
    ``table`` (for a terminal).

    Raises ``ValueError`` for any other format.
    """
    if fmt == "table":
        return render_table(report, color=color)
    if fmt == "json":
        return render_json(report)
    if fmt == "csv":
        return render_csv(report)
    if fmt == "html":
        return render_html(report)
    raise ValueError(f"unknown report format {fmt!r}: expected one of {', '.join(FORMATS)}")
