"""Reading a bundle's ``*.cedar`` files into policies with ids, positions and scopes.

Policy ids: the ``@id("…")`` annotation when present, otherwise Cedar's positional
``policy0``, ``policy1``, … in the order policies appear across the files sorted by
name. These ids are what decisions report, so every id must be unique.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import cedarpy

from engine._core.cedar_source import Statement, error_line, split_statements

Scope = Mapping[str, Any]
"""A scope constraint in Cedar's JSON policy format, e.g. ``{"op": "in", "entity": …}``."""


@dataclass(frozen=True, slots=True)
class Policy:
    """One static policy of a bundle."""

    id: str
    position: int
    file: str
    line: int
    effect: Literal["permit", "forbid"]
    principal: Scope
    action: Scope
    resource: Scope
    json: str
    """The policy in Cedar's JSON format, ready to be put into a policy set."""

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def _parse_file_text(text: str) -> Mapping[str, Any]:
    parsed: Mapping[str, Any] = json.loads(cedarpy.policies_to_json_str(text))
    return parsed


def _statement_problems(file: str, statements: list[Statement]) -> list[str]:
    problems = []
    for statement in statements:
        try:
            _parse_file_text(statement.text)
        except ValueError as exc:
            offset = error_line(statement.text, _parse_file_text, str(exc)) - 1
            problems.append(f"{file}:{statement.line + offset}: {exc}")
    return problems


def parse_policy_files(files: Mapping[str, str]) -> tuple[list[Policy], list[str]]:
    """Parse ``{file name: text}`` (in name order) into policies; return problems too."""
    policies: list[Policy] = []
    problems: list[str] = []
    seen: dict[str, str] = {}
    position = 0
    for name in sorted(files):
        text = files[name]
        statements = split_statements(text)
        try:
            parsed = _parse_file_text(text)
        except ValueError as exc:
            found = _statement_problems(name, statements)
            problems.extend(
                found or [f"{name}:{error_line(text, _parse_file_text, str(exc))}: {exc}"]
            )
            position += len(statements)
            continue
        static: Mapping[str, Any] = parsed.get("staticPolicies", {})
        templates: Mapping[str, Any] = parsed.get("templates", {})
        if len(static) + len(templates) != len(statements):
            problems.append(f"{name}:1: cannot match policies to statements; check for stray ';'")
            position += len(static) + len(templates)
            continue
        for local, statement in enumerate(statements):
            local_id = f"policy{local}"
            where = f"{name}:{statement.line}"
            if local_id in templates:
                problems.append(
                    f"{where}: templates (?principal/?resource slots) are not supported"
                )
                position += 1
                continue
            body = dict(static[local_id])
            annotations: Mapping[str, str] = body.get("annotations") or {}
            policy_id = annotations.get("id") or f"policy{position}"
            if policy_id in seen:
                problems.append(
                    f"{where}: policy id {policy_id!r} is already used at {seen[policy_id]}"
                )
            seen[policy_id] = where
            policies.append(
                Policy(
                    id=policy_id,
                    position=position,
                    file=name,
                    line=statement.line,
                    effect=body["effect"],
                    principal=body["principal"],
                    action=body["action"],
                    resource=body["resource"],
                    json=json.dumps(body, separators=(",", ":")),
                )
            )
            position += 1
    return policies, problems


def policy_set_json(policies: list[Policy] | tuple[Policy, ...]) -> str:
    """A Cedar JSON policy set holding ``policies`` under their bundle ids."""
    body = ",".join(f"{json.dumps(p.id)}:{p.json}" for p in policies)
    return '{"templates":{},"templateLinks":[],"staticPolicies":{' + body + "}}"


def build_policy_set(policies: list[Policy] | tuple[Policy, ...]) -> cedarpy.PolicySet:
    """Build a pre-parsed Cedar policy set (cedarpy handle) from ``policies``."""
    return cedarpy.PolicySet.from_json_str(policy_set_json(policies), release_gil=True)
