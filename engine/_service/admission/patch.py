"""The JSON patch of ``/mutate`` (RFC 6902): the node affinity that narrows a pod
(template) to the sites its placement allows, never widening the user's own terms, and
the decision-id annotation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from engine._core.placement import Placement
from engine._core.sites import Site
from engine._service.admission.labels import DECISION_ANNOTATION, REGION_LABEL, TIER_LABEL


def pointer(*parts: str) -> str:
    """An RFC 6901 JSON Pointer (``~`` as ``~0``, ``/`` as ``~1``)."""
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)


def _requirement(key: str, values: Iterable[str]) -> dict[str, Any]:
    return {"key": key, "operator": "In", "values": sorted(values)}


def node_groups(placement: Placement, catalog: Sequence[Site]) -> list[list[dict[str, Any]]]:
    """The node-selector expressions that admit exactly the allowed sites' nodes, as
    alternatives (ORed): the regions whose every catalog tier is allowed, then per set of
    allowed tiers the regions that also hold a site of another tier, with ``docket.io/tier``.
    """
    allowed: dict[str, set[str]] = {}
    for site in placement.allowed:
        allowed.setdefault(site.region, set()).add(site.tier)
    present: dict[str, set[str]] = {}
    for catalogued in catalog:
        present.setdefault(catalogued.region, set()).add(catalogued.tier)
    open_regions = [r for r, tiers in allowed.items() if present.get(r, set()) <= tiers]
    by_tiers: dict[tuple[str, ...], list[str]] = {}
    for region, tiers in allowed.items():
        if region not in open_regions:
            by_tiers.setdefault(tuple(sorted(tiers)), []).append(region)
    groups = [[_requirement(REGION_LABEL, open_regions)]] if open_regions else []
    for tier_set, regions in sorted(by_tiers.items()):
        groups.append([_requirement(REGION_LABEL, regions), _requirement(TIER_LABEL, tier_set)])
    return groups


def _region_values(expressions: Iterable[Any]) -> set[str] | None:
    regions: set[str] | None = None
    for expression in expressions:
        if (
            isinstance(expression, Mapping)
            and expression.get("key") == REGION_LABEL
            and expression.get("operator") == "In"
        ):
            values = set(expression.get("values") or ())
            regions = values if regions is None else regions & values
    return regions


def narrow_terms(
    terms: Sequence[Mapping[str, Any]], groups: Sequence[Sequence[Mapping[str, Any]]]
) -> list[dict[str, Any]] | None:
    """``terms`` (ORed) narrowed to ``groups`` (ORed): each term ANDed with each group,
    dropping combinations whose region sets cannot meet; None when every term already
    holds a group's expressions (nothing to change)."""
    if not terms:
        return [{"matchExpressions": [dict(e) for e in group]} for group in groups]
    narrowed: list[dict[str, Any]] = []
    unpruned: list[dict[str, Any]] = []
    changed = False
    for term in terms:
        expressions = list(term.get("matchExpressions") or ())
        if any(all(e in expressions for e in group) for group in groups):
            narrowed.append(dict(term))
            unpruned.append(dict(term))
            continue
        changed = True
        wanted = _region_values(expressions)
        for group in groups:
            combined = {**term, "matchExpressions": [*expressions, *(dict(e) for e in group)]}
            unpruned.append(combined)
            offered = _region_values(group)
            if wanted is None or offered is None or wanted & offered:
                narrowed.append(combined)
    if not changed:
        return None
    # Terms that can meet no allowed region are dropped; when none is left the pod
    # cannot be scheduled either way, and the unpruned product says why.
    return narrowed or unpruned


def _present(value: Mapping[str, Any], key: str) -> bool:
    return value.get(key) is not None


def affinity_ops(
    pod_path: tuple[str, ...], pod: Mapping[str, Any], groups: Sequence[Sequence[Mapping[str, Any]]]
) -> list[dict[str, Any]]:
    """RFC 6902 operations that make the pod (template) at ``pod_path`` require
    ``groups``, creating whatever part of ``spec.affinity`` is missing."""
    spec = pod.get("spec") or {}
    chain = ("affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution")
    node: Mapping[str, Any] = spec
    path = (*pod_path, "spec")
    for depth, key in enumerate(chain):
        if not _present(node, key):
            terms = narrow_terms((), groups)
            value: Any = {"nodeSelectorTerms": terms}
            for outer in reversed(chain[depth + 1 :]):
                value = {outer: value}
            return [{"op": "add", "path": pointer(*path, key), "value": value}]
        node = node[key]
        path = (*path, key)
    existing = node.get("nodeSelectorTerms") or []
    terms = narrow_terms(existing, groups)
    if terms is None:
        return []
    op = "replace" if _present(node, "nodeSelectorTerms") else "add"
    return [{"op": op, "path": pointer(*path, "nodeSelectorTerms"), "value": terms}]


def annotation_ops(
    pod_path: tuple[str, ...], pod: Mapping[str, Any], decision: str
) -> list[dict[str, Any]]:
    """RFC 6902 operations that set the decision-id annotation on the pod (template)."""
    metadata = pod.get("metadata")
    annotation = {DECISION_ANNOTATION: decision}
    if not isinstance(metadata, Mapping):
        value = {"annotations": annotation}
        return [{"op": "add", "path": pointer(*pod_path, "metadata"), "value": value}]
    if not _present(metadata, "annotations"):
        path = pointer(*pod_path, "metadata", "annotations")
        return [{"op": "add", "path": path, "value": annotation}]
    path = pointer(*pod_path, "metadata", "annotations", DECISION_ANNOTATION)
    return [{"op": "add", "path": path, "value": decision}]
