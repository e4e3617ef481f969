"""Policy test cases (``tests/*.yaml`` in a bundle) and running them against a bundle."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any, Literal
from xml.etree import ElementTree as ET

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine._core.bundle import PolicyBundle
from engine._core.evaluate import Engine
from engine._core.models import Request
from engine._errors import BundleError, RequestError


class Expectation(BaseModel):
    """What a case expects. ``reasons`` unset means "not checked"; ``errors`` defaults
    to none, so a policy that starts erroring fails the case."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decision: Literal["allow", "deny"]
    reasons: tuple[str, ...] | None = None
    errors: tuple[str, ...] = ()


class Case(BaseModel):
    """One policy test case."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str | None = None
    request: Request
    expect: Expectation


class _CaseFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cases: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class LoadedCase:
    file: str
    line: int
    case: Case


@dataclass(frozen=True, slots=True)
class CaseResult:
    """The outcome of one case: ``failures`` is empty when it passed."""

    loaded: LoadedCase
    decision: str | None
    reasons: tuple[str, ...]
    errors: tuple[str, ...]
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures


def load_cases(files: Mapping[str, bytes]) -> list[LoadedCase]:
    """Every case of the bundle's ``tests/*.yaml`` files. Raises :class:`BundleError`."""
    problems: list[str] = []
    loaded: list[LoadedCase] = []
    for name in sorted(files):
        path = PurePosixPath(name)
        if path.parts[0] != "tests" or path.suffix not in (".yaml", ".yml"):
            continue
        text = files[name].decode("utf-8", errors="replace")
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else 1
            problems.append(f"{name}:{line}: invalid YAML: {getattr(exc, 'problem', exc)}")
            continue
        try:
            case_file = _CaseFile.model_validate(data)
        except ValidationError:
            problems.append(f"{name}:1: expected a mapping with a 'cases' list")
            continue
        lines = _case_lines(node)
        for position, raw in enumerate(case_file.cases):
            line = lines[position] if position < len(lines) else 1
            try:
                case = Case.model_validate(raw)
            except ValidationError as exc:
                for err in exc.errors():
                    where = ".".join(str(part) for part in err["loc"])
                    problems.append(f"{name}:{line}: case {position + 1}: {where}: {err['msg']}")
                continue
            loaded.append(LoadedCase(name, line, case))
    if problems:
        raise BundleError(problems)
    return loaded


def _case_lines(node: yaml.Node | None) -> list[int]:
    if not isinstance(node, yaml.MappingNode):
        return []
    for key, value in node.value:
        if getattr(key, "value", None) == "cases" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def run_cases(bundle: PolicyBundle, cases: list[LoadedCase], *, now: datetime) -> list[CaseResult]:
    """Decide every case against ``bundle`` and compare with its expectation."""
    engine = Engine(bundle)
    results = []
    for loaded in cases:
        expect = loaded.case.expect
        try:
            decision = engine.decide(loaded.case.request, now=now)
        except RequestError as exc:
            results.append(CaseResult(loaded, None, (), (), (f"request error: {exc}",)))
            continue
        errored = tuple(e.policy or "" for e in decision.errors)
        failures = []
        if decision.decision != expect.decision:
            failures.append(f"decision: expected {expect.decision}, got {decision.decision}")
        if expect.reasons is not None and set(decision.reasons) != set(expect.reasons):
            failures.append(
                f"reasons: expected [{', '.join(sorted(expect.reasons))}], "
                f"got [{', '.join(decision.reasons)}]"
            )
        if set(errored) != set(expect.errors):
            failures.append(
                f"errors: expected [{', '.join(sorted(expect.errors))}], "
                f"got [{'; '.join(f'{e.policy}: {e.message}' for e in decision.errors)}]"
            )
        results.append(
            CaseResult(loaded, decision.decision, decision.reasons, errored, tuple(failures))
        )
    return results


def uncovered_policies(bundle: PolicyBundle, results: list[CaseResult]) -> list[str]:
    """Policies that determined no case's decision, in bundle order."""
    determining = {policy_id for result in results for policy_id in result.reasons}
    return [p.id for p in bundle.policies if p.id not in determining]


def junit_xml(results: list[CaseResult], *, bundle_version: str) -> str:
    """The results as JUnit XML, one testcase per case, classname = case file."""
    suite = ET.Element(
        "testsuite",
        name="docket policy test",
        tests=str(len(results)),
        failures=str(sum(not r.passed for r in results)),
        errors="0",
    )
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="bundle_version", value=bundle_version)
    for result in results:
        testcase = ET.SubElement(
            suite,
            "testcase",
            classname=result.loaded.file,
            name=result.loaded.case.name,
            file=result.loaded.file,
            line=str(result.loaded.line),
        )
        if result.failures:
            failure = ET.SubElement(testcase, "failure", message=result.failures[0])
            failure.text = "\n".join(result.failures)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
