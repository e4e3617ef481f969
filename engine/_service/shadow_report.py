"""The disagreement report of a shadow bundle, from the audit log alone
(``docket policy shadow-report``).

The log says which decisions a candidate made again: a ``bundle`` entry with action
``shadow`` (the candidate coming into use) is followed by the decisions it shadowed,
until the next ``load`` (a restart, which names its candidate again if it has one).
An agreement leaves no trace on its entry, so decisions are counted by that order; a
disagreement is annotated on its entry (``detail.shadow``, which names the candidate),
and is counted from the annotation. No I/O here: the command reads the entries.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from audit import Entry
from engine._service.shadow import ANNOTATION, OUTCOMES

EXAMPLES = 5
"""Examples kept per kind of disagreement."""


@dataclass
class CandidateReport:
    """What one candidate bundle decided beside the live one over a period."""

    version: str
    name: str | None = None
    revision: int | None = None
    source: str | None = None
    decisions: int = 0
    """Decisions made while this candidate was in use (each made again by it)."""
    outcomes: Counter[str] = field(default_factory=Counter)
    """Disagreements by kind (``agree`` is ``decisions`` less their sum)."""
    policies: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Disagreements by (the candidate's determining or erring policy, kind)."""
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def disagreements(self) -> int:
        return sum(self.outcomes.values())

    @property
    def clean(self) -> bool:
        """No disagreement over at least one decision made with this candidate."""
        return self.decisions > 0 and self.disagreements == 0

    def document(self) -> dict[str, Any]:
        """The report as JSON (``--format json``)."""
        counts = {kind: self.outcomes.get(kind, 0) for kind in OUTCOMES if kind != "agree"}
        return {
            "candidate": {
                "version": self.version,
                "name": self.name,
                "revision": self.revision,
                "source": self.source,
            },
            "decisions": self.decisions,
            "agree": max(self.decisions - self.disagreements, 0),
            "disagreements": self.disagreements,
            "by_kind": counts,
            "by_policy": [
                {"policy": policy, "kind": kind, "count": count}
                for (policy, kind), count in self.policies.most_common()
            ],
            "examples": self.examples,
            "clean": self.clean,
        }


def _inside(entry: Entry, since: datetime | None, until: datetime | None) -> bool:
    return (since is None or entry.time >= since) and (until is None or entry.time < until)


def _example(entry: Entry, note: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "decision_id": entry.detail.get("decision_id"),
        "time": entry.time.isoformat(),
        "subject": entry.subject,
        "action": entry.action,
        "resource": entry.resource,
        "live": {"decision": entry.decision, "policies": list(entry.policies)},
        "candidate": {
            "decision": note.get("decision"),
            "policies": list(note.get("policies") or ()),
            "errors": list(note.get("errors") or ()),
        },
    }


def shadow_reports(
    entries: Iterable[Entry], *, since: datetime | None = None, until: datetime | None = None
) -> list[CandidateReport]:
    """One report per candidate seen, in the order they came into use, over the
    decisions in [``since``, ``until``) (by each entry's hashed time)."""
    reports: dict[str, CandidateReport] = {}
    current: CandidateReport | None = None
    for entry in entries:
        if entry.kind == "bundle":
            if entry.action == "load":
                current = None
            elif entry.action == "shadow" and entry.bundle_version is not None:
                current = reports.setdefault(
                    entry.bundle_version, CandidateReport(entry.bundle_version)
                )
                current.name = entry.detail.get("name")
                current.revision = entry.detail.get("revision")
                current.source = entry.resource
            continue
        if entry.kind not in ("decision", "admission") or entry.request_digest is None:
            continue  # placements, refusals and unevaluated requests are not shadowed
        if not _inside(entry, since, until):
            continue
        if current is not None:
            current.decisions += 1
        note = entry.detail.get(ANNOTATION)
        if not isinstance(note, Mapping) or not isinstance(note.get("bundle"), str):
            continue
        report = reports.setdefault(note["bundle"], CandidateReport(note["bundle"]))
        kind = str(note.get("outcome"))
        report.outcomes[kind] += 1
        errors = note.get("errors") or ()
        named = (
            [e.get("policy") for e in errors if isinstance(e, Mapping)] if kind == "error" else []
        )
        for policy in [p for p in named if p] or list(note.get("policies") or ()) or ["(none)"]:
            report.policies[(str(policy), kind)] += 1
        kept = report.examples.setdefault(kind, [])
        if len(kept) < EXAMPLES:
            kept.append(_example(entry, note))
    return list(reports.values())


def render_text(report: CandidateReport) -> str:
    """The report for a terminal."""
    revision = f" revision {report.revision}" if report.revision is not None else ""
    name = f" ({report.name}{revision})" if report.name else revision
    source = f" from {report.source}" if report.source else ""
    lines = [
        f"shadow bundle {report.version}{name}{source}",
        f"decisions made with it: {report.decisions:,}; agree "
        f"{max(report.decisions - report.disagreements, 0):,}; disagreements "
        f"{report.disagreements:,}",
    ]
    for outcome in OUTCOMES[1:]:
        lines.append(f"  {outcome:<20} {report.outcomes.get(outcome, 0):>8,}")
    if report.policies:
        lines.append("by policy (the candidate's determining or erring policy):")
        for (policy, kind), count in report.policies.most_common():
            lines.append(f"  {policy:<40} {kind:<20} {count:>8,}")
    if report.examples:
        lines.append("examples:")
    for kind, examples in report.examples.items():
        for example in examples:
            candidate = example["candidate"]
            why = ", ".join(candidate["policies"]) or "no policy"
            if candidate["errors"]:
                why = "; ".join(
                    f"{e.get('policy')}: {e.get('message')}" for e in candidate["errors"]
                )
            lines.append(
                f"  {kind} {example['time']} {example['subject']} {example['action']} "
                f"{example['resource']}: live {example['live']['decision']}, candidate "
                f"{candidate['decision'] or 'raised'} ({why}) [decision {example['decision_id']}]"
            )
    verdict = (
        "clean: no disagreement"
        if report.clean
        else "NOT clean"
        if report.decisions
        else "no decision was made with this candidate"
    )
    lines.append(verdict)
    return "\n".join(lines)
