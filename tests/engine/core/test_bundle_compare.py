"""Comparing two bundles statically: policies, schema, policy tests, catalogs, metadata."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sample_bundle import ACCESS, ENTITIES, PLACEMENT, SCHEMA, SITES, bundle_files

from engine import BundleComparison, PolicyBundle, compare_bundles
from engine._core.bundle_compare import MAX_LISTED

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def case(name: str, principal: str, decision: str) -> str:
    """One policy test case: ``principal`` reads the ledger, expecting ``decision``."""
    return (
        f"  - name: {name}\n"
        "    request:\n"
        f"      principal: {{type: User, id: {principal}}}\n"
        "      action: {type: Action, id: read}\n"
        "      resource: {type: Data, id: ledger}\n"
        f"    expect:\n      decision: {decision}\n"
    )


TESTS = (
    "cases:\n"
    + case("alice-reads-her-ledger", "alice", "allow")
    + case("bob-reads-alices-ledger", "bob", "deny")
)
EXTRA_TEST = case("dave-reads-the-ledger", "dave", "allow")

SETTINGS = """\
[bundle]
name = "acme"
revision = 2

[evaluation]
forbid_errors = "cedar"
"""


def bundle(changes: Mapping[str, str | bytes | None] | None = None) -> PolicyBundle:
    return PolicyBundle.from_files(bundle_files({"tests/read.yaml": TESTS, **(changes or {})}))


def compare(changes: Mapping[str, str | bytes | None]) -> dict[str, Any]:
    return compare_bundles(bundle(), bundle(changes), now=NOW).to_json()


def test_identical_bundles_give_an_empty_comparison() -> None:
    comparison = compare_bundles(bundle(), bundle(), now=NOW)
    assert isinstance(comparison, BundleComparison)
    assert comparison.empty
    found = comparison.to_json()
    assert found["empty"] is True
    assert found["policies"] == {"added": [], "removed": [], "changed": []}
    assert found["tests"]["changed"] == []
    assert found["tests"]["unchanged"] == 2
    assert found["live"]["version"] == found["candidate"]["version"]
    assert comparison.text_lines()[-1] == "no differences"


def test_a_reformatted_policy_is_not_a_change() -> None:
    reformatted = ACCESS.replace(
        'permit (principal, action == Docket::Action::"read", resource is Docket::Data)',
        "// now with more comments\npermit (\n    principal,\n    action   ==   "
        'Docket::Action::"read",\n    resource is Docket::Data\n)',
    ).replace("when { resource.owner == principal }", "when {\n  resource.owner == principal\n}")
    assert reformatted != ACCESS
    comparison = compare_bundles(bundle(), bundle({"10-access.cedar": reformatted}), now=NOW)
    assert comparison.empty
    found = comparison.to_json()
    assert found["policies"]["changed"] == []
    assert found["live"]["version"] != found["candidate"]["version"]


def test_policies_added_and_removed_are_named_by_id() -> None:
    added = '\n@id("ops-reads")\npermit (principal in Docket::Group::"sre", action, resource);\n'
    removed = PLACEMENT.replace(
        '@id("no-data-at-edge")\nforbid (principal is Docket::Data, action == '
        'Docket::Action::"place", resource)\nwhen { resource.tier == "edge" };\n',
        "",
    )
    found = compare({"10-access.cedar": ACCESS + added, "20-placement.cedar": removed})
    assert [p["id"] for p in found["policies"]["added"]] == ["ops-reads"]
    assert found["policies"]["added"][0]["effect"] == "permit"
    assert found["policies"]["added"][0]["file"] == "10-access.cedar"
    assert [p["id"] for p in found["policies"]["removed"]] == ["no-data-at-edge"]
    assert found["policies"]["removed"][0]["effect"] == "forbid"
    assert found["policies"]["changed"] == []
    assert found["empty"] is False


def test_a_changed_policy_shows_a_unified_diff_of_its_normalized_text() -> None:
    changed = ACCESS.replace(
        "when { resource.owner.department == resource.department }",
        "when { resource.owner.department == resource.department && principal is Docket::User }",
    )
    found = compare({"10-access.cedar": changed})
    [change] = found["policies"]["changed"]
    assert change["id"] == "same-department-writes"
    assert change["effect"] is None
    assert change["annotations"] is None
    diff = change["diff"]
    assert diff[0].startswith("--- live/10-access.cedar")
    assert diff[1].startswith("+++ candidate/10-access.cedar")
    assert any(line.startswith("-") and "principal is" not in line for line in diff[2:])
    assert any(line.startswith("+") and "principal is Docket::User" in line for line in diff[2:])


def test_an_effect_change_is_called_out() -> None:
    flipped = ACCESS.replace('@id("engineering-reads")\npermit', '@id("engineering-reads")\nforbid')
    found = compare({"10-access.cedar": flipped})
    [change] = found["policies"]["changed"]
    assert change["id"] == "engineering-reads"
    assert change["effect"] == {"live": "permit", "candidate": "forbid"}
    text = "\n".join(
        compare_bundles(bundle(), bundle({"10-access.cedar": flipped}), now=NOW).text_lines()
    )
    assert "engineering-reads: effect permit -> forbid" in text


def test_annotation_changes_and_fresh_policy_are_called_out() -> None:
    annotated = ACCESS.replace(
        '@id("read-own")', '@id("read-own")\n@fresh_policy("owners lose access at once")'
    ).replace('@id("delegated-read")', '@id("delegated-read")\n@reviewed("2026-01")')
    comparison = compare_bundles(bundle(), bundle({"10-access.cedar": annotated}), now=NOW)
    changes = {c["id"]: c for c in comparison.to_json()["policies"]["changed"]}
    assert changes["read-own"]["annotations"] == {
        "added": {"fresh_policy": "owners lose access at once"},
        "removed": {},
        "changed": {},
    }
    assert changes["read-own"]["fresh_policy"] == {"live": False, "candidate": True}
    assert changes["delegated-read"]["annotations"]["added"] == {"reviewed": "2026-01"}
    assert changes["delegated-read"]["fresh_policy"] is None
    text = "\n".join(comparison.text_lines())
    assert "read-own: @fresh_policy added" in text


def test_schema_changes_name_entity_types_attributes_and_actions() -> None:
    schema = (
        SCHEMA.replace("    email?: String,\n", "    email?: String,\n    clearance: Long,\n")
        .replace("  entity Workload in [Group] {\n    namespace: String,\n  };\n", "")
        .replace("principal: [User, Workload],", "principal: [User],")
        .replace("principal: [Workload, Data],", "principal: [Data],")
        .replace(
            "    department: String,\n  };\n  entity Site",
            "    department: Long,\n  };\n  entity Site",
        )
        .replace(
            "  action place",
            "  entity Device;\n  action audit appliesTo {\n"
            "    principal: [User],\n    resource: [Data],\n  };\n\n  action place",
        )
        .replace("    mfa?: Bool,\n", "    mfa?: Bool,\n    reason: String,\n")
    )
    entities = (
        ENTITIES.replace(
            '"attrs": {"department": "finance"}',
            '"attrs": {"department": "finance", "clearance": 1}',
        )
        .replace('"attrs": {"department": "ops"}', '"attrs": {"department": "ops", "clearance": 2}')
        .replace(
            '"department": "finance"},\n   "parents": []}', '"department": 1},\n   "parents": []}'
        )
    )
    policies = ACCESS.replace(
        "resource.owner.department == resource.department",
        "resource.owner.clearance == resource.department",
    )
    found = compare(
        {"schema.cedarschema": schema, "entities.json": entities, "10-access.cedar": policies}
    )
    types = found["schema"]["entity_types"]
    assert types["added"] == ["Docket::Device"]
    assert types["removed"] == ["Docket::Workload"]
    changed = {c["name"]: c for c in types["changed"]}
    assert changed["Docket::User"]["attributes"]["added"] == ["clearance"]
    assert changed["Docket::Data"]["attributes"]["changed"] == [
        {"name": "department", "live": "String", "candidate": "Long"}
    ]
    actions = found["schema"]["actions"]
    assert actions["added"] == ['Docket::Action::"audit"']
    changed_actions = {c["name"]: c for c in actions["changed"]}
    assert changed_actions['Docket::Action::"read"']["principal_types"] == {
        "live": ["Docket::User", "Docket::Workload"],
        "candidate": ["Docket::User"],
    }
    assert changed_actions['Docket::Action::"read"']["context"]["added"] == ["reason"]
    assert changed_actions['Docket::Action::"place"']["principal_types"] == {
        "live": ["Docket::Data", "Docket::Workload"],
        "candidate": ["Docket::Data"],
    }


def test_entity_tags_and_enumerations_are_schema_changes() -> None:
    schema = SCHEMA.replace(
        "    department: String,\n  };\n  entity Site",
        "    department: String,\n  } tags String;\n  entity Site",
    ).replace("entity Group in [Group];", 'entity Group enum ["engineering", "sre"];')
    entities = json.loads(ENTITIES)
    for entity in entities:
        if entity["uid"]["type"] == "Group":
            entity["attrs"] = {}
            entity["parents"] = []
    found = compare({"schema.cedarschema": schema, "entities.json": json.dumps(entities)})
    changed = {c["name"]: c for c in found["schema"]["entity_types"]["changed"]}
    assert changed["Docket::Data"]["tags"] == {
        "live": None,
        "candidate": {"type": "EntityOrCommon", "name": "String"},
    }
    assert changed["Docket::Group"]["enum"] == {"live": None, "candidate": ["engineering", "sre"]}


def test_a_test_that_changes_outcome_is_reported_with_both_outcomes() -> None:
    engineering_everything = ACCESS.replace(
        '@id("engineering-reads")\npermit (principal in Docket::Group::"engineering", '
        'action == Docket::Action::"read", resource);',
        '@id("engineering-reads")\npermit (principal, action == Docket::Action::"read", resource);',
    )
    found = compare({"10-access.cedar": engineering_everything})
    changed = {case["name"]: case for case in found["tests"]["changed"]}
    # Alice's read still passes, on one more reason: a change of outcome too.
    assert changed["alice-reads-her-ledger"]["candidate"]["reasons"] == [
        "engineering-reads",
        "read-own",
    ]
    assert changed["alice-reads-her-ledger"]["candidate"]["passed"] is True
    flipped = changed["bob-reads-alices-ledger"]
    assert flipped["file"] == "tests/read.yaml"
    assert flipped["name"] == "bob-reads-alices-ledger"
    assert flipped["live"] == {
        "decision": "deny",
        "reasons": [],
        "errors": [],
        "passed": True,
        "failures": [],
    }
    assert flipped["candidate"]["decision"] == "allow"
    assert flipped["candidate"]["reasons"] == ["engineering-reads"]
    assert flipped["candidate"]["passed"] is False
    assert flipped["candidate"]["failures"] == ["decision: expected deny, got allow"]
    assert found["tests"]["unchanged"] == 0


def test_tests_added_and_removed_are_run_against_both_bundles() -> None:
    with_extra = TESTS + EXTRA_TEST
    found = compare({"tests/read.yaml": with_extra})
    [added] = found["tests"]["added"]
    assert added["name"] == "dave-reads-the-ledger"
    assert added["live"]["decision"] == "allow"
    assert added["candidate"]["decision"] == "allow"
    assert found["tests"]["removed"] == []
    back = compare_bundles(bundle({"tests/read.yaml": with_extra}), bundle(), now=NOW).to_json()
    assert [case["name"] for case in back["tests"]["removed"]] == ["dave-reads-the-ledger"]


def test_unreadable_tests_are_reported_not_raised() -> None:
    found = compare({"tests/read.yaml": "cases: [ {name: x"})
    assert found["tests"]["problems"]["live"] == []
    assert found["tests"]["problems"]["candidate"]
    assert found["empty"] is False


def test_entities_sites_reference_and_settings_are_summarised() -> None:
    entities = json.loads(ENTITIES)
    entities = [e for e in entities if e["uid"]["id"] != "orphan"]
    entities[5]["attrs"]["department"] = "audit"  # alice
    entities.append(
        {"uid": {"type": "User", "id": "erin"}, "attrs": {"department": "ops"}, "parents": []}
    )
    sites = SITES.replace("cost_per_hour = 0.2", "cost_per_hour = 0.3").replace(
        'name = "edge-paris"', 'name = "edge-lyon"'
    )
    found = compare(
        {
            "entities.json": json.dumps(entities),
            "sites.toml": sites,
            "bundle.toml": SETTINGS,
        }
    )
    assert found["entities"] == {
        "added": {"count": 1, "ids": ['Docket::User::"erin"'], "more": 0},
        "removed": {"count": 1, "ids": ['Docket::Data::"orphan"'], "more": 0},
        "changed": {"count": 1, "ids": ['Docket::User::"alice"'], "more": 0},
    }
    assert found["sites"]["added"]["ids"] == ["edge-lyon"]
    assert found["sites"]["removed"]["ids"] == ["edge-paris"]
    assert found["sites"]["changed"]["ids"] == ["cloud-frankfurt"]
    assert found["metadata"]["changed"] == ["name", "revision", "forbid_errors"]
    assert found["candidate"]["revision"] == 2
    assert found["live"]["revision"] is None


def test_a_huge_catalog_is_listed_up_to_a_bound() -> None:
    many = json.loads(ENTITIES) + [
        {"uid": {"type": "User", "id": f"user-{n:05}"}, "attrs": {"department": "x"}, "parents": []}
        for n in range(5000)
    ]
    comparison = compare_bundles(bundle(), bundle({"entities.json": json.dumps(many)}), now=NOW)
    added = comparison.to_json()["entities"]["added"]
    assert added["count"] == 5000
    assert len(added["ids"]) == MAX_LISTED
    assert added["more"] == 5000 - MAX_LISTED
    text = comparison.text_lines()
    assert len(text) < 60
    assert any(f"and {5000 - MAX_LISTED} more" in line for line in text)
    assert len(comparison.html()) < 20_000


def test_the_reference_values_are_compared_by_device_class() -> None:
    dev = (Path(__file__).parents[3] / "policies" / "reference" / "dev.toml").read_text()
    reference = dev.replace('class = "dev"', 'class = "laptop"')
    found = compare({"reference/laptop.toml": reference})
    assert found["reference"]["added"] == {"count": 1, "ids": ["laptop"], "more": 0}


def test_html_escapes_every_value() -> None:
    hostile = ACCESS + (
        '\n@id("<script>alert(1)</script>")\n@note("</pre><img src=x onerror=alert(2)>")\n'
        'permit (principal, action, resource) when { context has mfa && "<b>" == "<b>" };\n'
    )
    page = compare_bundles(bundle(), bundle({"10-access.cedar": hostile}), now=NOW).html()
    assert "<script>" not in page
    assert "<img" not in page
    assert "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page
    assert page.startswith("<section")
    assert page.endswith("</section>\n")


@pytest.mark.parametrize("side", ["live", "candidate"])
def test_the_comparison_json_has_stable_keys(side: str) -> None:
    found = compare({})
    assert list(found) == [
        "empty",
        "live",
        "candidate",
        "metadata",
        "policies",
        "schema",
        "tests",
        "entities",
        "sites",
        "reference",
    ]
    assert list(found[side]) == [
        "source",
        "version",
        "name",
        "revision",
        "signed_by",
        "forbid_errors",
    ]
    json.dumps(found)
