"""Shadow bundles: a candidate evaluated beside the live bundle on the same requests
never changes an answer; its disagreements are counted by kind and annotated on the
decision's audit entry (only then), and a candidate that does not verify is refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from shadow_bundles import FORBID_HEIDI, OVERFLOW, PERMIT_DIRECTORY, candidate

from audit import verify_store
from engine._core.models import EntityUID, Request
from engine._errors import BundleError
from engine._service.decisions import DecisionService
from engine._service.shadow import Shadow, load_candidate

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def request(user: str, resource: str, **context: Any) -> Request:
    return Request(
        principal=EntityUID(type="User", id=user),
        action=EntityUID(type="Action", id="read"),
        resource=EntityUID(type="Data", id=resource),
        context=context,
    )


ALLOWED = request("heidi", "public-website")  # allowed by the default bundle
DENIED = request("heidi", "employee-directory")  # denied by it: no permit
LATE = request("heidi", "public-website", time={"hour": 9, "weekday": "mon"})


@pytest.fixture
def live(decision_service: DecisionService) -> DecisionService:
    return decision_service  # tests/engine/conftest.py


def shadowing(service: DecisionService, path: Path) -> Shadow:
    shadow = Shadow(load_candidate(path, public_key=None, now=NOW), path, metrics=service.metrics)
    service.shadow = shadow
    return shadow


def counted(service: DecisionService, outcome: str) -> float:
    value = service.metrics.registry.get_sample_value(
        "docket_shadow_decisions_total", {"outcome": outcome}
    )
    return value or 0.0


def stored(service: DecisionService, index: int) -> dict[str, Any]:
    row = service.audit.store.entry(index)
    assert row is not None
    assert row.payload is not None
    entry: dict[str, Any] = json.loads(row.payload)
    return entry


def test_flips_are_counted_and_annotated_and_the_live_answer_stands(
    live: DecisionService, tmp_path: Path
) -> None:
    shadow = shadowing(live, candidate(tmp_path, FORBID_HEIDI, PERMIT_DIRECTORY))
    decided = live.authorize([ALLOWED, DENIED, request("alice", "public-website")], api="authorize")
    assert [d.decision.decision for d in decided] == ["allow", "deny", "allow"]
    flipped, unflipped, agreed = (stored(live, d.receipt.index) for d in decided)
    assert flipped["decision"] == "allow"
    assert flipped["detail"]["shadow"] == {
        "bundle": shadow.bundle.version,
        "revision": None,
        "outcome": "flip_allow_to_deny",
        "decision": "deny",
        "policies": ["candidate-forbids-heidi-website"],
    }
    assert unflipped["detail"]["shadow"]["outcome"] == "flip_deny_to_allow"
    assert unflipped["detail"]["shadow"]["policies"] == ["candidate-permits-heidi-directory"]
    assert "shadow" not in agreed["detail"]  # agreement: the entry stays small
    assert counted(live, "flip_allow_to_deny") == 1
    assert counted(live, "flip_deny_to_allow") == 1
    assert counted(live, "agree") == 1
    assert counted(live, "error") == 0


def test_an_identical_candidate_agrees_and_annotates_nothing(
    live: DecisionService, tmp_path: Path
) -> None:
    shadowing(live, candidate(tmp_path))
    decided = live.authorize([ALLOWED, DENIED], api="authorize")
    assert all("shadow" not in stored(live, d.receipt.index)["detail"] for d in decided)
    assert counted(live, "agree") == 2


def test_a_candidate_policy_that_errors_is_an_error_not_a_changed_answer(
    live: DecisionService, tmp_path: Path
) -> None:
    shadowing(live, candidate(tmp_path, OVERFLOW))
    (decided,) = live.authorize([LATE], api="authorize")
    assert decided.decision.decision == "allow"
    assert not decided.decision.errors
    note = stored(live, decided.receipt.index)["detail"]["shadow"]
    assert note["outcome"] == "error"
    assert note["decision"] == "deny"
    assert note["errors"][0]["policy"] == "candidate-overflows-on-late-hours"
    assert counted(live, "error") == 1


def test_a_candidate_that_raises_never_touches_the_answer(
    live: DecisionService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shadow = shadowing(live, candidate(tmp_path))

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("candidate on fire")

    monkeypatch.setattr(shadow.engine, "decide_batch", broken)
    decided = live.authorize([ALLOWED, DENIED], api="authorize")
    assert [d.decision.decision for d in decided] == ["allow", "deny"]
    notes = [stored(live, d.receipt.index)["detail"]["shadow"] for d in decided]
    assert [n["outcome"] for n in notes] == ["error", "error"]
    assert notes[0]["decision"] is None
    assert "candidate on fire" in notes[0]["errors"][0]["message"]
    assert counted(live, "error") == 2


def test_annotated_entries_verify(live: DecisionService, tmp_path: Path) -> None:
    shadowing(live, candidate(tmp_path, FORBID_HEIDI))
    live.authorize([ALLOWED, DENIED], api="authorize")
    assert verify_store(live.audit.store, live.audit.verifiers()).log.size >= 2


def test_a_candidate_whose_policy_tests_fail_is_refused(tmp_path: Path) -> None:
    forbid_alice = '@id("no-alice")\nforbid (principal == Docket::User::"alice", action, resource);'
    path = candidate(tmp_path, forbid_alice, tests=True)
    with pytest.raises(BundleError, match=r"tests/.*\.yaml:\d+: policy test .* fails"):
        load_candidate(path, public_key=None, now=NOW)


def test_a_candidate_that_does_not_parse_is_refused(tmp_path: Path) -> None:
    path = candidate(tmp_path, "permit (principal, action, resource")
    with pytest.raises(BundleError, match=r"access\.cedar"):
        load_candidate(path, public_key=None, now=NOW)


def test_on_reload_a_bad_candidate_is_refused_and_the_last_good_one_stays(
    live: DecisionService, tmp_path: Path
) -> None:
    path = candidate(tmp_path, FORBID_HEIDI)
    shadow = shadowing(live, path)
    good = shadow.bundle.version
    (path / "access.cedar").write_text((path / "access.cedar").read_text() + "permit (")
    with pytest.raises(BundleError):
        shadow.reload()
    assert shadow.bundle.version == good
    (path / "access.cedar").write_text((path / "access.cedar").read_text()[: -len("permit (")])
    (path / "guards.cedar").write_text((path / "guards.cedar").read_text() + PERMIT_DIRECTORY)
    assert shadow.reload().changed
    (decided,) = live.authorize([DENIED], api="authorize")
    assert stored(live, decided.receipt.index)["detail"]["shadow"]["bundle"] != good
