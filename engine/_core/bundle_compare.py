"""Two bundles compared statically: what a candidate changes before it serves a request.

:func:`compare_bundles` reads both bundles (no I/O: they are loaded already) and reports

- policies added, removed and changed, by id; a policy is changed when its meaning is
  (Cedar's JSON form differs), never for whitespace or comments, and a change carries a
  unified diff of both policies in Cedar's own formatting, its effect change
  (permit ↔ forbid) and its annotation changes (``@fresh_policy`` called out);
- schema changes: entity types, their attributes (common types inlined), actions (the
  principal and resource types they apply to, their context attributes), common types;
- the bundles' policy tests (``tests/*.yaml``) run against both: each bundle runs its
  own version of a case, and a case only one bundle has is run against the other too;
  a case whose decision, reasons, errors or verdict differs is reported with both;
- entities, sites and device classes (reference values) added, removed and changed,
  as counts and at most :data:`MAX_LISTED` ids each;
- the bundle's name, revision, signer and ``forbid_errors`` setting.

The JSON form (:meth:`BundleComparison.to_json`) is described in docs/policy-diff.md.
"""

from __future__ import annotations

import difflib
import html
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from typing import Any

import cedarpy

from engine._core.bundle import ENTITIES_FILE, PolicyBundle, qualify_entities
from engine._core.policies import Policy
from engine._core.policy_tests import CaseResult, LoadedCase, load_cases, run_cases
from engine._core.schema_json import Type, context_types, entity_types, schema_json
from engine._errors import BundleError

MAX_LISTED = 20
"""Ids listed for each of entities, sites and device classes added, removed or changed;
the rest are counted (``more``)."""
FRESH_POLICY = "fresh_policy"

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class BundleComparison:
    """What a candidate bundle changes against the live one, section by section, each
    section in the JSON form of docs/policy-diff.md."""

    live: Json
    candidate: Json
    metadata: Json
    policies: Json
    schema: Json
    tests: Json
    entities: Json
    sites: Json
    reference: Json

    @property
    def empty(self) -> bool:
        """No difference found (the versions may still differ: formatting, comments,
        files a bundle does not read)."""
        return not any(
            _has_change(section)
            for section in (
                self.metadata["changed"],
                self.policies,
                self.schema,
                {key: value for key, value in self.tests.items() if key != "unchanged"},
                self.entities,
                self.sites,
                self.reference,
            )
        )

    def to_json(self) -> Json:
        """The comparison as JSON-ready values, keys in a stable order."""
        return {
            "empty": self.empty,
            "live": self.live,
            "candidate": self.candidate,
            "metadata": self.metadata,
            "policies": self.policies,
            "schema": self.schema,
            "tests": self.tests,
            "entities": self.entities,
            "sites": self.sites,
            "reference": self.reference,
        }

    def text_lines(self) -> list[str]:
        """The comparison for a terminal, one line each (no trailing newlines)."""
        return [text for _, text in self._lines()]

    def html(self) -> str:
        """A self-contained HTML fragment (a ``<section>``, no scripts, no outside
        resources), every value escaped."""
        out = ['<section class="docket-bundle-comparison">']
        for kind, lines in groupby(self._lines(), key=lambda line: line[0]):
            escaped = [html.escape(text, quote=True) for _, text in lines]
            if kind == "diff":  # one block per diff, its lines kept apart by newlines
                out.append("<pre>" + "\n".join(escaped) + "</pre>")
            else:
                tag = "h3" if kind == "heading" else "p"
                out += [f"<{tag}>{text}</{tag}>" for text in escaped]
        out.append("</section>\n")
        return "\n".join(out)

    def _lines(self) -> list[tuple[str, str]]:
        lines: list[tuple[str, str]] = []
        for side in ("live", "candidate"):
            about: Json = getattr(self, side)
            revision = "" if about["revision"] is None else f" revision {about['revision']}"
            name = "" if about["name"] is None else f" {about['name']}"
            lines.append(("line", f"{side}: {about['source']}{name}{revision} {about['version']}"))
        for field in self.metadata["changed"]:
            lines.append(("line", f"{field}: {self.live[field]!r} -> {self.candidate[field]!r}"))
        lines += _policy_lines(self.policies)
        lines += _schema_lines(self.schema)
        lines += _test_lines(self.tests)
        for title, section in (
            ("entities", self.entities),
            ("sites", self.sites),
            ("device classes", self.reference),
        ):
            lines += _listing_lines(title, section)
        if self.empty:
            lines.append(("line", "no differences"))
        return lines


def compare_bundles(
    live: PolicyBundle, candidate: PolicyBundle, *, now: datetime
) -> BundleComparison:
    """Compare ``candidate`` with ``live`` statically; ``now`` is the time the policy
    tests are decided at. Raises nothing for a bundle whose tests cannot be read: their
    problems are in ``tests.problems``."""
    about = {side: _about(bundle) for side, bundle in (("live", live), ("candidate", candidate))}
    changed = [field for field in _ABOUT[2:] if about["live"][field] != about["candidate"][field]]
    return BundleComparison(
        live=about["live"],
        candidate=about["candidate"],
        metadata={"changed": changed},
        policies=_compare_policies(live.policies, candidate.policies),
        schema=_compare_schema(live, candidate),
        tests=_compare_tests(live, candidate, now),
        entities=_compare_listed(_entities(live), _entities(candidate)),
        sites=_compare_listed(
            {site.name: site.model_dump() for site in live.sites},
            {site.name: site.model_dump() for site in candidate.sites},
        ),
        reference=_compare_listed(
            {c.name: c.model_dump() for c in live.reference.classes},
            {c.name: c.model_dump() for c in candidate.reference.classes},
        ),
    )


_ABOUT = ("source", "version", "name", "revision", "signed_by", "forbid_errors")
"""What is said of each bundle; the fields after ``version`` are its metadata."""


def _about(bundle: PolicyBundle) -> Json:
    return {field: getattr(bundle, field) for field in _ABOUT}


def _has_change(value: Any) -> bool:
    if isinstance(value, Mapping):
        if "count" in value:
            return bool(value["count"])
        return any(_has_change(item) for item in value.values())
    return bool(value)


def _split(
    live: Mapping[str, Any], candidate: Mapping[str, Any]
) -> tuple[list[str], list[str], list[str]]:
    """Keys added, removed, and held by both with different values; each sorted."""
    added = sorted(candidate.keys() - live.keys())
    removed = sorted(live.keys() - candidate.keys())
    changed = sorted(key for key in live.keys() & candidate.keys() if live[key] != candidate[key])
    return added, removed, changed


def _pair(live: Any, candidate: Any) -> Json | None:
    return None if live == candidate else {"live": live, "candidate": candidate}


# Policies


def _compare_policies(live: Iterable[Policy], candidate: Iterable[Policy]) -> Json:
    before = {policy.id: policy for policy in live}
    after = {policy.id: policy for policy in candidate}
    added, removed, common = _split(
        {key: json.loads(p.json) for key, p in before.items()},
        {key: json.loads(p.json) for key, p in after.items()},
    )
    return {
        "added": [_policy_summary(after[key]) for key in added],
        "removed": [_policy_summary(before[key]) for key in removed],
        "changed": [_policy_change(before[key], after[key]) for key in common],
    }


def _annotations(policy: Policy) -> dict[str, str]:
    annotations: dict[str, str] = json.loads(policy.json).get("annotations") or {}
    return annotations


def _policy_summary(policy: Policy) -> Json:
    return {
        "id": policy.id,
        "effect": policy.effect,
        "file": policy.file,
        "line": policy.line,
        "fresh_policy": FRESH_POLICY in _annotations(policy),
        "text": _policy_text(policy).splitlines(),
    }


def _policy_change(live: Policy, candidate: Policy) -> Json:
    before, after = _annotations(live), _annotations(candidate)
    added, removed, changed = _split(before, after)
    annotations = None
    if added or removed or changed:
        annotations = {
            "added": {key: after[key] for key in added},
            "removed": {key: before[key] for key in removed},
            "changed": {key: {"live": before[key], "candidate": after[key]} for key in changed},
        }
    diff = difflib.unified_diff(
        _policy_text(live).splitlines(),
        _policy_text(candidate).splitlines(),
        fromfile=f"live/{live.file}:{live.line}",
        tofile=f"candidate/{candidate.file}:{candidate.line}",
        lineterm="",
    )
    return {
        "id": live.id,
        "file": candidate.file,
        "line": candidate.line,
        "effect": _pair(live.effect, candidate.effect),
        "annotations": annotations,
        "fresh_policy": _pair(FRESH_POLICY in before, FRESH_POLICY in after),
        "diff": list(diff),
    }


def _policy_text(policy: Policy) -> str:
    """The policy in Cedar's own formatting (comments and layout of its source gone)."""
    policy_set = json.dumps(
        {"templates": {}, "templateLinks": [], "staticPolicies": {"p": json.loads(policy.json)}}
    )
    try:
        return cedarpy.format_policies(cedarpy.policies_from_json_str(policy_set))
    except ValueError:
        return json.dumps(json.loads(policy.json), indent=2, sort_keys=True)


# Schema


def _compare_schema(live: PolicyBundle, candidate: PolicyBundle) -> Json:
    before, after = schema_json(live.schema), schema_json(candidate.schema)
    if before is None or after is None:
        # A construct the schema reader does not know: the texts' difference stands.
        diff = difflib.unified_diff(
            str(live.schema).splitlines(),
            str(candidate.schema).splitlines(),
            fromfile="live/schema.cedarschema",
            tofile="candidate/schema.cedarschema",
            lineterm="",
        )
        return {"readable": False, "diff": list(diff)}
    return {
        "entity_types": _compare_declared(
            _declared(before, "entityTypes"),
            _declared(after, "entityTypes"),
            lambda name, old, new: _entity_type_change(
                name, old, new, entity_types(before) or {}, entity_types(after) or {}
            ),
        ),
        "actions": _compare_declared(
            _declared(before, "actions", action=True),
            _declared(after, "actions", action=True),
            lambda name, old, new: _action_change(
                name, old, new, context_types(before) or {}, context_types(after) or {}
            ),
        ),
        "common_types": _compare_declared(
            _declared(before, "commonTypes"),
            _declared(after, "commonTypes"),
            lambda name, old, new: {"name": name},
        ),
    }


def _qualified(space: str, name: str) -> str:
    return f"{space}::{name}" if space else name


def _declared(schema: Mapping[str, Any], kind: str, *, action: bool = False) -> dict[str, Any]:
    """``{qualified name: declaration}`` of one kind; an action as ``NS::Action::"id"``."""
    found = {}
    for space, body in schema.items():
        for name, declared in body.get(kind, {}).items():
            key = (
                f"{_qualified(space, 'Action')}::{json.dumps(name)}"
                if action
                else _qualified(space, name)
            )
            found[key] = (space, name, declared)
    return found


def _compare_declared(
    live: Mapping[str, Any],
    candidate: Mapping[str, Any],
    describe: Callable[[str, Any, Any], Json],
) -> Json:
    added, removed, changed = _split(live, candidate)
    return {
        "added": added,
        "removed": removed,
        "changed": [describe(name, live[name], candidate[name]) for name in changed],
    }


def _type_names(space: str, names: Iterable[str]) -> list[str]:
    return sorted(name if "::" in name else _qualified(space, name) for name in names)


def _entity_type_change(
    name: str,
    live: tuple[str, str, Json],
    candidate: tuple[str, str, Json],
    live_types: Mapping[str, Type],
    candidate_types: Mapping[str, Type],
) -> Json:
    (space, _, before), (_, _, after) = live, candidate
    return {
        "name": name,
        "attributes": _attribute_changes(live_types.get(name), candidate_types.get(name)),
        "member_of": _pair(
            _type_names(space, before.get("memberOfTypes", [])),
            _type_names(space, after.get("memberOfTypes", [])),
        ),
        "tags": _pair(before.get("tags"), after.get("tags")),
        "enum": _pair(before.get("enum"), after.get("enum")),
    }


def _action_change(
    name: str,
    live: tuple[str, str, Json],
    candidate: tuple[str, str, Json],
    live_contexts: Mapping[tuple[str, str], Type],
    candidate_contexts: Mapping[tuple[str, str], Type],
) -> Json:
    (space, action, before), (_, _, after) = live, candidate
    uid = (_qualified(space, "Action"), action)
    applies_before = before.get("appliesTo") or {}
    applies_after = after.get("appliesTo") or {}
    return {
        "name": name,
        "principal_types": _pair(
            _type_names(space, applies_before.get("principalTypes", [])),
            _type_names(space, applies_after.get("principalTypes", [])),
        ),
        "resource_types": _pair(
            _type_names(space, applies_before.get("resourceTypes", [])),
            _type_names(space, applies_after.get("resourceTypes", [])),
        ),
        "context": _attribute_changes(live_contexts.get(uid), candidate_contexts.get(uid)),
        "member_of": _pair(before.get("memberOf"), after.get("memberOf")),
    }


def _attribute_changes(live: Type | None, candidate: Type | None) -> Json:
    before = (live or {}).get("attributes", {})
    after = (candidate or {}).get("attributes", {})
    added, removed, changed = _split(before, after)
    return {
        "added": added,
        "removed": removed,
        "changed": [
            {"name": key, "live": _type_text(before[key]), "candidate": _type_text(after[key])}
            for key in changed
        ],
    }


def _type_text(declared: Mapping[str, Any]) -> str:
    """A resolved type as Cedar's schema syntax writes it (``Set<String>``), with
    ``(optional)`` for an attribute that is not required."""
    kind = declared.get("type")
    if kind == "Set":
        text = f"Set<{_type_text(declared['element'])}>"
    elif kind in ("Entity", "Extension"):
        text = str(declared["name"])
    elif kind == "Record":
        fields = ", ".join(
            f"{name}: {_type_text(value)}" for name, value in declared["attributes"].items()
        )
        text = "{" + fields + "}"
    else:
        text = "Bool" if kind == "Boolean" else str(kind)
    return text if declared.get("required", True) else f"{text} (optional)"


# Policy tests


def _cases(bundle: PolicyBundle) -> tuple[dict[tuple[str, str], LoadedCase], list[str]]:
    try:
        loaded = load_cases(bundle.files)
    except BundleError as exc:
        return {}, list(exc.problems)
    return {(case.file, case.case.name): case for case in loaded}, []


def _run(bundle: PolicyBundle, cases: list[LoadedCase], now: datetime) -> list[Json]:
    return [_outcome(result) for result in run_cases(bundle, cases, now=now)]


def _outcome(result: CaseResult) -> Json:
    return {
        "decision": result.decision,
        "reasons": sorted(result.reasons),
        "errors": sorted(result.errors),
        "passed": result.passed,
        "failures": list(result.failures),
    }


def _compare_tests(live: PolicyBundle, candidate: PolicyBundle, now: datetime) -> Json:
    before, live_problems = _cases(live)
    after, candidate_problems = _cases(candidate)
    keys = sorted(before.keys() | after.keys())
    # Each bundle runs its own version of a case, and the other's when it has none.
    live_runs = _run(live, [before.get(key) or after[key] for key in keys], now)
    candidate_runs = _run(candidate, [after.get(key) or before[key] for key in keys], now)
    report: Json = {"added": [], "removed": [], "changed": [], "unchanged": 0}
    for key, on_live, on_candidate in zip(keys, live_runs, candidate_runs, strict=True):
        entry = {"file": key[0], "name": key[1], "live": on_live, "candidate": on_candidate}
        if key not in before:
            report["added"].append(entry)
        elif key not in after:
            report["removed"].append(entry)
        elif on_live != on_candidate:
            report["changed"].append(entry)
        else:
            report["unchanged"] += 1
    report["problems"] = {"live": live_problems, "candidate": candidate_problems}
    return report


# Catalogs


def _entities(bundle: PolicyBundle) -> dict[str, Any]:
    """The bundle's ``entities.json`` by ``Type::"id"``, types qualified (loading has
    checked the file already)."""
    data = bundle.files.get(ENTITIES_FILE)
    if data is None:
        return {}
    found = {}
    for entity in qualify_entities(json.loads(data), bundle.namespace):
        uid = entity["uid"]
        parents = sorted(json.dumps(parent, sort_keys=True) for parent in entity.get("parents", []))
        found[f"{uid['type']}::{json.dumps(uid['id'])}"] = (
            entity.get("attrs", {}),
            entity.get("tags", {}),
            parents,
        )
    return found


def _listed(ids: list[str]) -> Json:
    return {"count": len(ids), "ids": ids[:MAX_LISTED], "more": max(len(ids) - MAX_LISTED, 0)}


def _compare_listed(live: Mapping[str, Any], candidate: Mapping[str, Any]) -> Json:
    added, removed, changed = _split(live, candidate)
    return {"added": _listed(added), "removed": _listed(removed), "changed": _listed(changed)}


# Rendering


def _policy_lines(policies: Json) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    if _has_change(policies):
        lines.append(("heading", "policies"))
    for verb, sign in (("added", "+"), ("removed", "-")):
        for policy in policies[verb]:
            fresh = " @fresh_policy" if policy["fresh_policy"] else ""
            lines.append(
                (
                    "line",
                    f"{verb}: {policy['id']} ({policy['effect']}{fresh}) "
                    f"{policy['file']}:{policy['line']}",
                )
            )
            lines += [("diff", f"{sign}{line}") for line in policy["text"]]
    for change in policies["changed"]:
        lines.append(("line", f"changed: {change['id']} {change['file']}:{change['line']}"))
        if change["effect"] is not None:
            effect = change["effect"]
            lines.append(
                ("line", f"  {change['id']}: effect {effect['live']} -> {effect['candidate']}")
            )
        if change["fresh_policy"] is not None:
            now_fresh = change["fresh_policy"]["candidate"]
            lines.append(
                ("line", f"  {change['id']}: @fresh_policy {'added' if now_fresh else 'removed'}")
            )
        annotations = change["annotations"] or {}
        for verb in ("added", "removed", "changed"):
            for key in annotations.get(verb, {}):
                if key != FRESH_POLICY:
                    lines.append(("line", f"  {change['id']}: annotation @{key} {verb}"))
        lines += [("diff", line) for line in change["diff"]]
    return lines


def _schema_lines(schema: Json) -> list[tuple[str, str]]:
    if not _has_change(schema):
        return []
    lines: list[tuple[str, str]] = [("heading", "schema")]
    if "diff" in schema:
        return lines + [("diff", line) for line in schema["diff"]]
    for title, key in (
        ("entity type", "entity_types"),
        ("action", "actions"),
        ("common type", "common_types"),
    ):
        section = schema[key]
        lines += [("line", f"{title} added: {name}") for name in section["added"]]
        lines += [("line", f"{title} removed: {name}") for name in section["removed"]]
        for change in section["changed"]:
            details = []
            for field, value in change.items():
                if field == "name" or not _has_change(value):
                    continue
                if "live" in value:
                    details.append(f"{field} {value['live']} -> {value['candidate']}")
                else:
                    parts = [f"+{name}" for name in value["added"]]
                    parts += [f"-{name}" for name in value["removed"]]
                    parts += [
                        f"{item['name']} {item['live']} -> {item['candidate']}"
                        for item in value["changed"]
                    ]
                    details.append(f"{field} {', '.join(parts)}")
            lines.append(
                ("line", f"{title} changed: {change['name']} {'; '.join(details)}".rstrip())
            )
    return lines


def _test_lines(tests: Json) -> list[tuple[str, str]]:
    problems = tests["problems"]
    if not (tests["added"] or tests["removed"] or tests["changed"] or _has_change(problems)):
        return []
    lines: list[tuple[str, str]] = [("heading", "policy tests")]
    for verb in ("added", "removed", "changed"):
        for case in tests[verb]:
            lines.append(
                (
                    "line",
                    f"{verb}: {case['file']} {case['name']}: live {_verdict(case['live'])}, "
                    f"candidate {_verdict(case['candidate'])}",
                )
            )
    for side in ("live", "candidate"):
        lines += [("line", f"{side} tests unreadable: {problem}") for problem in problems[side]]
    return lines


def _verdict(outcome: Json) -> str:
    reasons = f" [{', '.join(outcome['reasons'])}]" if outcome["reasons"] else ""
    passed = "passes" if outcome["passed"] else "fails"
    return f"{outcome['decision'] or 'request error'}{reasons} ({passed})"


def _listing_lines(title: str, section: Json) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    for verb in ("added", "removed", "changed"):
        listed = section[verb]
        if listed["count"]:
            more = f" and {listed['more']} more" if listed["more"] else ""
            lines.append(
                ("line", f"{title} {verb} ({listed['count']}): {', '.join(listed['ids'])}{more}")
            )
    return lines
