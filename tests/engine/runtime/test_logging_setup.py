"""``engine/_runtime/logging_setup.py``: one format for every line a process logs."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from engine._runtime.logging_setup import configure_logging


def test_the_tracing_sdks_errors_are_lines_like_dockets(capsys: pytest.CaptureFixture[str]) -> None:
    """An export that failed (the collector is down) is a JSON line on stderr, as every
    other line of ``docket serve --log-format json``."""
    configure_logging("json", "info")  # here: stderr is the test's captured one by now
    try:
        logging.getLogger("opentelemetry.exporter.otlp").warning("Failed to export to %s", "x")
    finally:
        structlog.reset_defaults()
        routed = logging.getLogger("opentelemetry")
        routed.handlers, routed.propagate = [], True  # its stream was this test's
    line = json.loads(capsys.readouterr().err)
    assert line["event"] == "Failed to export to x"
    assert line["level"] == "warning"
    assert line["logger"] == "opentelemetry.exporter.otlp"
    assert "timestamp" in line
