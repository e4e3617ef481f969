"""Fixtures for the engine tests: an in-process Docket server on the default bundle, and
traces kept in memory (the OpenTelemetry SDK's exporter)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from serving import Running

from audit import AuditLog
from engine import BundleWatcher, Engine, PolicyBundle
from engine._runtime.settings import Settings
from engine._service import tracing
from engine._service.decisions import DecisionService
from engine._service.metrics import Metrics
from sdk.v1 import decisions_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[2]
SERVICE_NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
"""The clock of :func:`decision_service`."""


@pytest.fixture
def decision_service(tmp_path: Path) -> Iterator[DecisionService]:
    """A decision service on the default bundle, its audit log a SQLite file in
    ``tmp_path``, its clock stopped at :data:`SERVICE_NOW`."""
    engine = Engine(PolicyBundle.load(ROOT / "policies"))
    log = AuditLog.open(f"sqlite:///{tmp_path / 'docket.db'}", keys=tmp_path / "keys").start()
    service = DecisionService(
        engine, BundleWatcher(engine, ROOT / "policies"), Metrics(), log, clock=lambda: SERVICE_NOW
    )
    try:
        yield service
    finally:
        service.audit.close()


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", target)
    return target


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One server on the default bundle for the tests that do not change it."""
    root = tmp_path_factory.mktemp("server")
    settings = Settings(bundle=ROOT / "policies", data_dir=root / "data", bundle_poll_seconds=60)
    running = Running(settings)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def stub(server: Running) -> Iterator[pb_grpc.DecisionsStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield pb_grpc.DecisionsStub(channel)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the test (in this process), every span kept in memory as it ends."""
    exporter = InMemorySpanExporter()
    tracing.start(exporter, service_name="docket-test", batch=False)
    try:
        yield exporter
    finally:
        tracing.stop()
