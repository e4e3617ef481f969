"""Traces of the calls Docket serves (OpenTelemetry over OTLP), off unless the
``otel_endpoint`` setting names a collector.

**Off** (the default): OpenTelemetry is not even imported, no span is made and no trace
context is read. Each hook below tests one module global and hands back a shared no-op.

**On** (:func:`start`, once per serving process): each Authorize, BatchAuthorize, Check,
Challenge, Attest and admission review is a SERVER span, the child of the caller's W3C
trace context (``traceparent`` and ``tracestate``: gRPC metadata, the webhook's HTTP
headers, or for an Envoy Check the headers of the HTTP request it is about, Envoy's own
metadata winning). Under it, ``docket.evaluate`` (the engine deciding) and
``docket.audit.commit`` (the wait until the audit entries are durable). The server span
says what was decided: ``docket.decision_id`` (the id of the response and of the audit
entry), ``docket.decision``, ``docket.bundle_version`` and ``docket.api``; a batch says
``docket.decision_ids`` and ``docket.decisions``, one per request, in order. Spans leave
in batches from a thread of the SDK's (``BatchSpanProcessor``); the sampler keeps
``ratio`` of the traces that start here and follows the caller's sampled flag for the
rest (parent-based).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:  # imported by start(), never while tracing is off
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span

OtlpProtocol = Literal["grpc", "http"]
STOP_SECONDS = 2.0
"""How long a stopping process waits for its last spans to leave."""
EVALUATE = "docket.evaluate"
AUDIT_COMMIT = "docket.audit.commit"
Headers = Callable[[], Iterable[tuple[str | bytes, str | bytes]] | None]
"""The headers (or gRPC metadata) a call came with, read only when tracing is on."""
_CARRIED = frozenset({"traceparent", "tracestate"})
_OFF: AbstractContextManager[None] = nullcontext()


@dataclass(frozen=True, slots=True)
class Call:
    """A kind of served call: its spans' name and the attributes they all carry."""

    name: str
    attributes: Mapping[str, str]

    @classmethod
    def grpc(cls, service: str, method: str) -> Call:
        """An RPC (``docket.v1.Decisions/Authorize``), named as OpenTelemetry's RPC
        conventions name it."""
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
        return cls(f"{service}/{method}", attributes)

    @classmethod
    def http(cls, method: str, route: str) -> Call:
        """An HTTP request (``POST /validate``)."""
        return cls(f"{method} {route}", {"http.request.method": method, "http.route": route})


class _Verdict(Protocol):
    @property
    def decision(self) -> str: ...
    @property
    def bundle_version(self) -> str | None: ...


class Named(Protocol):
    """A decision and its id (:class:`engine._service.decisions.Decided`)."""

    @property
    def decision_id(self) -> str: ...
    @property
    def decision(self) -> _Verdict: ...


class _Tracing:
    """What serves the hooks while tracing is on."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self.tracer = provider.get_tracer("docket")
        self.propagator = TraceContextTextMapPropagator()
        self.current = trace.get_current_span
        self.server = trace.SpanKind.SERVER
        self.error = trace.StatusCode.ERROR


_on: _Tracing | None = None


def enabled() -> bool:
    """Whether this process traces (:func:`start` ran, :func:`stop` did not)."""
    return _on is not None


def otlp_exporter(endpoint: str, protocol: OtlpProtocol) -> SpanExporter:
    """An OTLP span exporter to ``endpoint``: gRPC (``http://host:4317`` in plaintext,
    ``https://`` with TLS), or HTTP/protobuf (``http://host:4318``; ``/v1/traces`` is
    added to a URL without a path)."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as OTLPHttpSpanExporter,
    )

    if urlsplit(endpoint).path in ("", "/"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    return OTLPHttpSpanExporter(endpoint=endpoint)


def start(
    exporter: SpanExporter, *, service_name: str, ratio: float = 1.0, batch: bool = True
) -> None:
    """Trace this process's calls into ``exporter`` (``batch``: from the SDK's export
    thread; else as each span ends, for tests), as ``service_name``, keeping ``ratio``
    of the traces that start here."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    global _on
    stop()
    provider = TracerProvider(
        # Each worker process exports on its own: its pid tells them apart.
        resource=Resource.create({"service.name": service_name, "process.pid": os.getpid()}),
        sampler=ParentBased(TraceIdRatioBased(ratio)),
    )
    provider.add_span_processor(
        BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    )
    _on = _Tracing(provider)


def stop(timeout: float = STOP_SECONDS) -> None:
    """Trace no more, and send the spans not yet sent, for at most ``timeout`` seconds: a
    collector that is down (the exporter retries for up to 10 s) must not hold a server
    that is stopping. What is not sent by then is lost."""
    global _on
    on, _on = _on, None
    if on is not None:
        closing = threading.Thread(
            target=on.provider.shutdown, name="docket-tracing-stop", daemon=True
        )
        closing.start()
        closing.join(timeout)


def server_span(
    call: Call, headers: Headers, status: Callable[[], Any] | None = None
) -> AbstractContextManager[Span | None]:
    """The span of one served call (None while tracing is off), a child of the trace
    context in ``headers``. On its end, ``status()`` (a gRPC context's ``code``) gives
    the call's status code; an exception that leaves it marks it failed."""
    on = _on
    if on is None:
        return _OFF
    return _served(on, call, headers, status)


@contextmanager
def _served(
    on: _Tracing, call: Call, headers: Headers, status: Callable[[], Any] | None
) -> Iterator[Span]:
    carrier: dict[str, str] = {}
    for key, value in headers() or ():
        name = key.decode("latin-1") if isinstance(key, bytes) else key
        if name.lower() in _CARRIED:
            carrier[name.lower()] = value.decode("latin-1") if isinstance(value, bytes) else value
    parent = on.propagator.extract(carrier) if carrier else None
    with on.tracer.start_as_current_span(
        call.name,
        context=parent,
        kind=on.server,
        attributes=call.attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        failed: BaseException | None = None
        try:
            yield span
        except BaseException as exc:
            failed = exc
            raise
        finally:
            code = None if status is None else status()
            if status is not None:  # a grpc.StatusCode, whose value is (number, name); None: OK
                span.set_attribute("rpc.grpc.status_code", 0 if code is None else code.value[0])
            if failed is not None:
                span.set_status(on.error, type(failed).__name__ if code is None else code.name)


def child_span(name: str) -> AbstractContextManager[Span | None]:
    """A step of a traced call (:data:`EVALUATE`, :data:`AUDIT_COMMIT`), or a no-op
    (None) when tracing is off or nothing traced is being served."""
    on = _on
    if on is None or not on.current().is_recording():
        return _OFF
    return on.tracer.start_as_current_span(name, record_exception=False)


def decisions(api: str, decided: Sequence[Named]) -> None:
    """Say on the span being served what was decided (see the module docstring)."""
    on = _on
    if on is None:
        return
    span = on.current()
    if not span.is_recording() or not decided:
        return
    span.set_attribute("docket.api", api)
    version = decided[0].decision.bundle_version
    if version is not None:
        span.set_attribute("docket.bundle_version", version)
    if len(decided) == 1:
        span.set_attribute("docket.decision_id", decided[0].decision_id)
        span.set_attribute("docket.decision", decided[0].decision.decision)
    else:
        span.set_attribute("docket.decision_ids", [item.decision_id for item in decided])
        span.set_attribute("docket.decisions", [item.decision.decision for item in decided])


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the span being served, for log lines; None when
    tracing is off or no call is traced."""
    on = _on
    if on is None:
        return None
    context = on.current().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def annotate(span: Span | None, **attributes: str | int) -> None:
    """Set ``attributes`` on ``span`` (nothing when tracing is off: ``span`` is None)."""
    if span is not None:
        span.set_attributes(attributes)
