"""The service's metrics as a scrape shows them."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from engine._service.metrics import Metrics


def samples(metrics: Metrics, name: str) -> dict[str, float]:
    text = generate_latest(metrics.registry).decode()
    return {
        sample.labels.get("le", sample.name): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith(name)
    }


def test_entries_per_commit_is_a_histogram() -> None:
    metrics = Metrics()
    for entries in (1, 3, 40):
        metrics.committed(entries)
    found = samples(metrics, "docket_audit_entries_per_commit")
    assert found["docket_audit_entries_per_commit_count"] == 3
    assert found["docket_audit_entries_per_commit_sum"] == 44
    assert found["1.0"] == 1
    assert found["4.0"] == 2
    assert found["32.0"] == 2
    assert found["64.0"] == 3


def test_a_pulled_bundles_age_and_staleness_are_gauges() -> None:
    metrics = Metrics()
    metrics.bundle_freshness(12.5, False)
    assert samples(metrics, "docket_bundle_") == {
        "docket_bundle_age_seconds": 12.5,
        "docket_bundle_stale": 0.0,
    }
    metrics.bundle_freshness(None, True)
    assert samples(metrics, "docket_bundle_age_seconds") == {"docket_bundle_age_seconds": -1.0}
    assert samples(metrics, "docket_bundle_stale") == {"docket_bundle_stale": 1.0}
