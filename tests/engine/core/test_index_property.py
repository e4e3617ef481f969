"""Indexed evaluation equals full evaluation.

The policy index evaluates only the buckets a request reaches, and combines several
buckets' results with Cedar's rule. Whatever the bucketing, the decision, the
determining policies and the erroring policies (with their messages) must be exactly
those of plain cedarpy over every policy of the bundle.

Runtime errors come from integer overflow and from reading attributes of entities
that are not stored (strict validation refuses unguarded optional attributes).
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cedarpy
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from engine import Engine, PolicyBundle, Request
from engine._core.evaluate import _prepare
from engine._core.index import PolicyIndex

NS = "Prop"
MAX = 9223372036854775807
NOW = datetime(2026, 1, 1, tzinfo=UTC)

SCHEMA = """\
namespace Prop {
  entity Group in [Group];
  entity User in [Group] { n: Long, level?: Long };
  entity Service in [Group] { n: Long, level?: Long };
  entity Folder in [Folder];
  entity Doc in [Folder] { size: Long, secret?: Bool, owner: User };
  entity Note in [Folder] { size: Long, secret?: Bool, owner: User };
  type Ctx = { flag?: Bool, k?: Long };
  action read;
  action write;
  action view, list in [read] appliesTo {
    principal: [User, Service], resource: [Doc, Note], context: Ctx,
  };
  action edit in [write] appliesTo {
    principal: [User, Service], resource: [Doc, Note], context: Ctx,
  };
  action remove in [write, Action::"edit"] appliesTo {
    principal: [User, Service], resource: [Doc, Note], context: Ctx,
  };
}
"""
CONCRETE_ACTIONS = ("view", "list", "edit", "remove")
ALL_ACTIONS = (*CONCRETE_ACTIONS, "read", "write")
ACTION_GROUPS = ("read", "write", "edit")

GROUPS = ("g0", "g1", "g2")
USERS = ("u0", "u1", "u2")
SERVICES = ("s0",)
FOLDERS = ("f0", "f1", "f2")
DOCS = ("d0", "d1")
NOTES = ("n0",)
# "ext" and "xf" are parents that stored entities name but do not define; requests may
# define them inline, so an ancestor chain can run stored → inline → stored. Only the
# lower half of each stored hierarchy names them and inline ones sit under the upper
# half, so no cycle can form. "top" and "root" are stored but no stored entity is in
# them: only a chain through a request's own entities reaches them.
EXT_GROUP = "ext"
EXT_FOLDER = "xf"
UPPER_GROUPS = GROUPS[:2]
UPPER_FOLDERS = FOLDERS[:2]
TOP_GROUP = "top"
TOP_FOLDER = "root"
GROUP_ANCHORS = (*GROUPS, EXT_GROUP, TOP_GROUP)
FOLDER_ANCHORS = (*FOLDERS, EXT_FOLDER, TOP_FOLDER)

PRINCIPALS = (
    *(("User", u) for u in USERS),
    *(("Service", s) for s in SERVICES),
    ("User", "guest"),
    ("Service", "guest"),
    ("User", "ghost"),
)
PRINCIPAL_CONTAINERS = (
    *(("Group", g) for g in GROUP_ANCHORS),
    ("User", "u0"),
    ("User", "guest"),
)
RESOURCES = (
    *(("Doc", d) for d in DOCS),
    *(("Note", n) for n in NOTES),
    ("Doc", "tmp"),
    ("Note", "tmp"),
    ("Doc", "gone"),
)
RESOURCE_CONTAINERS = (
    *(("Folder", f) for f in FOLDER_ANCHORS),
    ("Doc", "d0"),
    ("Doc", "tmp"),
)

ATOMS = (
    "principal.n > 0",
    f"principal.n * {MAX} > 0",  # overflows unless n is 0 or 1
    f"principal.n + {MAX} > 0",  # overflows when n > 0
    "principal has level && principal.level > 1",
    "resource.size < 3",
    "resource has secret && resource.secret",
    "resource.owner.n > 0",  # errors when the owner is not stored
    "resource.owner == principal",
    "principal in resource.owner",
    "context has flag && context.flag",
    f"context has k && context.k * {MAX} == 0",
    f'principal in {NS}::Group::"g1"',
    f'resource in {NS}::Folder::"f1"',
    f"principal is {NS}::User",
    f'action in {NS}::Action::"write"',
)


def ref(type_name: str, entity_id: str) -> str:
    return f'{NS}::{type_name}::"{entity_id}"'


def uid_json(type_name: str, entity_id: str) -> dict[str, str]:
    return {"type": type_name, "id": entity_id}


def entity(
    type_name: str, entity_id: str, parents: list[tuple[str, str]], **attrs: Any
) -> dict[str, Any]:
    return {
        "uid": uid_json(type_name, entity_id),
        "attrs": attrs,
        "parents": [uid_json(*p) for p in parents],
    }


def qualified(value: Any) -> Any:
    """Cedar JSON with every entity type put in the namespace (what cedarpy needs)."""
    if isinstance(value, list):
        return [qualified(item) for item in value]
    if isinstance(value, dict):
        if set(value) == {"type", "id"}:
            return {"type": f"{NS}::{value['type']}", "id": value["id"]}
        return {key: qualified(item) for key, item in value.items()}
    return value


@functools.cache
def _subsets(items: tuple[str, ...], min_size: int, max_size: int) -> st.SearchStrategy[list[str]]:
    if not items:
        return st.just([])
    return st.lists(st.sampled_from(items), unique=True, min_size=min_size, max_size=max_size)


def subset(
    draw: st.DrawFn, items: tuple[str, ...], min_size: int = 0, max_size: int = 2
) -> list[str]:
    return draw(_subsets(items, min_size, max_size))


# --- policies -------------------------------------------------------------------------

principal_scopes = st.one_of(
    st.just("principal"),
    st.sampled_from(PRINCIPALS).map(lambda u: f"principal == {ref(*u)}"),
    st.sampled_from(PRINCIPAL_CONTAINERS).map(lambda u: f"principal in {ref(*u)}"),
    st.sampled_from(("User", "Service")).map(lambda t: f"principal is {NS}::{t}"),
    st.tuples(st.sampled_from(("User", "Service")), st.sampled_from(GROUP_ANCHORS)).map(
        lambda tg: f"principal is {NS}::{tg[0]} in {ref('Group', tg[1])}"
    ),
)
action_scopes = st.one_of(
    st.just("action"),
    st.sampled_from(CONCRETE_ACTIONS).map(lambda a: f"action == {ref('Action', a)}"),
    st.lists(st.sampled_from(ALL_ACTIONS), min_size=1, max_size=3, unique=True).map(
        lambda actions: "action in [" + ", ".join(ref("Action", a) for a in actions) + "]"
    ),
    st.sampled_from(ACTION_GROUPS).map(lambda a: f"action in {ref('Action', a)}"),
)
resource_scopes = st.one_of(
    st.just("resource"),
    st.sampled_from(RESOURCES).map(lambda r: f"resource == {ref(*r)}"),
    st.sampled_from(RESOURCE_CONTAINERS).map(lambda r: f"resource in {ref(*r)}"),
    st.sampled_from(("Doc", "Note")).map(lambda t: f"resource is {NS}::{t}"),
    st.tuples(st.sampled_from(("Doc", "Note")), st.sampled_from(FOLDER_ANCHORS)).map(
        lambda tf: f"resource is {NS}::{tf[0]} in {ref('Folder', tf[1])}"
    ),
)
expressions = st.one_of(
    st.sampled_from(ATOMS),
    st.tuples(st.sampled_from(ATOMS), st.sampled_from(("&&", "||")), st.sampled_from(ATOMS)).map(
        lambda t: f"({t[0]}) {t[1]} ({t[2]})"
    ),
)
conditions = st.lists(st.tuples(st.sampled_from(("when", "unless")), expressions), max_size=2)


@st.composite
def policy_texts(draw: st.DrawFn, policy_id: str) -> str:
    effect = draw(st.sampled_from(("permit", "forbid")))
    scope = ", ".join((draw(principal_scopes), draw(action_scopes), draw(resource_scopes)))
    body = "".join(f" {kind} {{ {expr} }}" for kind, expr in draw(conditions))
    return f'@id("{policy_id}")\n{effect} ({scope}){body};\n'


# --- entities and requests ------------------------------------------------------------


@st.composite
def stored_entities(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A random hierarchy: users in groups in groups, docs in folders in folders."""
    ns = st.integers(min_value=0, max_value=2)
    found: list[dict[str, Any]] = []
    for i, group in enumerate(GROUPS):
        choices = GROUPS[:i] if group in UPPER_GROUPS else (*GROUPS[:i], EXT_GROUP)
        parents = subset(draw, choices)
        found.append(entity("Group", group, [("Group", p) for p in parents]))
    found.append(entity("Group", TOP_GROUP, []))
    for principal_type, ids in (("User", USERS), ("Service", SERVICES)):
        for principal_id in ids:
            parents = subset(draw, (*GROUPS, EXT_GROUP))
            attrs: dict[str, Any] = {"n": draw(ns)}
            if draw(st.booleans()):
                attrs["level"] = draw(ns)
            found.append(
                entity(principal_type, principal_id, [("Group", p) for p in parents], **attrs)
            )
    for i, folder in enumerate(FOLDERS):
        choices = FOLDERS[:i] if folder in UPPER_FOLDERS else (*FOLDERS[:i], EXT_FOLDER)
        parents = subset(draw, choices)
        found.append(entity("Folder", folder, [("Folder", p) for p in parents]))
    found.append(entity("Folder", TOP_FOLDER, []))
    for resource_type, ids in (("Doc", DOCS), ("Note", NOTES)):
        for resource_id in ids:
            found.append(draw(resources(resource_type, resource_id)))
    return found


@st.composite
def resources(draw: st.DrawFn, resource_type: str, resource_id: str) -> dict[str, Any]:
    parents = subset(draw, (*FOLDERS, EXT_FOLDER))
    owner = draw(st.sampled_from((*USERS, "ghost")))
    attrs: dict[str, Any] = {
        "size": draw(st.integers(min_value=0, max_value=5)),
        "owner": {"__entity": uid_json("User", owner)},
    }
    if draw(st.booleans()):
        attrs["secret"] = draw(st.booleans())
    return entity(resource_type, resource_id, [("Folder", p) for p in parents], **attrs)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """A request, unqualified as a caller writes it, sometimes with inline entities."""
    inline: list[dict[str, Any]] = []
    principal = draw(st.sampled_from(PRINCIPALS))
    if principal[1] == "guest":
        parents = subset(draw, (*GROUPS, EXT_GROUP, TOP_GROUP))
        attrs = {"n": draw(st.integers(min_value=0, max_value=2))}
        inline.append(entity(*principal, [("Group", p) for p in parents], **attrs))
    if draw(st.booleans()):
        parents = subset(draw, (*UPPER_GROUPS, TOP_GROUP), min_size=1)
        inline.append(entity("Group", EXT_GROUP, [("Group", p) for p in parents]))
    resource = draw(st.sampled_from(RESOURCES))
    if resource[1] == "tmp":
        inline.append(draw(resources(*resource)))
    if draw(st.booleans()):
        parents = subset(draw, (*UPPER_FOLDERS, TOP_FOLDER), min_size=1)
        inline.append(entity("Folder", EXT_FOLDER, [("Folder", p) for p in parents]))
    context: dict[str, Any] = {}
    if draw(st.booleans()):
        context["flag"] = draw(st.booleans())
    if draw(st.booleans()):
        context["k"] = draw(st.sampled_from((0, 1, 3, MAX)))
    return {
        "principal": uid_json(*principal),
        "action": uid_json("Action", draw(st.sampled_from(CONCRETE_ACTIONS))),
        "resource": uid_json(*resource),
        "context": context,
        "entities": inline,
    }


@dataclass(frozen=True)
class Case:
    files: dict[str, bytes]
    policy_ids: list[str]
    """@id of each policy by its position in the files sorted by name."""
    stored: list[dict[str, Any]]
    requests: list[dict[str, Any]]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    count = draw(st.integers(min_value=1, max_value=20))
    policy_ids = [f"p{i}" for i in range(count)]
    texts = [draw(policy_texts(policy_id)) for policy_id in policy_ids]
    # Split into up to three files; sorted file names keep generation order.
    cuts = sorted(draw(st.lists(st.integers(0, count), max_size=2)))
    bounds = [0, *cuts, count]
    files = {
        f"policies-{n}.cedar": "".join(texts[lo:hi]).encode()
        for n, (lo, hi) in enumerate(itertools.pairwise(bounds))
    }
    stored = draw(stored_entities())
    files["schema.cedarschema"] = SCHEMA.encode()
    files["entities.json"] = json.dumps(stored, indent=1).encode()
    return Case(files, policy_ids, stored, draw(st.lists(requests(), min_size=3, max_size=8)))


# --- the reference: plain cedarpy over every policy -----------------------------------

_ERROR = re.compile(r"^error while evaluating policy `([^`]*)`: (.*)$", re.S)
Outcome = tuple[str, frozenset[str], dict[str, str]]


def full_evaluation(
    case: Case, schema: cedarpy.Schema, forbids: frozenset[str] | None = None
) -> list[Outcome]:
    """Cedar over the whole policy set; with ``forbids`` (the ids of forbid policies),
    under Docket's fail-closed rule for forbids that error."""
    policy_files = sorted(name for name in case.files if name.endswith(".cedar"))
    text = "\n".join(case.files[name].decode() for name in policy_files)
    policy_set = cedarpy.PolicySet.from_str(text)
    outcomes = []
    for request in case.requests:
        cedar_request = {
            key: qualified(request[key]) for key in ("principal", "action", "resource")
        }
        cedar_request["context"] = request["context"]
        entities = json.dumps(qualified([*case.stored, *request["entities"]]))
        result = cedarpy.is_authorized(cedar_request, policy_set, entities, schema=schema)
        assert result.decision is not cedarpy.Decision.NoDecision, result.diagnostics.errors
        by_reason = result.diagnostics.id_annotations_by_reason
        reasons = frozenset(by_reason[positional] for positional in result.diagnostics.reasons)
        errors = {}
        for message in result.diagnostics.errors:
            match = _ERROR.match(message)
            assert match is not None, message
            errors[case.policy_ids[int(match.group(1).removeprefix("policy"))]] = match.group(2)
        decision = "allow" if result.allowed else "deny"
        # Docket's default (forbid_errors = "deny"): an erroring forbid denies and is a reason.
        failed_forbids = {i for i in errors if forbids is not None and i in forbids}
        if failed_forbids:
            satisfied = {i for i in reasons if i in (forbids or ())}
            decision, reasons = "deny", frozenset(satisfied | failed_forbids)
        outcomes.append((decision, reasons, errors))
    return outcomes


def indexed_evaluation(engine: Engine, requests: list[Request]) -> list[Outcome]:
    return [
        (d.decision, frozenset(d.reasons), {str(e.policy): e.message for e in d.errors})
        for d in engine.decide_batch(requests, now=NOW)
    ]


def wait_for_merged_sets(bundle: PolicyBundle, requests: list[Request]) -> int:
    """Wait until every multi-bucket combination the requests reach has its merged set;
    return how many requests reach several buckets."""
    several = 0
    for request in requests:
        key = _prepare(bundle, request).buckets
        if len(key) < 2:
            continue
        several += 1
        deadline = time.monotonic() + 10
        while bundle.index.merged(key) is None:
            assert time.monotonic() < deadline, f"merged set {key} never built"
            time.sleep(0.001)
    return several


def action_ancestors(bundle: PolicyBundle) -> dict[tuple[str, str], frozenset[tuple[str, str]]]:
    actions = [(f"{NS}::Action", a) for a in ALL_ACTIONS]
    return {action: bundle.ancestors(action) for action in actions}


@settings(
    max_examples=150,
    deadline=None,
    database=None,
)
@given(case=cases())
def test_indexed_evaluation_equals_full_evaluation(case: Case) -> None:
    bundle = PolicyBundle.from_files(case.files)
    forbids = frozenset(p.id for p in bundle.policies if p.effect == "forbid")
    expected = full_evaluation(case, bundle.schema, forbids)
    requests = [Request.model_validate(r) for r in case.requests]
    indexes = {
        "default": bundle.index,
        "fold_limit=0": PolicyIndex(bundle.policies, action_ancestors(bundle), fold_limit=0),
        "fold_limit=3": PolicyIndex(bundle.policies, action_ancestors(bundle), fold_limit=3),
    }
    engine = Engine(bundle)
    for name, index in indexes.items():
        bundle.index = index
        assert indexed_evaluation(engine, requests) == expected, f"{name}, buckets combined"
        if wait_for_merged_sets(bundle, requests):
            event(f"{name}: a request reaches several buckets")
        assert indexed_evaluation(engine, requests) == expected, f"{name}, merged set"


# --- the same invariant, on the smallest inputs that once broke it --------------------

STORED_WITH_UNDEFINED_PARENT = [
    entity("Group", "g1", []),
    entity("Group", "g2", [("Group", EXT_GROUP)]),
    entity("User", "u0", [("Group", EXT_GROUP)], n=0),
    entity("Folder", "f0", []),
    entity("Doc", "d0", [("Folder", "f0")], size=1, owner={"__entity": uid_json("User", "u0")}),
]


@pytest.mark.parametrize(
    "request_json",
    [
        pytest.param(
            {
                "principal": uid_json("User", "u0"),
                "entities": [entity("Group", EXT_GROUP, [("Group", "g1")])],
            },
            id="stored-principal-whose-parent-is-defined-inline",
        ),
        pytest.param(
            {
                "principal": uid_json("User", "guest"),
                "entities": [
                    entity("User", "guest", [("Group", EXT_GROUP)], n=0),
                    entity("Group", EXT_GROUP, [("Group", "g1")]),
                ],
            },
            id="inline-principal-through-inline-group",
        ),
        pytest.param(
            {
                "principal": uid_json("User", "guest"),
                "entities": [
                    entity("User", "guest", [("Group", "g2")], n=0),
                    entity("Group", EXT_GROUP, [("Group", "g1")]),
                ],
            },
            id="inline-principal-through-stored-group-whose-parent-is-inline",
        ),
    ],
)
@pytest.mark.parametrize("fold_limit", [pytest.param(0, id="fold0"), pytest.param(48, id="fold48")])
def test_forbid_on_ancestor_reached_through_inline_entity(
    request_json: dict[str, Any], fold_limit: int
) -> None:
    files = {
        "schema.cedarschema": SCHEMA.encode(),
        "entities.json": json.dumps(STORED_WITH_UNDEFINED_PARENT).encode(),
        "p.cedar": (
            '@id("allow-all") permit (principal, action, resource);\n'
            f'@id("deny-g1") forbid (principal in {ref("Group", "g1")}, action, resource);\n'
        ).encode(),
    }
    bundle = PolicyBundle.from_files(files)
    bundle.index = PolicyIndex(bundle.policies, action_ancestors(bundle), fold_limit=fold_limit)
    request = Request.model_validate(
        {
            "action": uid_json("Action", "view"),
            "resource": uid_json("Doc", "d0"),
            **request_json,
        }
    )
    decision = Engine(bundle).decide(request, now=NOW)
    assert (decision.decision, decision.reasons) == ("deny", ("deny-g1",))


def test_several_buckets_and_their_merged_set_decide_alike() -> None:
    stored = [
        entity("Group", "g1", []),
        entity("User", "u0", [("Group", "g1")], n=2),
        entity("Folder", "f0", []),
        entity("Doc", "d0", [], size=1, secret=True, owner={"__entity": uid_json("User", "u0")}),
    ]
    files = {
        "schema.cedarschema": SCHEMA.encode(),
        "entities.json": json.dumps(stored).encode(),
        "p.cedar": (
            f'@id("members") permit (principal in {ref("Group", "g1")}, action, resource);\n'
            '@id("no-secrets") forbid (principal, action, resource)\n'
            "  when { resource has secret && resource.secret };\n"
            f'@id("overflow") permit (principal, action == {ref("Action", "view")}, resource)\n'
            f"  when {{ principal.n * {MAX} > 0 }};\n"
        ).encode(),
    }
    bundle = PolicyBundle.from_files(files)
    bundle.index = PolicyIndex(bundle.policies, action_ancestors(bundle), fold_limit=0)
    request = Request.model_validate(
        {
            "principal": uid_json("User", "u0"),
            "action": uid_json("Action", "view"),
            "resource": uid_json("Doc", "d0"),
        }
    )
    assert len(_prepare(bundle, request).buckets) == 2
    engine = Engine(bundle)
    overflow = f"integer overflow while attempting to multiply the values `2` and `{MAX}`"
    expected = [("deny", frozenset({"no-secrets"}), {"overflow": overflow})]
    assert indexed_evaluation(engine, [request]) == expected
    assert wait_for_merged_sets(bundle, [request]) == 1
    assert indexed_evaluation(engine, [request]) == expected
    assert engine.decide(request, now=NOW).policies_evaluated == 3
