"""The default bundle in policies/ is valid, tested, and documented."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine import Engine, PolicyBundle, Request
from engine._core.policy_tests import load_cases, run_cases, uncovered_policies

POLICIES = Path(__file__).resolve().parents[1] / "policies"


@pytest.fixture(scope="module")
def bundle() -> PolicyBundle:
    return PolicyBundle.load(POLICIES)


def test_every_case_passes(bundle: PolicyBundle) -> None:
    cases = load_cases(bundle.files)
    assert len(cases) >= 40
    results = run_cases(bundle, cases, now=datetime.now(UTC))
    failures = [f"{r.loaded.case.name}: {r.failures}" for r in results if not r.passed]
    assert failures == []
    assert uncovered_policies(bundle, results) == []


def test_every_policy_has_an_id_and_a_comment(bundle: PolicyBundle) -> None:
    for policy in bundle.policies:
        lines = (POLICIES / policy.file).read_text().splitlines()
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", policy.id), policy.where
        assert lines[policy.line - 1].startswith(f'@id("{policy.id}")'), policy.where
        assert lines[policy.line - 2].startswith("// "), f"{policy.where}: no comment above"


def test_catalog_spans_tiers_and_jurisdictions(bundle: PolicyBundle) -> None:
    assert {s.tier for s in bundle.sites} == {"edge", "cloud", "onprem"}
    assert {s.jurisdiction for s in bundle.sites} == {"eu", "uk", "us", "apac"}
    for site in bundle.sites:
        assert set(site.latency_ms) == {"eu", "uk", "us", "apac"}, site.name


def test_default_bundle_fails_closed_on_forbid_errors(bundle: PolicyBundle) -> None:
    assert bundle.forbid_errors == "deny"


BILLING = "spiffe://docket.example/ns/finance/sa/billing-api"


def read_forecast(principal_type: str) -> Request:
    return Request.model_validate(
        {
            "principal": {"type": principal_type, "id": BILLING},
            "action": {"type": "Action", "id": "read"},
            "resource": {"type": "Data", "id": "quarterly-forecast"},
            "context": {
                "jurisdiction": "uk",
                "device": {
                    "attested": True,
                    "secure_boot": True,
                    "managed": True,
                    "disk_encrypted": True,
                    "patch_age_days": 1,
                    "trust_tier": "high",
                },
            },
        }
    )


def test_user_named_by_a_workload_spiffe_id_stays_a_user(bundle: PolicyBundle) -> None:
    """The stored billing-api Workload has this SPIFFE ID; a User of that id is a user
    all the same, so the MFA rule for users denies it."""
    engine = Engine(bundle)
    now = datetime.now(UTC)
    as_user = engine.decide(read_forecast("User"), now=now)
    assert as_user.decision == "deny"
    assert "confidential-requires-mfa" in as_user.reasons
    as_workload = engine.decide(read_forecast("Workload"), now=now)
    assert (as_workload.decision, as_workload.reasons, as_workload.errors) == (
        "allow",
        ("workloads-access-own-namespace",),
        (),
    )
