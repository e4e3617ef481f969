"""structlog, configured once per process: console for humans, JSON for machines.

Every line carries what the call it belongs to bound in its context (structlog's
context variables: the ``decision_id`` of a decision, see
:mod:`engine._service.decisions`) and, while the call is traced, its ``trace_id`` and
``span_id`` (:mod:`engine._service.tracing`)."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog
from structlog.typing import EventDict, WrappedLogger

from engine._service.tracing import current_ids

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR


def _trace_ids(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    """A line logged while a call is traced names its trace and span (OpenTelemetry's
    ids, in hex), so that the line and the span find each other."""
    ids = current_ids()
    if ids is not None:
        event.setdefault("trace_id", ids[0])
        event.setdefault("span_id", ids[1])
    return event


def _route_stdlib(name: str, renderer: structlog.types.Processor) -> None:
    """Warnings and errors of the stdlib logger ``name`` (a library's), rendered as
    Docket's own lines are."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.setLevel(logging.WARNING)
    logger.propagate = False


def configure_logging(
    log_format: Literal["console", "json"] = "console",
    level: Literal["debug", "info", "warning", "error"] = "info",
) -> None:
    """Send structured logs to stderr, as console lines or JSON objects."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    _route_stdlib("opentelemetry", renderer)  # the SDK's export errors
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _trace_ids,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
