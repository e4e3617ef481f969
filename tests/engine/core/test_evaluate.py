"""Deciding requests and placing workloads against the sample bundle."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cedarpy
import pytest
from sample_bundle import bundle_files

from engine import (
    Decision,
    Engine,
    PolicyBundle,
    PolicyError,
    Request,
    RequestError,
    Workload,
)
from engine._core import evaluate
from engine._core.index import PolicyIndex
from engine._errors import LimitExceeded

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
ORPHAN_OWNER = 'entity `Docket::User::"nobody"` does not exist'


@pytest.fixture(scope="module")
def bundle() -> PolicyBundle:
    return PolicyBundle.from_files(bundle_files())


@pytest.fixture
def engine(bundle: PolicyBundle) -> Engine:
    return Engine(bundle)


def request(
    principal: str,
    action: str,
    resource: str,
    context: dict[str, Any] | None = None,
    entities: list[dict[str, Any]] | None = None,
) -> Request:
    """``request("User:alice", "read", "Data:ledger")``."""

    def uid(text: str) -> dict[str, str]:
        type_name, _, entity_id = text.rpartition(":")
        return {"type": type_name, "id": entity_id}

    return Request.model_validate(
        {
            "principal": uid(principal),
            "action": {"type": "Action", "id": action},
            "resource": uid(resource),
            "context": context or {},
            "entities": entities or [],
        }
    )


def user(user_id: str, department: str = "ops", *groups: str) -> dict[str, Any]:
    return {
        "uid": {"type": "User", "id": user_id},
        "attrs": {"department": department},
        "parents": [{"type": "Group", "id": g} for g in groups],
    }


def outcome(decision: Decision) -> tuple[str, tuple[str, ...], tuple[tuple[str | None, str], ...]]:
    return (
        decision.decision,
        decision.reasons,
        tuple((e.policy, e.message) for e in decision.errors),
    )


INTERNAL = {"__entity": {"type": "Classification", "id": "internal"}}
ALICE_OWNS = {"owner": {"__entity": {"type": "User", "id": "alice"}}}

DECISIONS = [
    pytest.param(
        request("User:alice", "read", "Data:ledger"),
        ("allow", ("read-own",), ()),
        id="owner-reads",
    ),
    pytest.param(
        request("User:bob", "read", "Data:ledger"),
        ("deny", (), ()),
        id="default-deny",
    ),
    pytest.param(
        request("User:dave", "read", "Data:ledger"),
        ("allow", ("engineering-reads",), ()),
        id="group-of-group-reads",
    ),
    pytest.param(
        request("User:bob", "write", "Data:ledger", {"mfa": True}),
        ("allow", ("same-department-writes",), ()),
        id="write-with-mfa",
    ),
    pytest.param(
        request("User:bob", "write", "Data:ledger"),
        ("deny", ("no-write-without-mfa",), ()),
        id="forbid-wins-and-is-the-reason",
    ),
    pytest.param(
        request("User:bob", "write", "Data:orphan", {"mfa": True}),
        ("deny", (), (("same-department-writes", ORPHAN_OWNER),)),
        id="erroring-policy-denies-and-is-reported",
    ),
    pytest.param(
        request("User:bob", "write", "Data:orphan"),
        ("deny", ("no-write-without-mfa",), (("same-department-writes", ORPHAN_OWNER),)),
        id="forbid-and-error-together",
    ),
    pytest.param(
        request("Docket::User:dave", "read", "Docket::Data:ledger"),
        ("allow", ("engineering-reads",), ()),
        id="qualified-types-accepted",
    ),
    pytest.param(
        request("User:bob", "read", "Data:ledger", ALICE_OWNS),
        ("allow", ("delegated-read",), ()),
        id="unqualified-entity-ref-in-context",
    ),
    pytest.param(
        request("User:eve", "read", "Data:ledger", entities=[user("eve", "ops", "sre")]),
        ("allow", ("engineering-reads",), ()),
        id="inline-principal-in-stored-groups",
    ),
    pytest.param(
        request("User:alice", "read", "Data:ledger", entities=[user("alice", "finance")]),
        ("allow", ("read-own",), ()),
        id="inline-entity-identical-to-stored",
    ),
]


@pytest.mark.parametrize(("req", "expected"), DECISIONS)
def test_decide(engine: Engine, bundle: PolicyBundle, req: Request, expected: Any) -> None:
    decision = engine.decide(req, now=NOW)
    assert outcome(decision) == expected
    assert decision.allowed is (expected[0] == "allow")
    assert (decision.bundle_version, decision.evaluated_at) == (bundle.version, NOW)


@pytest.mark.parametrize(
    ("req", "message"),
    [
        pytest.param(
            request("Robot:r2", "read", "Data:ledger"),
            "`Docket::Robot` is not declared",
            id="unknown-entity-type",
        ),
        pytest.param(
            request("User:bob", "read", "Data:ledger", {"mfa": "yes"}),
            "context.mfa: expected a boolean (got a string)",
            id="context-attribute-of-wrong-type",
        ),
        pytest.param(
            request("User:bob", "read", "Data:ledger", {"device": "laptop"}),
            'context.device: not in the schema for action "read"',
            id="context-attribute-not-in-schema",
        ),
        pytest.param(
            request("User:bob", "fly", "Data:ledger"),
            '`Docket::Action::"fly"` does not exist',
            id="unknown-action",
        ),
        pytest.param(
            request("User:bob", "read", "Site:edge-paris"),
            'resource type `Docket::Site` is not valid for `Docket::Action::"read"`',
            id="resource-type-not-allowed-for-action",
        ),
        pytest.param(
            request("User:alice", "read", "Data:ledger", entities=[user("alice", "hr")]),
            'duplicate entity entry `Docket::User::"alice"`',
            id="inline-entity-conflicts-with-stored",
        ),
        pytest.param(
            request("User:eve", "read", "Data:ledger", entities=[{"uid": "eve"}]),
            "entities:",
            id="inline-entity-malformed",
        ),
    ],
)
def test_request_not_fitting_the_schema_is_refused(
    engine: Engine, req: Request, message: str
) -> None:
    with pytest.raises(RequestError, match=re.escape(message)):
        engine.decide(req, now=NOW)


def test_no_bundle_denies_with_an_error() -> None:
    decisions = Engine().decide_batch([request("User:alice", "read", "Data:ledger")] * 2, now=NOW)
    assert [outcome(d) for d in decisions] == [
        ("deny", (), ((None, "no policy bundle loaded"),))
    ] * 2
    assert decisions[0].bundle_version is None


def test_naive_now_is_a_value_error(engine: Engine) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        engine.decide(request("User:alice", "read", "Data:ledger"), now=datetime(2026, 1, 1))


def test_aware_non_utc_now_is_accepted(engine: Engine) -> None:
    paris = datetime(2026, 1, 1, 13, tzinfo=timezone(timedelta(hours=1)))
    assert engine.decide(request("User:alice", "read", "Data:ledger"), now=paris).allowed


ALLOW_READ_OWN = ("allow", ("read-own",), ())
ALLOW_ENGINEERING = ("allow", ("engineering-reads",), ())
ALLOW_WRITE = ("allow", ("same-department-writes",), ())
BATCH = [
    (request("User:bob", "write", "Data:ledger"), ("deny", ("no-write-without-mfa",), ())),
    (request("User:alice", "read", "Data:ledger"), ALLOW_READ_OWN),
    (
        request("User:eve", "read", "Data:ledger", entities=[user("eve", "x", "sre")]),
        ALLOW_ENGINEERING,
    ),
    (request("User:bob", "write", "Data:ledger", {"mfa": True}), ALLOW_WRITE),
    (request("User:bob", "read", "Data:ledger"), ("deny", (), ())),
    (request("User:eve", "write", "Data:ledger", {"mfa": True}, [user("eve")]), ALLOW_WRITE),
    (
        request("User:bob", "write", "Data:orphan", {"mfa": True}),
        ("deny", (), (("same-department-writes", ORPHAN_OWNER),)),
    ),
    (request("User:dave", "read", "Data:ledger"), ALLOW_ENGINEERING),
    (
        request("Workload:w", "place", "Site:edge-paris", {"classification": INTERNAL}),
        ("allow", ("place-anywhere",), ()),
    ),
]


@pytest.mark.parametrize(
    "fold_limit", [pytest.param(None, id="default"), pytest.param(0, id="fold0")]
)
def test_decide_batch_keeps_request_order(bundle: PolicyBundle, fold_limit: int | None) -> None:
    """Requests reaching different buckets, with and without inline entities, interleaved."""
    if fold_limit is not None:
        actions = {
            ("Docket::Action", a): bundle.ancestors(("Docket::Action", a))
            for a in ("read", "write", "place")
        }
        bundle = PolicyBundle.from_files(bundle.files)
        bundle.index = PolicyIndex(bundle.policies, actions, fold_limit=fold_limit)
    decisions = Engine(bundle).decide_batch([r for r, _ in BATCH], now=NOW)
    assert [outcome(d) for d in decisions] == [expected for _, expected in BATCH]


def test_decide_batch_refuses_the_whole_batch_for_one_bad_request(engine: Engine) -> None:
    with pytest.raises(RequestError):
        engine.decide_batch(
            [request("User:alice", "read", "Data:ledger"), request("User:bob", "fly", "Data:x")],
            now=NOW,
        )


def test_swap_replaces_the_bundle_for_later_calls(bundle: PolicyBundle) -> None:
    stricter = PolicyBundle.from_files(
        bundle_files({"30-lockdown.cedar": "forbid (principal, action, resource);\n"})
    )
    engine = Engine(bundle)
    assert engine.swap(stricter) is bundle
    decision = engine.decide(request("User:alice", "read", "Data:ledger"), now=NOW)
    assert outcome(decision) == ("deny", ("policy8",), ())
    assert decision.bundle_version == stricter.version != bundle.version


# --- placement ---------------------------------------------------------------------------


def placed(engine: Engine, workload: Workload, sites: list[str] | None = None) -> Any:
    placement = engine.place(workload, sites, now=NOW)
    return (
        [(s.site, s.within_latency_budget) for s in placement.allowed],
        [(s.site, s.reasons) for s in placement.denied],
    )


@pytest.mark.parametrize(
    ("workload", "sites", "expected"),
    [
        pytest.param(
            Workload(id="api"),
            None,
            (
                [("onprem-virginia", True), ("cloud-frankfurt", True), ("edge-paris", True)],
                [],
            ),
            id="no-budget-cheapest-first",
        ),
        pytest.param(
            Workload(id="api", users_in="eu", latency_budget_ms=30),
            None,
            (
                [("cloud-frankfurt", True), ("edge-paris", True), ("onprem-virginia", False)],
                [],
            ),
            id="within-budget-first-then-cost",
        ),
        pytest.param(
            Workload(id="api", users_in="us", latency_budget_ms=30),
            None,
            (
                [("onprem-virginia", True), ("cloud-frankfurt", False), ("edge-paris", False)],
                [],
            ),
            id="over-budget-sites-ordered-by-cost",
        ),
        pytest.param(
            Workload(id="api", classification="restricted"),
            None,
            (
                [("onprem-virginia", True), ("edge-paris", True)],
                [("cloud-frankfurt", ("restricted-needs-attested",))],
            ),
            id="denied-site-with-reason",
        ),
        pytest.param(
            Workload(id="corpus", kind="dataset"),
            None,
            (
                [("onprem-virginia", True), ("cloud-frankfurt", True)],
                [("edge-paris", ("no-data-at-edge",))],
            ),
            id="dataset-is-a-data-principal",
        ),
        pytest.param(
            Workload(id="api", classification="restricted"),
            ["cloud-frankfurt", "edge-paris"],
            ([("edge-paris", True)], [("cloud-frankfurt", ("restricted-needs-attested",))]),
            id="only-the-candidates-given",
        ),
    ],
)
def test_place(engine: Engine, workload: Workload, sites: list[str] | None, expected: Any) -> None:
    assert placed(engine, workload, sites) == expected


def test_place_reports_figures_and_version(engine: Engine, bundle: PolicyBundle) -> None:
    placement = engine.place(Workload(id="api", users_in="eu"), ["edge-paris"], now=NOW)
    (site,) = placement.allowed
    assert (site.latency_ms, site.cost_per_hour, site.tier, site.reasons) == (
        5.0,
        0.5,
        "edge",
        ("place-anywhere",),
    )
    assert (placement.workload, placement.bundle_version) == ("api", bundle.version)


@pytest.mark.parametrize(
    ("workload", "sites", "message"),
    [
        pytest.param(Workload(id="api"), ["mars"], "unknown site 'mars'", id="unknown-site"),
        pytest.param(
            Workload(id="api", context={"gpu": True}),
            None,
            'context.gpu: not in the schema for action "place"',
            id="context-not-in-schema",
        ),
    ],
)
def test_place_refuses(
    engine: Engine, workload: Workload, sites: list[str] | None, message: str
) -> None:
    with pytest.raises(RequestError, match=message):
        engine.place(workload, sites, now=NOW)


def test_place_without_bundle_denies_every_named_site() -> None:
    placement = Engine().place(Workload(id="api"), ["edge-paris"], now=NOW)
    assert placement.allowed == ()
    assert [(d.site, d.errors) for d in placement.denied] == [
        ("edge-paris", (PolicyError(policy=None, message="no policy bundle loaded"),))
    ]


def test_schema_without_namespace_leaves_types_as_given() -> None:
    bare = PolicyBundle.from_files(
        {
            "schema.cedarschema": b"entity User; entity Doc;\n"
            b"action view appliesTo { principal: [User], resource: [Doc] };\n",
            "p.cedar": b'@id("view-all") permit (principal is User, action, resource);\n',
        }
    )
    assert bare.namespace is None
    decision = Engine(bare).decide(request("User:u", "view", "Doc:d"), now=NOW)
    assert outcome(decision) == ("allow", ("view-all",), ())


# --- fail closed: a forbid whose condition errors denies ---------------------------------

ERRORS_SCHEMA = """\
namespace Docket {
  entity User { department: String };
  entity Data;
  action read, write appliesTo {
    principal: [User],
    resource: [Data],
    context: {
      n?: Long,
      at?: __cedar::datetime,
      by?: __cedar::duration,
      addr?: __cedar::ipaddr,
    },
  };
}
"""

# One condition per kind of runtime error a strictly validated policy can still raise:
# integer overflow, an extension function on a bad runtime value (datetime.offset past
# the representable range), and an attribute of an entity that is not in the store.
OVERFLOW = "context has n && context.n + 9223372036854775807 > 0"
BAD_EXTENSION = (
    'context has at && context has by && context.at.offset(context.by) > datetime("2020-01-01")'
)
MISSING_ATTRIBUTE = 'principal.department == "blocked"'
ERRORS_POLICIES = f"""\
@id("read-anything")
permit (principal, action == Docket::Action::"read", resource);

@id("forbid-overflow")
forbid (principal, action == Docket::Action::"read", resource) when {{ {OVERFLOW} }};

@id("forbid-bad-extension")
forbid (principal, action == Docket::Action::"read", resource) when {{ {BAD_EXTENSION} }};

@id("forbid-missing-attribute")
forbid (principal, action == Docket::Action::"read", resource) when {{ {MISSING_ATTRIBUTE} }};

@id("write-anything")
permit (principal, action == Docket::Action::"write", resource);

@id("permit-overflow")
permit (principal, action == Docket::Action::"write", resource) when {{ {OVERFLOW} }};

@id("permit-bad-extension")
permit (principal, action == Docket::Action::"write", resource) when {{ {BAD_EXTENSION} }};

@id("permit-missing-attribute")
permit (principal, action == Docket::Action::"write", resource) when {{ {MISSING_ATTRIBUTE} }};
"""
ERRORS_ENTITIES = (
    '[{"uid": {"type": "User", "id": "alice"}, "attrs": {"department": "ops"}, "parents": []}]'
)


def errors_bundle(settings: str | None = None) -> PolicyBundle:
    files = {
        "schema.cedarschema": ERRORS_SCHEMA.encode(),
        "policies.cedar": ERRORS_POLICIES.encode(),
        "entities.json": ERRORS_ENTITIES.encode(),
    }
    if settings is not None:
        files["bundle.toml"] = settings.encode()
    return PolicyBundle.from_files(files)


def extension(fn: str, arg: str) -> dict[str, Any]:
    return {"__extn": {"fn": fn, "arg": arg}}


ERROR_KINDS = [
    pytest.param("User:alice", {"n": 1}, "integer overflow", id="overflow"),
    pytest.param(
        "User:alice",
        {"at": extension("datetime", "2020-01-01"), "by": extension("duration", f"{2**63 - 1}ms")},
        "overflows when adding an offset",
        id="bad-extension-value",
    ),
    pytest.param(
        "User:mallory",
        {},
        'entity `Docket::User::"mallory"` does not exist',
        id="missing-attribute",
    ),
]


@pytest.mark.parametrize(("principal", "context", "message"), ERROR_KINDS)
def test_erroring_forbid_denies(principal: str, context: dict[str, Any], message: str) -> None:
    decision = Engine(errors_bundle()).decide(
        request(principal, "read", "Data:x", context), now=NOW
    )
    assert decision.decision == "deny"
    (error,) = decision.errors
    assert error.policy is not None
    assert error.policy.startswith("forbid-")
    assert message in error.message
    # The erroring forbid is what determined the deny: it is the reason.
    assert decision.reasons == (error.policy,)


@pytest.mark.parametrize(("principal", "context", "message"), ERROR_KINDS)
def test_erroring_permit_is_skipped(principal: str, context: dict[str, Any], message: str) -> None:
    decision = Engine(errors_bundle()).decide(
        request(principal, "write", "Data:x", context), now=NOW
    )
    assert decision.decision == "allow"
    assert decision.reasons == ("write-anything",)
    (error,) = decision.errors
    assert error.policy is not None
    assert error.policy.startswith("permit-")
    assert message in error.message


@pytest.mark.parametrize(("principal", "context", "message"), ERROR_KINDS)
def test_cedar_setting_skips_erroring_forbids(
    principal: str, context: dict[str, Any], message: str
) -> None:
    bundle = errors_bundle('[evaluation]\nforbid_errors = "cedar"\n')
    assert bundle.forbid_errors == "cedar"
    decision = Engine(bundle).decide(request(principal, "read", "Data:x", context), now=NOW)
    assert (decision.decision, decision.reasons) == ("allow", ("read-anything",))
    (error,) = decision.errors
    assert error.policy is not None
    assert error.policy.startswith("forbid-")
    assert message in error.message


def test_deny_is_the_default_and_can_be_named() -> None:
    assert errors_bundle().forbid_errors == "deny"
    assert errors_bundle('[evaluation]\nforbid_errors = "deny"\n').forbid_errors == "deny"


def test_forbids_that_neither_hold_nor_error_leave_the_permit() -> None:
    decision = Engine(errors_bundle()).decide(
        request("User:alice", "read", "Data:x", {"n": -(2**63 - 1)}), now=NOW
    )
    assert outcome(decision) == ("allow", ("read-anything",), ())


def test_ip_that_is_not_an_ip_in_the_context_is_refused() -> None:
    """An ipaddr-typed context value that does not parse never reaches a policy: the
    request is refused (strict validation forbids ``ip(context.x)`` in policies)."""
    with pytest.raises(RequestError, match="invalid IP address: not-an-ip"):
        Engine(errors_bundle()).decide(
            request("User:alice", "read", "Data:x", {"addr": extension("ip", "not-an-ip")}),
            now=NOW,
        )


def test_placement_site_whose_forbid_errors_is_denied() -> None:
    """The workload is not a stored entity, so reading its attribute errors, and only
    for the site the condition reaches (``&&`` stops at the region first)."""
    forbid = (
        '@id("forbid-erroring-at-paris")\n'
        'forbid (principal is Docket::Workload, action == Docket::Action::"place", resource)\n'
        'when { resource.region == "eu-west" && principal.namespace == "blocked" };\n'
    )
    bundle = PolicyBundle.from_files(bundle_files({"30-errors.cedar": forbid}))
    placement = Engine(bundle).place(
        Workload.model_validate({"id": "w", "classification": "internal"}), now=NOW
    )
    assert [s.site for s in placement.allowed] == ["onprem-virginia", "cloud-frankfurt"]
    (denied,) = placement.denied
    assert (denied.site, denied.reasons) == ("edge-paris", ("forbid-erroring-at-paris",))
    assert [e.policy for e in denied.errors] == ["forbid-erroring-at-paris"]


# --- bounded requests: the limits are checked before Cedar adds entities ------------------


def group(group_id: str, *parents: str) -> dict[str, Any]:
    return {
        "uid": {"type": "Group", "id": group_id},
        "attrs": {},
        "parents": [{"type": "Group", "id": p} for p in parents],
    }


def chain(length: int, top: str | None = None) -> list[dict[str, Any]]:
    """User eve in g1 in g2 … in g<length-1> (in ``top`` when given): ``length`` entities."""
    entities = [user("eve", "ops", "g1")]
    for i in range(1, length - 1):
        entities.append(group(f"g{i}", f"g{i + 1}"))
    entities.append(group(f"g{length - 1}", *([top] if top else [])))
    return entities


def nested(depth: int) -> Any:
    value: Any = True
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def read_as_eve(entities: list[dict[str, Any]], context: dict[str, Any] | None = None) -> Request:
    return request("User:eve", "read", "Data:ledger", context, entities)


OVER_LIMITS = [
    pytest.param(
        read_as_eve(chain(1200)),
        "entities: 1200 per-request entities exceed the limit of 100",
        id="the-1200-chain-attack",
    ),
    pytest.param(
        read_as_eve(chain(40)), "entities: chain depth 40 exceeds the limit of 32", id="chain-depth"
    ),
    pytest.param(
        # 31 per-request entities, then sre and engineering from the store: 33 in all.
        read_as_eve(chain(31, top="sre")),
        "entities: chain depth 33 exceeds the limit of 32",
        id="chain-depth-through-stored-entities",
    ),
    pytest.param(
        read_as_eve([user("eve", "ops", *(f"g{i}" for i in range(33)))]),
        'entities: Docket::User::"eve" has 33 parents; the limit is 32',
        id="parent-fan-out",
    ),
    pytest.param(
        read_as_eve([user("eve", "x" * 70_000)]),
        "entities[0].attrs: more than the limit of 65536 bytes of strings",
        id="entity-attribute-bytes",
    ),
    pytest.param(
        read_as_eve(
            [{**group(f"g{i}"), "uid": {"type": "Group", "id": f"{i:0>800}"}} for i in range(90)]
        ),
        "bytes of per-request entities exceed the limit of 65536",
        id="entity-json-bytes",
    ),
    pytest.param(
        request("User:bob", "read", "Data:ledger", {"mfa": nested(17)}),
        "context: nesting deeper than the limit of 16 levels",
        id="context-depth",
    ),
    pytest.param(
        request("User:bob", "read", "Data:ledger", {"mfa": nested(500)}),
        "context: nesting deeper than the limit of 16 levels",
        id="context-depth-that-overflowed-the-stack",
    ),
    pytest.param(
        request("User:bob", "read", "Data:ledger", {"tags": list(range(5000))}),
        "context: more than the limit of 4096 values",
        id="context-values",
    ),
    pytest.param(
        request("User:bob", "read", "Data:ledger", {"note": "x" * 300_000}),
        "context: more than the limit of 262144 bytes of strings",
        id="context-bytes",
    ),
]


@pytest.mark.parametrize(("req", "message"), OVER_LIMITS)
def test_request_over_a_limit_is_refused_naming_it(
    engine: Engine, req: Request, message: str
) -> None:
    with pytest.raises(LimitExceeded, match=re.escape(message)):
        engine.decide(req, now=NOW)


def test_request_at_the_limits_is_decided(engine: Engine) -> None:
    at_depth = read_as_eve(chain(32))
    assert engine.decide(at_depth, now=NOW).decision == "deny"
    in_stored = read_as_eve(chain(30, top="sre"))
    assert engine.decide(in_stored, now=NOW).reasons == ("engineering-reads",)
    fan_out = read_as_eve([user("eve", "ops", "sre", *(f"g{i}" for i in range(31)))])
    assert engine.decide(fan_out, now=NOW).reasons == ("engineering-reads",)
    context = request("User:bob", "write", "Data:ledger", {"mfa": True})
    assert engine.decide(context, now=NOW).allowed


def test_cycle_of_per_request_entities_is_measured_then_refused(engine: Engine) -> None:
    """The depth check cuts the cycle (it does not loop); Cedar then refuses it."""
    cycle = [user("eve", "ops", "g1"), group("g1", "g2"), group("g2", "g1", "sre")]
    with pytest.raises(RequestError, match="entities: transitive closure"):
        engine.decide(read_as_eve(cycle), now=NOW)


def test_batch_total_of_entities_is_bounded(engine: Engine) -> None:
    """Each request within the limits, the batch as a whole over them."""
    one = read_as_eve(chain(30))
    assert len(engine.decide_batch([one] * 33, now=NOW)) == 33
    with pytest.raises(
        LimitExceeded,
        match=re.escape(
            "entities: 1020 per-request entities in one batch exceed the limit of 1000"
        ),
    ):
        engine.decide_batch([one] * 34, now=NOW)


def test_batch_total_of_entity_bytes_is_bounded(engine: Engine) -> None:
    one = read_as_eve([user("eve", "x" * 60_000)])
    with pytest.raises(LimitExceeded, match="bytes of per-request entities in one batch exceed"):
        engine.decide_batch([one] * 5, now=NOW)


# The shape cache: a plain context's shape is checked (and validated by Cedar, with the
# schema) once; later requests of that shape skip both.

POLICIES = Path(__file__).resolve().parents[3] / "policies"


def alice_reads(age: int, **context: Any) -> Request:
    """alice reads EU patient records from an attested device patched ``age`` days ago."""
    device = {"attested": True, "secure_boot": True, "disk_encrypted": True, "managed": True}
    asked = {"mfa": True, "jurisdiction": "eu", "device": device | {"patch_age_days": age}}
    return request("User:alice", "read", "Data:patient-records-eu", asked | context)


@pytest.fixture
def cedar_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Per cedarpy call of the engine, whether it passed the schema."""
    calls: list[bool] = []
    real = cedarpy.is_authorized_batch

    def spy(requests: Any, policies: Any, entities: Any, schema: Any = None) -> Any:
        calls.append(schema is not None)
        return real(requests, policies, entities, schema=schema)

    monkeypatch.setattr(evaluate.cedarpy, "is_authorized_batch", spy)
    return calls


@pytest.fixture
def walks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The actions whose context the engine walked."""
    walked: list[str] = []
    real = evaluate.context_problem

    def spy(context_type: Any, context: Any, action: str, field: str = "context") -> str | None:
        walked.append(action)
        return real(context_type, context, action, field)

    monkeypatch.setattr(evaluate, "context_problem", spy)
    return walked


def test_a_shape_is_validated_once_then_the_schema_is_skipped(
    cedar_calls: list[bool], walks: list[str]
) -> None:
    bundle = PolicyBundle.load(POLICIES)
    engine = Engine(bundle, memo_entries=0)
    first = engine.decide(alice_reads(3), now=NOW)
    again = [engine.decide(alice_reads(age), now=NOW) for age in (4, 5, 6)]
    assert cedar_calls == [True, False, False, False]
    assert walks == ["read"]
    assert [d.reasons for d in again] == [first.reasons] * 3
    engine.decide(alice_reads(3, time={"hour": 9, "weekday": "mon"}), now=NOW)  # another shape
    assert cedar_calls[-1] is True
    assert walks == ["read", "read"]


def test_a_swap_forgets_the_shapes(cedar_calls: list[bool]) -> None:
    bundle = PolicyBundle.load(POLICIES)
    engine = Engine(bundle, memo_entries=0)
    engine.decide(alice_reads(3), now=NOW)
    engine.swap(PolicyBundle.load(POLICIES))
    engine.decide(alice_reads(4), now=NOW)
    assert cedar_calls == [True, True]


def test_a_shape_cedar_refuses_is_refused_every_time(cedar_calls: list[bool]) -> None:
    """A principal type the action does not apply to: Cedar's schema says so, each time."""
    bundle = PolicyBundle.load(POLICIES)
    engine = Engine(bundle, memo_entries=0)
    wrong = alice_reads(3).model_copy(
        update={"principal": alice_reads(3).principal.model_copy(update={"type": "Site"})}
    )
    for _ in range(3):
        with pytest.raises(RequestError):
            engine.decide(wrong, now=NOW)
    assert cedar_calls == [True, True, True]


@pytest.mark.parametrize(
    ("owner", "schema_passed"),
    [
        ({"__entity": {"type": "User", "id": "alice"}}, [True, False, False]),
        # A bare {"type", "id"} is a reference only through the schema.
        ({"type": "Docket::User", "id": "alice"}, [True, True, True]),
    ],
    ids=["written-out", "bare"],
)
def test_an_entity_reference_keeps_the_schema_unless_written_out(
    engine: Engine, cedar_calls: list[bool], owner: dict[str, Any], schema_passed: list[bool]
) -> None:
    fresh = Engine(engine.bundle, memo_entries=0)
    decisions = [
        fresh.decide(request("User:alice", "read", "Data:ledger", {"owner": owner}), now=NOW)
        for _ in range(3)
    ]
    assert cedar_calls == schema_passed
    assert len({outcome(d) for d in decisions}) == 1
