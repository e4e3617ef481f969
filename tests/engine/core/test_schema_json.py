"""A Cedar schema read into Cedar's JSON schema form, and each action's context type
with its names resolved as Cedar resolves them."""

from __future__ import annotations

import json
from pathlib import Path

import cedarpy
import pytest

from engine._core.schema_json import context_types, entity_types, schema_json

POLICIES = Path(__file__).resolve().parents[3] / "policies"

EVERY_CONSTRUCT = """
@doc("top")
entity Root;
type Shared = { x: Long };
namespace A::B {
  @doc("an enum")
  entity Colour enum ["red", "green"];
  entity E1, E2 in [E1] { "odd name"?: String, n: __cedar::Long, r: Root, s: Shared }
    tags Set<String>;
  type Num = { @doc("a flag") fake: Bool };
  type Inner = { p: Num, ext: ipaddr, d: decimal, dur: duration, dt: datetime, e: Leaf };
  entity Leaf;
  action "weird name", act2 in [Action::"grp", A::B::Action::"grp2"] appliesTo {
    principal: E1, resource: [E2, Colour], context: { a?: Inner, b: Set<Set<Long>> }
  };
  action grp; action grp2;
  action noctx appliesTo { principal: E1, resource: E1 };
  @doc("x") @marker action annotated;
}
namespace Other {
  entity O;
  type Local = { y: String };
  action x appliesTo { principal: A::B::E1, resource: O, context: Local };
  action z appliesTo { principal: O, resource: O, context: { root: Shared, far: A::B::Leaf } };
}
"""


@pytest.mark.parametrize(
    "text",
    [
        pytest.param((POLICIES / "schema.cedarschema").read_text(), id="default-bundle"),
        pytest.param(EVERY_CONSTRUCT, id="every-construct"),
    ],
)
def test_the_json_form_renders_back_to_the_same_schema(text: str) -> None:
    schema = cedarpy.Schema.from_str(text)
    described = schema_json(schema)
    assert described is not None
    assert str(cedarpy.Schema.from_json_str(json.dumps(described))) == str(schema)


def test_the_json_form_of_a_small_schema() -> None:
    schema = cedarpy.Schema.from_str(
        'namespace N { entity U in [U] { a?: Set<String> }; action "r" appliesTo '
        "{ principal: U, resource: U, context: {} }; }"
    )
    assert schema_json(schema) == {
        "N": {
            "commonTypes": {},
            "entityTypes": {
                "U": {
                    "memberOfTypes": ["U"],
                    "shape": {
                        "type": "Record",
                        "attributes": {
                            "a": {
                                "type": "Set",
                                "element": {"type": "EntityOrCommon", "name": "String"},
                                "required": False,
                            }
                        },
                    },
                }
            },
            "actions": {
                "r": {
                    "appliesTo": {
                        "principalTypes": ["U"],
                        "resourceTypes": ["U"],
                        "context": {"type": "Record", "attributes": {}},
                    }
                }
            },
        }
    }


def test_names_resolve_as_cedar_resolves_them() -> None:
    described = schema_json(cedarpy.Schema.from_str(EVERY_CONSTRUCT))
    assert described is not None
    types = context_types(described)
    assert types is not None
    inner = types[("A::B::Action", "act2")]["attributes"]["a"]
    assert inner["required"] is False
    attributes = inner["attributes"]
    assert attributes["p"]["attributes"]["fake"] == {"type": "Boolean", "required": True}
    assert attributes["ext"] == {"type": "Extension", "name": "ipaddr", "required": True}
    assert attributes["e"] == {"type": "Entity", "name": "A::B::Leaf", "required": True}
    assert types[("A::B::Action", "act2")]["attributes"]["b"] == {
        "type": "Set",
        "element": {"type": "Set", "element": {"type": "Long"}},
        "required": True,
    }
    # A name is looked up in the declaration's namespace, then in the empty one.
    assert types[("Other::Action", "x")]["attributes"] == {
        "y": {"type": "String", "required": True}
    }
    z = types[("Other::Action", "z")]["attributes"]
    assert z["root"]["attributes"] == {"x": {"type": "Long", "required": True}}
    assert z["far"] == {"type": "Entity", "name": "A::B::Leaf", "required": True}
    # No context declared: an empty record. No appliesTo: no context type.
    assert types[("A::B::Action", "noctx")] == {"type": "Record", "attributes": {}}
    assert ("A::B::Action", "grp") not in types


def test_the_default_bundles_device_posture_is_inlined() -> None:
    described = schema_json(cedarpy.Schema.from_str((POLICIES / "schema.cedarschema").read_text()))
    assert described is not None
    types = context_types(described)
    assert types is not None
    device = types[("Docket::Action", "read")]["attributes"]["device"]
    assert device["attributes"]["secure_boot"] == {"type": "Boolean", "required": True}
    place = types[("Docket::Action", "place")]["attributes"]["classification"]
    assert place == {"type": "Entity", "name": "Docket::Classification", "required": True}


def test_entity_types_resolve_each_types_attributes() -> None:
    schema = cedarpy.Schema.from_str(
        """
        type Labels = Set<String>;
        namespace App {
          entity Group;
          entity Colour enum ["red"];
          entity User in [Group] = { email: String, groups?: Labels, boss?: User };
        }
        """
    )
    described = schema_json(schema)
    assert described is not None
    assert entity_types(described) == {
        "App::Group": {"type": "Record", "attributes": {}},
        "App::User": {
            "type": "Record",
            "attributes": {
                "email": {"type": "String", "required": True},
                "groups": {"type": "Set", "element": {"type": "String"}, "required": False},
                "boss": {"type": "Entity", "name": "App::User", "required": False},
            },
        },
    }


def test_action_targets_name_the_types_each_action_applies_to() -> None:
    from engine._core.schema_json import action_targets

    text = """
    entity Outside;
    namespace N {
      entity User; entity Doc; entity Note;
      action read appliesTo { principal: User, resource: [Doc, Note] };
      action peek appliesTo { principal: [User, Outside], resource: Doc };
      action group;
    }
    """
    described = schema_json(cedarpy.Schema.from_str(text))
    assert described is not None
    assert action_targets(described) == {
        ("N::Action", "read"): (frozenset({"N::User"}), frozenset({"N::Doc", "N::Note"})),
        ("N::Action", "peek"): (frozenset({"N::User", "Outside"}), frozenset({"N::Doc"})),
    }
