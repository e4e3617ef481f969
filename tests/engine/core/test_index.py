"""The policy index's answer to "can a permit reach this?" (engine/_core/index.py
``reaches_permit``), which a search uses to skip evaluation when no permit can."""

from __future__ import annotations

import pytest

from engine._core.bundle import PolicyBundle
from engine._core.index import ANY, request_anchors

SCHEMA = b"""
namespace N {
  entity Group;
  entity User in [Group];
  entity Doc;
  action read, write, audit appliesTo { principal: User, resource: Doc };
}
"""
POLICIES = b"""
permit (principal in N::Group::"readers", action == N::Action::"read", resource);
forbid (principal, action == N::Action::"write", resource);
permit (principal == N::User::"ann", action == N::Action::"write", resource == N::Doc::"a");
"""


@pytest.fixture(scope="module")
def bundle() -> PolicyBundle:
    files = {"schema.cedarschema": SCHEMA, "p.cedar": POLICIES}
    return PolicyBundle.from_files(files)


def anchors(type_name: str, id_: str, *parents: str) -> list[tuple[str, ...]]:
    return request_anchors((f"N::{type_name}", id_), frozenset(("N::Group", p) for p in parents))


@pytest.mark.parametrize("fold_limit", [48, 0], ids=["folded", "bucketed"])
@pytest.mark.parametrize(
    ("action", "principal", "resource", "reaches"),
    [
        ("read", None, None, True),
        ("read", ("User", "bob", "readers"), None, True),
        ("write", None, ("Doc", "a"), True),
        ("write", None, ("Doc", "b"), False),
        ("write", ("User", "bob"), None, False),
        ("audit", None, None, False),  # no policy at all: Cedar's default deny
        ("nosuch", None, None, False),
    ],
)
def test_reaches_permit(
    bundle: PolicyBundle,
    fold_limit: int,
    action: str,
    principal: tuple[str, ...] | None,
    resource: tuple[str, ...] | None,
    reaches: bool,
) -> None:
    from engine._core.index import PolicyIndex

    index = PolicyIndex(
        bundle.policies,
        {("N::Action", a): frozenset() for a in ("read", "write", "audit")},
        fold_limit=fold_limit,
    )
    p = None if principal is None else anchors(*principal)
    r = None if resource is None else anchors(*resource)
    found = index.reaches_permit(("N::Action", action), p, r)
    # Folded, an action keeps all its policies in one bucket: it answers per action.
    if fold_limit and action == "write":
        reaches = True
    assert found is reaches


def test_any_anchor_is_in_every_request(bundle: PolicyBundle) -> None:
    assert ANY in anchors("User", "x")
