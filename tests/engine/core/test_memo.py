"""The decision memo: a remembered decision is the one a fresh evaluation gives, for as
long as what it depends on holds, and the memo stays within its bounds."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from devices import DEVICE_ID, TD, attested
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from attestation._ca import CertificateAuthority, RevocationList
from engine import Decision, Engine, EngineError, PolicyBundle, Request, RequestError
from engine._core import evaluate
from engine._core.bundle import read_bundle_files
from engine._core.limits import MAX_BATCH_ENTITY_BYTES
from engine._core.memo import Memoised
from engine._core.models import PolicyError
from engine._errors import LimitExceeded
from engine._service.posture import PostureReader, attach

ATTESTED = attested(measured_boot_ok=False)
INVENTORY = {"disk_encrypted": True, "patch_age_days": 3, "trust_tier": "high", "managed": True}

POLICIES = Path(__file__).resolve().parents[3] / "policies"
NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
LATER = NOW + timedelta(days=40)


def _cases() -> list[tuple[str, Request]]:
    cases = []
    for path in sorted((POLICIES / "tests").glob("*.yaml")):
        for case in yaml.safe_load(path.read_text())["cases"]:
            cases.append((f"{path.stem}/{case['name']}", Request.model_validate(case["request"])))
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def bundle() -> PolicyBundle:
    return PolicyBundle.load(POLICIES)


@pytest.fixture(scope="module")
def shared(bundle: PolicyBundle) -> Engine:
    """One engine for a whole module: its memo and shapes fill up as tests go."""
    return Engine(bundle)


def fresh(bundle: PolicyBundle, request: Request, now: datetime) -> Decision | str:
    """What a new engine (empty memo, no shape seen) says, or the error it raises."""
    try:
        return Engine(bundle).decide(request, now=now)
    except EngineError as exc:
        return f"{type(exc).__name__}: {exc}"


def decided(engine: Engine, request: Request, now: datetime) -> Decision | str:
    try:
        return engine.decide(request, now=now)
    except EngineError as exc:
        return f"{type(exc).__name__}: {exc}"


def alice(**device: Any) -> Request:
    posture = {"attested": True, "secure_boot": True, "disk_encrypted": True}
    return Request.model_validate(
        {
            "principal": {"type": "User", "id": "alice"},
            "action": {"type": "Action", "id": "read"},
            "resource": {"type": "Data", "id": "patient-records-eu"},
            "context": {
                "mfa": True,
                "jurisdiction": "eu",
                "device": {**posture, "patch_age_days": 3, "trust_tier": "high", "managed": True}
                | device,
            },
        }
    )


@pytest.mark.parametrize(("name", "request_"), CASES, ids=[name for name, _ in CASES])
def test_a_hit_is_the_fresh_decision_of_every_policy_test_case(
    shared: Engine, bundle: PolicyBundle, name: str, request_: Request
) -> None:
    first = decided(shared, request_, NOW)
    before = shared.memo_stats()
    again = decided(shared, request_, LATER)
    assert again == fresh(bundle, request_, LATER)
    if isinstance(first, Decision):
        assert isinstance(again, Decision)
        assert shared.memo_stats().hits == before.hits + 1
        # The same objects: the audit entry says the same bytes.
        assert again.reasons is first.reasons
        assert again.errors is first.errors
        assert again.evaluated_at == LATER


_principals = st.sampled_from(
    [("User", "alice"), ("User", "erin"), ("User", "nobody"), ("Workload", "billing-api")]
)
_resources = st.sampled_from(
    [("Data", "patient-records-eu"), ("Data", "payroll-uk"), ("Service", "docket"), ("Site", "x")]
)
_actions = st.sampled_from(["read", "write", "admin", "delete", "place"])
_devices = st.fixed_dictionaries(
    {"attested": st.booleans(), "secure_boot": st.booleans()},
    optional={
        "disk_encrypted": st.booleans(),
        "patch_age_days": st.integers(min_value=-5, max_value=60) | st.just(2**63),
        "trust_tier": st.sampled_from(["high", "low"]),
        "managed": st.booleans() | st.just("yes"),
    },
)
_contexts = st.fixed_dictionaries(
    {},
    optional={
        "mfa": st.booleans(),
        "jurisdiction": st.sampled_from(["eu", "us", "uk"]),
        "device": _devices,
        "time": st.fixed_dictionaries(
            {"hour": st.integers(0, 23), "weekday": st.sampled_from(["mon", "sun"])}
        ),
        "unknown": st.just(1),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_principals, _actions, _resources, _contexts, st.booleans())
def test_a_hit_is_the_fresh_decision_of_any_request(
    shared: Engine,
    bundle: PolicyBundle,
    principal: tuple[str, str],
    action: str,
    resource: tuple[str, str],
    context: dict[str, Any],
    twice: bool,
) -> None:
    request = Request.model_validate(
        {
            "principal": {"type": principal[0], "id": principal[1]},
            "action": {"type": "Action", "id": action},
            "resource": {"type": resource[0], "id": resource[1]},
            "context": context,
        }
    )
    if twice:
        decided(shared, request, NOW)
    assert decided(shared, request, LATER) == fresh(bundle, request, LATER)


def test_a_batch_of_hits_and_misses_is_the_fresh_batch(bundle: PolicyBundle) -> None:
    engine = Engine(bundle)
    requests = [alice(), alice(patch_age_days=40), alice(managed=False), alice()]
    engine.decide(requests[1], now=NOW)
    batch = engine.decide_batch(requests, now=LATER)
    assert batch == Engine(bundle).decide_batch(requests, now=LATER)
    assert engine.memo_stats().hits == 1  # requests[1]; requests[3] is looked up with [0]


def test_a_batch_counts_the_entity_bytes_of_remembered_requests(bundle: PolicyBundle) -> None:
    """The batch limit holds when some of its requests are remembered: a batch of
    requests each within the limits, over the limit together, is refused every time."""
    engine = Engine(bundle)
    requests = []
    for n in range(8):
        groups = [
            {"uid": {"type": "Group", "id": f"g{n}-{i}-" + "x" * 300}, "attrs": {}, "parents": []}
            for i in range(100)
        ]
        requests.append(alice().model_copy(update={"entities": tuple(groups)}))
    assert sum(len(json.dumps(r.entities)) for r in requests) > MAX_BATCH_ENTITY_BYTES
    for request in requests:
        engine.decide(request, now=NOW)
    with pytest.raises(LimitExceeded, match="per-request entities in one batch"):
        engine.decide_batch(requests, now=NOW)


def test_a_posture_change_is_another_request(shared: Engine) -> None:
    """The device posture is part of the key: a device that is no longer attested (its
    credential expired: the server then attaches no posture) is evaluated, not served."""
    assert shared.decide(alice(), now=NOW).allowed
    assert not shared.decide(alice(attested=False), now=NOW).allowed
    assert shared.decide(alice(), now=NOW).allowed


def test_a_decision_resting_on_a_credential_is_not_served_past_it(bundle: PolicyBundle) -> None:
    """The server reads the posture from the caller's credential on every call, at that
    call's time, before the engine: past the certificate's end (or once it is revoked)
    the request is another one (unattested), or refused, never the remembered allow."""
    engine = Engine(bundle)
    issued = datetime.now(UTC)
    ca = CertificateAuthority.create(TD, issued)
    reader = PostureReader(ca, "docket")
    key = ec.generate_private_key(ec.SECP256R1())
    leaf, _ = ca.issue_svid(key.public_key(), DEVICE_ID, now=issued, posture=ATTESTED.claims())
    pem = leaf.public_bytes(serialization.Encoding.PEM)
    asked = alice().model_copy(update={"context": {**alice().context, "device": INVENTORY}})

    def decide(at: datetime) -> Decision:
        return engine.decide(attach(asked, reader.from_certificate(pem, at)), now=at)

    assert decide(issued).allowed
    assert decide(issued + timedelta(seconds=1)).allowed  # a hit
    assert engine.memo_stats().hits == 1
    expired = leaf.not_valid_after_utc + timedelta(seconds=1)
    assert not decide(expired).allowed
    reader.revocations = RevocationList.empty(TD).revoke("spiffe_id", DEVICE_ID, "lost", issued)
    with pytest.raises(RequestError, match="revoked"):
        decide(issued + timedelta(seconds=2))


def test_the_clock_is_not_an_input_only_a_stamp(shared: Engine) -> None:
    """Nothing in the engine reads the clock: a hit, days later, is restamped."""
    first = shared.decide(alice(), now=NOW)
    later = shared.decide(alice(), now=LATER)
    assert (first.decision, first.reasons) == (later.decision, later.reasons)
    assert later.evaluated_at == LATER


@pytest.mark.parametrize(
    "decision",
    [
        Decision(decision="deny", evaluated_at=NOW),
        Decision(
            decision="allow",
            reasons=("a", "b"),
            errors=(PolicyError(policy="c", message="oops"),),
            bundle_version="sha256:00",
            policies_evaluated=3,
            evaluated_at=NOW,
        ),
    ],
    ids=["defaults", "every-field"],
)
def test_a_restamped_decision_is_what_model_copy_gives(decision: Decision) -> None:
    """A hit's restamp (Memoised.at) skips pydantic's generic copy, not what it gives."""
    restamped = Memoised(decision, 0).at(LATER)
    expected = decision.model_copy(update={"evaluated_at": LATER})
    assert restamped == expected
    assert restamped.model_fields_set == expected.model_fields_set
    assert restamped.model_dump() == expected.model_dump()
    assert restamped.model_dump_json() == expected.model_dump_json()
    assert hash(restamped) == hash(expected)
    assert decision.evaluated_at == NOW  # the remembered one is not touched
    with pytest.raises(ValidationError):  # still frozen
        restamped.decision = "allow"  # type: ignore[misc]


def _with(bundle: PolicyBundle, name: str, change: Any) -> PolicyBundle:
    files = read_bundle_files(POLICIES)
    files[name] = change(files[name].decode()).encode()
    return PolicyBundle.from_files(files, source="changed")


def test_a_bundle_swap_empties_the_memo(bundle: PolicyBundle) -> None:
    engine = Engine(bundle)
    assert engine.decide(alice(), now=NOW).allowed
    stricter = _with(
        bundle,
        "guards.cedar",
        lambda text: text + '\n@id("no-reads")\nforbid(principal, action, resource);\n',
    )
    engine.swap(stricter)
    assert engine.memo_stats().entries == 0
    decision = engine.decide(alice(), now=NOW)
    assert not decision.allowed
    assert decision.reasons == ("no-reads",)
    engine.swap(bundle)
    assert engine.decide(alice(), now=NOW).allowed


def test_an_entity_change_empties_the_memo(bundle: PolicyBundle) -> None:
    """Entities come with the bundle: a new entities.json is a swap like any other."""
    engine = Engine(bundle)
    assert engine.decide(alice(), now=NOW).allowed
    entities = json.loads(bundle.files["entities.json"])
    for entity in entities:
        if entity["uid"]["id"] == "alice" and entity["uid"]["type"].endswith("User"):
            entity["attrs"]["department"] = "sales"
    moved = _with(bundle, "entities.json", lambda _: json.dumps(entities))
    engine.swap(moved)
    assert engine.memo_stats().entries == 0
    assert engine.decide(alice(), now=NOW) == Engine(moved).decide(alice(), now=NOW)
    assert (
        engine.decide(alice(), now=NOW).reasons != Engine(bundle).decide(alice(), now=NOW).reasons
    )


def test_forget_empties_the_memo(bundle: PolicyBundle) -> None:
    """What the server calls when its CA or revocation list changes."""
    engine = Engine(bundle)
    engine.decide(alice(), now=NOW)
    engine.decide(alice(), now=NOW)
    assert (engine.memo_stats().hits, engine.memo_stats().entries) == (1, 1)
    engine.forget()
    assert engine.memo_stats().entries == 0
    engine.decide(alice(), now=NOW)
    assert (engine.memo_stats().hits, engine.memo_stats().misses) == (1, 2)


def test_a_decision_evaluated_across_a_reset_is_not_kept(
    bundle: PolicyBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CA change (or a swap) while a request is being evaluated: what that evaluation
    gives is answered, not remembered past the reset."""
    engine = Engine(bundle)
    real = evaluate._evaluate

    def changed_meanwhile(*args: Any, **kwargs: Any) -> list[Decision]:
        engine.forget()
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "_evaluate", changed_meanwhile)
    assert engine.decide(alice(), now=NOW).allowed
    assert engine.memo_stats().entries == 0


def test_a_decision_of_the_bundle_swapped_out_meanwhile_is_not_served_after(
    bundle: PolicyBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A swap while a request is evaluated under the old bundle: that answer is the old
    bundle's (it started under it), and the next call gets the new bundle's."""
    engine = Engine(bundle)
    stricter = _with(
        bundle,
        "guards.cedar",
        lambda text: text + '\n@id("no-reads")\nforbid(principal, action, resource);\n',
    )
    real = evaluate._evaluate

    def swapped_meanwhile(*args: Any, **kwargs: Any) -> list[Decision]:
        engine.swap(stricter)
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "_evaluate", swapped_meanwhile)
    during = engine.decide(alice(), now=NOW)
    assert (during.allowed, during.bundle_version) == (True, bundle.version)
    monkeypatch.setattr(evaluate, "_evaluate", real)
    after = engine.decide(alice(), now=NOW)
    assert (after.allowed, after.bundle_version) == (False, stricter.version)


def test_the_memo_keeps_at_most_its_entries(bundle: PolicyBundle) -> None:
    engine = Engine(bundle, memo_entries=50)
    for age in range(500):
        engine.decide(alice(patch_age_days=age), now=NOW)
    stats = engine.memo_stats()
    assert stats.entries == 50
    assert stats.misses == 500
    engine.decide(alice(patch_age_days=499), now=NOW)  # the most recent stays
    engine.decide(alice(patch_age_days=0), now=NOW)  # the oldest went
    assert engine.memo_stats().hits == 1


def test_the_memo_keeps_at_most_its_bytes(bundle: PolicyBundle) -> None:
    engine = Engine(bundle, memo_bytes=256 * 1024)
    for age in range(500):
        engine.decide(alice(patch_age_days=age, firmware_version="0x" + "0" * 400), now=NOW)
    stats = engine.memo_stats()
    assert 0 < stats.bytes <= 256 * 1024
    assert stats.entries < 500


def test_no_memo_when_it_has_no_room(bundle: PolicyBundle) -> None:
    engine = Engine(bundle, memo_entries=0)
    engine.decide(alice(), now=NOW)
    engine.decide(alice(), now=NOW)
    assert engine.memo_stats().hits == 0
    assert engine.memo_stats().entries == 0


class Tier(int):
    """Not an int to the schema (a Long must be exactly an int)."""


def test_a_value_that_only_looks_the_same_is_not_served(shared: Engine) -> None:
    shared.decide(alice(patch_age_days=7), now=NOW)
    odd = alice().model_copy(
        update={"context": {**alice().context, "device": {**alice().context["device"]}}}
    )
    odd.context["device"]["patch_age_days"] = Tier(7)
    with pytest.raises(EngineError, match="patch_age_days"):
        shared.decide(odd, now=NOW)
