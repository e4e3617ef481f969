"""Fixtures for the service tests: traces kept in memory (the SDK's exporter)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from engine._service import tracing


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the test, every span kept in memory as it ends."""
    exporter = InMemorySpanExporter()
    tracing.start(exporter, service_name="docket-test", batch=False)
    try:
        yield exporter
    finally:
        tracing.stop()
