"""Deterministic generator of realistic multi-tenant Cedar bundles of N policies.

Every bundle shares one entity store (orgs, teams, users, projects, folders, documents),
so between sizes only the policy count varies. About ten policies are unscoped global
rules (tenant isolation, lock and MFA guards, owner access); the rest are scoped to
entities the way tenant-managed rules are: a team on a project, a user on a folder,
anyone on one document, owners within a folder, scoped forbids.

Requests are drawn from a seeded generator: roughly half target a scoped permit of the
bundle (a member of its team, a document inside its project, ...), the other half are
random users acting on random documents, mostly of their own org.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

NAMESPACE = "Bench"
SEED = 20_240_611
GLOBAL_COUNT = 10

ACTIONS = ("read", "write", "delete", "share", "comment")
VIEW = ("read", "comment")
MANAGE = ("write", "delete", "share")

SCHEMA = """\
namespace Bench {
  entity Org { tier: String };
  entity Team in [Org] { org: Org };
  entity User in [Team] {
    org: Org,
    clearance: Long,
    department: String,
    active: Bool,
  };
  entity Project { org: Org, archived: Bool };
  entity Folder in [Project] { org: Org, confidential: Bool };
  entity Document in [Folder] {
    org: Org,
    owner: User,
    level: Long,
    locked: Bool,
    public: Bool,
    department: String,
  };

  type RequestContext = { mfa: Bool, hour: Long };

  // Action groups: `action in Bench::Action::"view"` / `"manage"`.
  action view, manage;
  action read, comment in [view] appliesTo {
    principal: [User], resource: [Document], context: RequestContext,
  };
  action write, delete, share in [manage] appliesTo {
    principal: [User], resource: [Document], context: RequestContext,
  };
}
"""

DEPARTMENTS = ("eng", "sales", "legal", "finance", "ops", "research")


@dataclass(frozen=True, slots=True)
class Sizes:
    """How many entities of each type the shared store holds."""

    orgs: int = 20
    teams: int = 200
    users: int = 2_000
    projects: int = 100
    folders: int = 500
    documents: int = 5_000


@dataclass(slots=True)
class World:
    """The entity store, with the indexes the policy and request generators need."""

    entities: list[dict[str, Any]] = field(default_factory=list)
    user_org: dict[str, str] = field(default_factory=dict)
    team_org: dict[str, str] = field(default_factory=dict)
    team_members: dict[str, list[str]] = field(default_factory=dict)
    org_users: dict[str, list[str]] = field(default_factory=dict)
    org_teams: dict[str, list[str]] = field(default_factory=dict)
    project_org: dict[str, str] = field(default_factory=dict)
    org_projects: dict[str, list[str]] = field(default_factory=dict)
    project_folders: dict[str, list[str]] = field(default_factory=dict)
    folder_project: dict[str, str] = field(default_factory=dict)
    folder_docs: dict[str, list[str]] = field(default_factory=dict)
    doc_folder: dict[str, str] = field(default_factory=dict)
    doc_owner: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Scoped:
    """A generated policy with the scope facts the request generator needs."""

    text: str
    effect: str
    actions: tuple[str, ...]
    principal: tuple[str, str] | None
    """("team" | "user" | "org", id), or None for an unscoped principal."""
    resource: tuple[str, str] | None
    """("project" | "folder" | "doc", id), or None for an unscoped resource."""


@dataclass(frozen=True, slots=True)
class GeneratedBundle:
    """A bundle's files, its policy texts in bundle order, and a request mix."""

    files: dict[str, bytes]
    policy_texts: list[str]
    requests: list[dict[str, Any]]
    """Requests with unqualified types, as a client sends them to ``Engine.decide``."""


def _uid(type_name: str, entity_id: str) -> dict[str, str]:
    return {"type": f"{NAMESPACE}::{type_name}", "id": entity_id}


def _ref(type_name: str, entity_id: str) -> dict[str, dict[str, str]]:
    return {"__entity": _uid(type_name, entity_id)}


def _entity(
    type_name: str, entity_id: str, attrs: dict[str, Any], parents: list[dict[str, str]]
) -> dict[str, Any]:
    return {"uid": _uid(type_name, entity_id), "attrs": attrs, "parents": parents}


def _add_principals(world: World, rng: random.Random, sizes: Sizes) -> None:
    """Orgs, teams (evenly spread over orgs) and users (one or two teams of one org)."""
    for o in range(sizes.orgs):
        org = f"o{o}"
        tier = rng.choice(("free", "team", "enterprise"))
        world.entities.append(_entity("Org", org, {"tier": tier}, []))
        world.org_teams[org], world.org_users[org], world.org_projects[org] = [], [], []
    for t in range(sizes.teams):
        team, org = f"t{t}", f"o{t % sizes.orgs}"
        world.team_org[team] = org
        world.team_members[team] = []
        world.org_teams[org].append(team)
        world.entities.append(_entity("Team", team, {"org": _ref("Org", org)}, [_uid("Org", org)]))
    for u in range(sizes.users):
        user, org = f"u{u}", f"o{u % sizes.orgs}"
        teams = rng.sample(world.org_teams[org], 2 if rng.random() < 0.2 else 1)
        for team in teams:
            world.team_members[team].append(user)
        world.user_org[user] = org
        world.org_users[org].append(user)
        attrs = {
            "org": _ref("Org", org),
            "clearance": rng.choice((0, 1, 1, 2, 2, 2, 3, 3, 4)),
            "department": rng.choice(DEPARTMENTS),
            "active": rng.random() < 0.95,
        }
        world.entities.append(_entity("User", user, attrs, [_uid("Team", t) for t in teams]))


def _add_resources(world: World, rng: random.Random, sizes: Sizes) -> None:
    """Projects (evenly spread over orgs), folders and documents owned by org members."""
    for p in range(sizes.projects):
        project, org = f"p{p}", f"o{p % sizes.orgs}"
        world.project_org[project] = org
        world.org_projects[org].append(project)
        world.project_folders[project] = []
        attrs = {"org": _ref("Org", org), "archived": rng.random() < 0.05}
        world.entities.append(_entity("Project", project, attrs, []))
    for f in range(sizes.folders):
        folder, project = f"f{f}", f"p{f % sizes.projects}"
        world.folder_project[folder] = project
        world.project_folders[project].append(folder)
        world.folder_docs[folder] = []
        org = world.project_org[project]
        attrs = {"org": _ref("Org", org), "confidential": rng.random() < 0.2}
        world.entities.append(_entity("Folder", folder, attrs, [_uid("Project", project)]))
    for d in range(sizes.documents):
        doc, folder = f"d{d}", f"f{d % sizes.folders}"
        org = world.project_org[world.folder_project[folder]]
        owner = rng.choice(world.org_users[org])
        world.doc_folder[doc], world.doc_owner[doc] = folder, owner
        world.folder_docs[folder].append(doc)
        attrs = {
            "org": _ref("Org", org),
            "owner": _ref("User", owner),
            "level": rng.choice((0, 1, 1, 2, 2, 3, 4)),
            "locked": rng.random() < 0.1,
            "public": rng.random() < 0.1,
            "department": rng.choice(DEPARTMENTS),
        }
        world.entities.append(_entity("Document", doc, attrs, [_uid("Folder", folder)]))


def build_world(seed: int = SEED, sizes: Sizes | None = None) -> World:
    """The shared entity store (the same for every policy count)."""
    rng = random.Random(seed)
    world = World()
    sizes = sizes or Sizes()
    _add_principals(world, rng, sizes)
    _add_resources(world, rng, sizes)
    return world


def _action(name: str) -> str:
    return f'{NAMESPACE}::Action::"{name}"'


def _ent(type_name: str, entity_id: str) -> str:
    return f'{NAMESPACE}::{type_name}::"{entity_id}"'


def _action_scope(actions: tuple[str, ...]) -> str:
    if actions == VIEW:
        return f"action in {_action('view')}"
    if actions == MANAGE:
        return f"action in {_action('manage')}"
    if len(actions) == 1:
        return f"action == {_action(actions[0])}"
    return "action in [" + ", ".join(_action(a) for a in actions) + "]"


GLOBALS: tuple[tuple[str, str], ...] = (
    (
        "permit",
        "permit(principal, action in [{read}, {comment}, {write}, {share}], resource)\n"
        "  when { resource.owner == principal };",
    ),
    (
        "permit",
        "permit(principal, action == {read}, resource)\n"
        "  when { resource.public && principal.org == resource.org };",
    ),
    (
        "permit",
        "permit(principal, action == {comment}, resource)\n"
        "  when { resource.public && principal.clearance >= 1 };",
    ),
    ("forbid", "forbid(principal, action, resource)\n  unless { principal.org == resource.org };"),
    ("forbid", "forbid(principal, action, resource)\n  unless { principal.active };"),
    ("forbid", "forbid(principal, action == {write}, resource)\n  when { resource.locked };"),
    ("forbid", "forbid(principal, action == {delete}, resource)\n  unless { context.mfa };"),
    (
        "forbid",
        "forbid(principal, action == {share}, resource)\n"
        "  when { resource.level >= 4 && !context.mfa };",
    ),
    ("forbid", "forbid(principal, action in {manage}, resource)\n  when { context.hour < 6 };"),
    (
        "forbid",
        "forbid(principal, action, resource is Bench::Document)\n"
        "  when { resource.level > principal.clearance + 1 };",
    ),
)
assert len(GLOBALS) == GLOBAL_COUNT


def _global_policies() -> list[Scoped]:
    """The unscoped policies; ``{name}`` in their text stands for an action uid."""
    policies = []
    for effect, text in GLOBALS:
        for name in (*ACTIONS, "view", "manage"):
            text = text.replace("{" + name + "}", _action(name))
        policies.append(Scoped(text, effect, ACTIONS, None, None))
    return policies


def _team_on_project(world: World, rng: random.Random) -> Scoped:
    team = rng.choice(list(world.team_org))
    project = rng.choice(world.org_projects[world.team_org[team]])
    actions = rng.choice((VIEW, VIEW, ("read",), ("read", "write", "comment")))
    level = rng.randint(1, 4)
    text = (
        f"permit(principal in {_ent('Team', team)}, {_action_scope(actions)}, "
        f"resource in {_ent('Project', project)})\n"
        f"  when {{ resource.level <= principal.clearance || resource.level < {level} }};"
    )
    return Scoped(text, "permit", actions, ("team", team), ("project", project))


def _user_on_folder(world: World, rng: random.Random) -> Scoped:
    user = rng.choice(list(world.user_org))
    project = rng.choice(world.org_projects[world.user_org[user]])
    folder = rng.choice(world.project_folders[project])
    action = rng.choice(("write", "write", "comment", "share", "read"))
    text = (
        f"permit(principal == {_ent('User', user)}, action == {_action(action)}, "
        f"resource in {_ent('Folder', folder)})\n"
        f"  when {{ context.mfa && context.hour >= 7 && context.hour < 20 }};"
    )
    return Scoped(text, "permit", (action,), ("user", user), ("folder", folder))


def _anyone_on_document(world: World, rng: random.Random) -> Scoped:
    doc = rng.choice(list(world.doc_folder))
    action = rng.choice(("read", "read", "comment"))
    text = (
        f"permit(principal, action == {_action(action)}, resource == {_ent('Document', doc)})\n"
        f"  when {{ principal.clearance >= resource.level }};"
    )
    return Scoped(text, "permit", (action,), None, ("doc", doc))


def _owners_in_folder(world: World, rng: random.Random) -> Scoped:
    folder = rng.choice(list(world.folder_project))
    text = (
        f"permit(principal, action == {_action('delete')}, resource in {_ent('Folder', folder)})\n"
        f"  when {{ resource.owner == principal && principal.clearance >= 2 }};"
    )
    return Scoped(text, "permit", ("delete",), None, ("folder", folder))


def _org_on_project(world: World, rng: random.Random) -> Scoped:
    project = rng.choice(list(world.project_org))
    org = world.project_org[project]
    department = rng.choice(DEPARTMENTS)
    text = (
        f"permit(principal in {_ent('Org', org)}, action == {_action('read')}, "
        f"resource in {_ent('Project', project)})\n"
        f'  when {{ resource.department == "{department}" && '
        f"principal.department == resource.department }};"
    )
    return Scoped(text, "permit", ("read",), ("org", org), ("project", project))


def _team_forbid_on_folder(world: World, rng: random.Random) -> Scoped:
    team = rng.choice(list(world.team_org))
    project = rng.choice(world.org_projects[world.team_org[team]])
    folder = rng.choice(world.project_folders[project])
    text = (
        f"forbid(principal in {_ent('Team', team)}, {_action_scope(MANAGE)}, "
        f"resource in {_ent('Folder', folder)})\n"
        f"  unless {{ principal.clearance >= 3 }};"
    )
    return Scoped(text, "forbid", MANAGE, ("team", team), ("folder", folder))


KINDS: tuple[tuple[Callable[[World, random.Random], Scoped], int], ...] = (
    (_team_on_project, 30),
    (_user_on_folder, 25),
    (_anyone_on_document, 20),
    (_owners_in_folder, 10),
    (_team_forbid_on_folder, 10),
    (_org_on_project, 5),
)


def generate_policies(world: World, count: int, seed: int = SEED) -> list[Scoped]:
    """``count`` policies: the global ones first, then scoped ones of weighted kinds."""
    if count < GLOBAL_COUNT:
        raise ValueError(f"a bundle needs at least {GLOBAL_COUNT} policies")
    rng = random.Random(seed + count)
    makers = [maker for maker, _ in KINDS]
    weights = [weight for _, weight in KINDS]
    scoped = [rng.choices(makers, weights)[0](world, rng) for _ in range(count - GLOBAL_COUNT)]
    return [*_global_policies(), *scoped]


def _member(world: World, rng: random.Random, scope: tuple[str, str] | None, org: str) -> str:
    """A user inside a principal scope (or of ``org`` when unscoped)."""
    if scope is None:
        return rng.choice(world.org_users[org])
    kind, ident = scope
    if kind == "user":
        return ident
    if kind == "team":
        return rng.choice(world.team_members[ident] or world.org_users[world.team_org[ident]])
    return rng.choice(world.org_users[ident])


def _document_in(world: World, rng: random.Random, scope: tuple[str, str]) -> str:
    kind, ident = scope
    if kind == "doc":
        return ident
    if kind == "folder":
        return rng.choice(world.folder_docs[ident])
    return rng.choice(world.folder_docs[rng.choice(world.project_folders[ident])])


def _context(rng: random.Random) -> dict[str, Any]:
    return {"mfa": rng.random() < 0.8, "hour": rng.choice((*range(8, 19), *range(24)))}


def _request(user: str, action: str, doc: str, context: dict[str, Any]) -> dict[str, Any]:
    return {
        "principal": {"type": "User", "id": user},
        "action": {"type": "Action", "id": action},
        "resource": {"type": "Document", "id": doc},
        "context": context,
    }


def generate_requests(
    world: World, policies: list[Scoped], count: int, seed: int = SEED
) -> list[dict[str, Any]]:
    """``count`` requests: about half aimed at a scoped permit, half at random."""
    rng = random.Random(seed * 7 + len(policies))
    targets = [p for p in policies if p.effect == "permit" and p.resource is not None]
    users, docs = list(world.user_org), list(world.doc_folder)
    requests = []
    for _ in range(count):
        if targets and rng.random() < 0.5:
            policy = rng.choice(targets)
            assert policy.resource is not None
            doc = _document_in(world, rng, policy.resource)
            org = world.project_org[world.folder_project[world.doc_folder[doc]]]
            user = _member(world, rng, policy.principal, org)
            action = rng.choice(policy.actions)
        else:
            user = rng.choice(users)
            org = world.user_org[user]
            same_org = [d for f in world.org_projects[org] for d in _docs_of_project(world, f)]
            doc = rng.choice(same_org) if rng.random() < 0.85 else rng.choice(docs)
            action = rng.choice(ACTIONS)
        requests.append(_request(user, action, doc, _context(rng)))
    return requests


def _docs_of_project(world: World, project: str) -> list[str]:
    return [d for folder in world.project_folders[project] for d in world.folder_docs[folder]]


def generate(count: int, *, requests: int = 2_000, seed: int = SEED) -> GeneratedBundle:
    """A bundle of ``count`` policies (each ``@id("gK")``, K its position) and requests."""
    world = build_world(seed)
    policies = generate_policies(world, count, seed)
    texts = [f'@id("g{k}")\n{policy.text}' for k, policy in enumerate(policies)]
    files = {
        "schema.cedarschema": SCHEMA.encode(),
        "00-global.cedar": "\n\n".join(texts[:GLOBAL_COUNT]).encode() + b"\n",
        "10-scoped.cedar": "\n\n".join(texts[GLOBAL_COUNT:]).encode() + b"\n",
        "entities.json": json.dumps(world.entities, separators=(",", ":")).encode(),
    }
    return GeneratedBundle(files, texts, generate_requests(world, policies, requests, seed))
