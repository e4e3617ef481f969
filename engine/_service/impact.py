"""Impact analysis: what a candidate bundle would have decided differently over recorded
traffic (``docket policy diff``), from the replays of :mod:`engine._service.replay`.

A decision *flips* when allow becomes deny or deny becomes allow. Flips are counted by
direction, grouped by determining policy (the policies that determined the recorded
decision and those that determine the new one; a default deny, determined by none, is
``(default deny)``) and by principal type → resource type, each group with up to N
examples. Placements are reported likewise when their allowed sites change order
(``reranked``) or lose a site (``lost``). Requests that could not be replayed are listed
with why: they are never counted as unchanged.

Beside the replay, the ``static`` section compares the two bundles themselves
(:func:`~engine._core.bundle_compare.compare_bundles`: policies added, removed, changed;
schema; policy tests that change outcome), in every form.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from engine._core.bundle_compare import BundleComparison
from engine._service.replay import Replayed, Side

DEFAULT_DENY = "(default deny)"


@dataclass(slots=True)
class Group:
    """Flips under one key: how many, and the first examples."""

    count: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    def add(self, example: dict[str, Any], limit: int) -> None:
        self.count += 1
        if len(self.examples) < limit:
            self.examples.append(example)


@dataclass(slots=True)
class ImpactReport:
    """The replay's result, ready for text, JSON or HTML."""

    candidate: str
    since: str | None
    until: str | None
    examples: int
    replayed: int = 0
    decisions: int = 0
    placements: int = 0
    flips: dict[str, int] = field(default_factory=lambda: {"allow→deny": 0, "deny→allow": 0})
    by_policy: dict[str, Group] = field(default_factory=dict)
    by_types: dict[str, Group] = field(default_factory=dict)
    reranked: Group = field(default_factory=Group)
    lost_sites: dict[str, Group] = field(default_factory=dict)
    problems: list[dict[str, Any]] = field(default_factory=list)
    static: BundleComparison | None = None
    """The static comparison of the live and candidate bundles (None: not made)."""

    @property
    def flipped(self) -> int:
        """Decisions that flip, both directions."""
        return sum(self.flips.values())

    @property
    def changed(self) -> bool:
        """Anything that would change: a flip, a reranked placement or a lost site."""
        return bool(self.flipped or self.reranked.count or self.lost_sites)


def _side(side: Side) -> dict[str, Any]:
    shown: dict[str, Any] = {"decision": side.decision, "policies": list(side.policies)}
    if side.sites:
        shown["sites"] = list(side.sites)
    if side.error:
        shown["error"] = side.error
    return shown


def _example(item: Replayed) -> dict[str, Any]:
    assert item.recorded is not None
    assert item.new is not None
    return {
        "index": item.index,
        "time": item.time,
        "principal": item.principal,
        "action": item.action,
        "resource": item.resource,
        "old": _side(item.recorded),
        "new": _side(item.new),
    }


def build_report(
    replayed: Iterable[Replayed],
    *,
    candidate: str,
    since: str | None = None,
    until: str | None = None,
    examples: int = 5,
) -> ImpactReport:
    """Count and group every flip, reranked placement, lost site and problem."""
    report = ImpactReport(candidate, since, until, examples)
    for item in replayed:
        if item.problem is not None or item.recorded is None or item.new is None:
            report.problems.append(
                {"index": item.index, "time": item.time, "problem": item.problem}
            )
            continue
        report.replayed += 1
        if item.kind == "placement":
            report.placements += 1
            lost = set(item.recorded.sites) - set(item.new.sites)
            if item.reranked and not lost:
                report.reranked.add(_example(item), examples)
            for site in sorted(lost):
                report.lost_sites.setdefault(site, Group()).add(_example(item), examples)
        else:
            report.decisions += 1
        if not item.flipped:
            continue
        report.flips[f"{item.recorded.decision}→{item.new.decision}"] += 1
        example = _example(item)
        policies = sorted(set(item.recorded.policies) | set(item.new.policies)) or [DEFAULT_DENY]
        for policy in policies:
            report.by_policy.setdefault(policy, Group()).add(example, examples)
        types = f"{item.principal_type} → {item.resource_type}"
        report.by_types.setdefault(types, Group()).add(example, examples)
    return report


def _groups(groups: dict[str, Group]) -> list[dict[str, Any]]:
    ordered = sorted(groups.items(), key=lambda kv: (-kv[1].count, kv[0]))
    return [{"key": key, "count": g.count, "examples": g.examples} for key, g in ordered]


def to_json(report: ImpactReport) -> dict[str, Any]:
    """The report as a JSON document."""
    return {
        "candidate": report.candidate,
        "period": {"since": report.since, "until": report.until},
        "replayed": {"decisions": report.decisions, "placements": report.placements},
        "flips": {**report.flips, "total": report.flipped},
        "by_policy": _groups(report.by_policy),
        "by_types": _groups(report.by_types),
        "placements": {
            "reranked": {"count": report.reranked.count, "examples": report.reranked.examples},
            "lost_sites": _groups(report.lost_sites),
        },
        "problems": report.problems,
        "static": None if report.static is None else report.static.to_json(),
    }


def _line(example: dict[str, Any]) -> str:
    old, new = example["old"], example["new"]
    return (
        f"    #{example['index']} {example['time']} {example['principal']} "
        f"{example['action']} {example['resource']}: {old['decision']} "
        f"[{', '.join(old['policies'])}] → {new['decision']} [{', '.join(new['policies'])}]"
        + (f" ({new['error']})" if "error" in new else "")
    )


def to_text(report: ImpactReport) -> str:
    """The report for a terminal."""
    period = f"{report.since or 'the beginning'} to {report.until or 'now'}"
    lines = [
        f"candidate {report.candidate}: replayed {report.decisions} decisions and "
        f"{report.placements} placements ({period})",
        f"flips: {report.flipped} ({report.flips['allow→deny']} allow→deny, "
        f"{report.flips['deny→allow']} deny→allow)",
    ]
    for title, groups in (("by policy", report.by_policy), ("by type", report.by_types)):
        if groups:
            lines.append(f"{title}:")
            for group in _groups(groups):
                lines.append(f"  {group['key']}: {group['count']}")
                lines += [_line(example) for example in group["examples"]]
    if report.reranked.count:
        lines.append(f"placements reranked: {report.reranked.count}")
        lines += [_line(example) for example in report.reranked.examples]
    for group in _groups(report.lost_sites):
        lines.append(f"placements losing site {group['key']}: {group['count']}")
        lines += [_line(example) for example in group["examples"]]
    if report.problems:
        lines.append(f"not replayed: {len(report.problems)}")
        lines += [f"    #{p['index']}: {p['problem']}" for p in report.problems[: report.examples]]
    if report.static is not None:
        lines.append("static comparison with the live bundle:")
        lines += ["  " + line for line in report.static.text_lines()]
    return "\n".join(lines) + "\n"


def to_html(report: ImpactReport) -> str:
    """The report as one self-contained HTML page (the JSON form embedded for tools)."""
    esc = html.escape
    parts = [
        "<!doctype html><meta charset=utf-8><title>docket policy diff</title>",
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}</style>",
        f"<h1>Impact of {esc(report.candidate)}</h1>",
        f"<p>{report.decisions} decisions and {report.placements} placements replayed; "
        f"<b>{report.flipped}</b> flips ({report.flips['allow→deny']} allow→deny, "
        f"{report.flips['deny→allow']} deny→allow); {len(report.problems)} not replayed.</p>",
    ]
    sections = [("By policy", report.by_policy), ("By principal → resource type", report.by_types)]
    sections.append(("Placements losing a site", report.lost_sites))
    if report.reranked.count:
        sections.append(("Placements reranked", {"reranked": report.reranked}))
    for title, groups in sections:
        parts.append(f"<h2>{esc(title)}</h2><table><tr><th>key<th>count<th>examples</tr>")
        for group in _groups(groups):
            shown = "<br>".join(esc(_line(example).strip()) for example in group["examples"])
            parts.append(f"<tr><td>{esc(group['key'])}<td>{group['count']}<td>{shown}</tr>")
        parts.append("</table>")
    parts.append('<h2>Static comparison</h2><div id="static">')
    parts.append("not made" if report.static is None else report.static.html())
    parts.append("</div>")
    data = json.dumps(to_json(report)).replace("</", "<\\/")
    parts.append(f'<script type="application/json" id="report">{data}</script>')
    return "\n".join(parts) + "\n"
