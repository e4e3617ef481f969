"""``docket.v1.Decisions`` over gRPC: Authorize, BatchAuthorize, Place, ReloadBundle.

Authorize and BatchAuthorize are coroutines on the server's event loop: they evaluate
there and await their audit entries' commit, so hundreds of them share one commit.
Place and ReloadBundle (rare, and ReloadBundle reads the disk) run on the server's
thread pool."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc

from engine._adapters.grpc_status import Context, answer, answer_async, caller_identity
from engine._adapters.request_memo import Attached, Parsed, RequestMemo
from engine._adapters.wire import (
    batch_from_proto,
    decision_to_proto,
    placement_to_proto,
    request_from_proto,
    workload_from_proto,
)
from engine._core.models import Request
from engine._errors import RequestError
from engine._service import tracing
from engine._service.constants import DEVICE
from engine._service.decisions import Decided, DecisionService
from engine._service.posture import NO_POSTURE, PostureReader, attach, provenance
from sdk.v1 import decisions_pb2 as pb
from sdk.v1 import decisions_pb2_grpc as pb_grpc

_SERVICE = pb.DESCRIPTOR.services_by_name["Decisions"].full_name
AUTHORIZE = tracing.Call.grpc(_SERVICE, "Authorize")
BATCH_AUTHORIZE = tracing.Call.grpc(_SERVICE, "BatchAuthorize")


class DecisionsServicer(pb_grpc.DecisionsServicer):
    """Authorize, BatchAuthorize, Place and ReloadBundle on a :class:`DecisionService`."""

    def __init__(
        self,
        service: DecisionService,
        on_reload: Callable[[], None] | None = None,
        posture: PostureReader | None = None,
    ) -> None:
        self._service = service
        self._on_reload = on_reload
        self._posture = posture
        self._parsed = RequestMemo()

    def _with_posture(
        self,
        requests: list[Request],
        messages: Sequence[pb.AuthorizeRequest],
        context: Context,
        caller: str | None,
        parsed: Parsed | None = None,
    ) -> tuple[list[Request], list[dict[str, Any]]]:
        """Requests with the attested posture of their device token, else of the peer's
        X.509-SVID (see :mod:`engine._service.posture`), and each one's provenance for its audit
        entry. Raises :class:`~engine.RequestError` when a device token does not verify.
        With ``parsed`` (one request, remembered by its message), what was attached to it
        under the same verified posture is reused."""
        reader = self._posture
        if reader is None and any(message.device_token for message in messages):
            raise RequestError("device_token: this server has no CA to verify it with")
        now = self._service.clock()
        peer = None if reader is None else reader.from_peer(context, now)
        attached: list[Request] = []
        provenances: list[dict[str, Any]] = []
        # A batch's requests that share a context object (wire.batch_from_proto) and a
        # device token share the posture read at this ``now``, the attached context and
        # the provenance: each is made once, and the entries encode them once.
        made: dict[tuple[int, str], tuple[dict[str, Any], dict[str, Any]]] = {}
        for request, message in zip(requests, messages, strict=True):
            token = message.device_token
            key = (id(request.context), token)
            known = made.get(key)
            if known is None:
                proven = reader.from_token(token, now) if reader is not None and token else peer
                again = None if parsed is None else parsed.with_posture(proven)
                if again is None:
                    again = Attached(
                        proven, attach(request, proven), provenance(request, proven, caller=caller)
                    )
                    if parsed is not None:
                        parsed.attached = again
                known = made[key] = (again.request.context, again.provenance)
                attached.append(again.request)
            elif known[0] is request.context:
                attached.append(request)
            else:
                attached.append(request.model_copy(update={"context": known[0]}))
            provenances.append(known[1])
        return attached, provenances

    async def _authorized(
        self,
        parse: Callable[[str | None], list[Request]],
        messages: Sequence[pb.AuthorizeRequest],
        context: grpc.aio.ServicerContext[Any, Any],
        api: str,
    ) -> list[Decided]:
        """The decisions on what ``parse`` reads from ``messages`` for the caller, with
        their posture, once their entries are durable."""
        caller = caller_identity(context)
        requests, provenances = self._with_posture(parse(caller), messages, context, caller)
        return await self._service.authorize_async(requests, api=api, provenance=provenances)

    def _one(
        self, message: pb.AuthorizeRequest, context: Context, caller: str | None
    ) -> tuple[list[Request], list[dict[str, Any]]]:
        """One Authorize message's request with its posture, as :meth:`_with_posture`
        makes it; read from the message once while it is remembered (see
        :mod:`engine._adapters.request_memo`)."""
        key = self._parsed.key(caller, message.SerializeToString())
        parsed = None if key is None else self._parsed.get(key)
        if parsed is None:
            parsed = Parsed(request_from_proto(message, caller=caller))
            if key is not None:
                self._parsed.put(key, parsed)
        return self._with_posture([parsed.request], [message], context, caller, parsed)

    async def Authorize(
        self, request: pb.AuthorizeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AuthorizeResponse:
        async def produce() -> pb.AuthorizeResponse:
            requests, provenances = self._one(request, context, caller_identity(context))
            (decided,) = await self._service.authorize_async(
                requests, api="authorize", provenance=provenances
            )
            return decision_to_proto(decided.decision, decided.decision_id, decided.receipt)

        with tracing.server_span(AUTHORIZE, context.invocation_metadata, context.code):
            return await answer_async(self._service, "authorize", context, produce)

    async def BatchAuthorize(
        self, request: pb.BatchAuthorizeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.BatchAuthorizeResponse:
        async def produce() -> pb.BatchAuthorizeResponse:
            decided = await self._authorized(
                lambda caller: batch_from_proto(request, caller=caller),
                request.requests,
                context,
                "batch_authorize",
            )
            return pb.BatchAuthorizeResponse(
                results=[decision_to_proto(d.decision, d.decision_id, d.receipt) for d in decided]
            )

        with tracing.server_span(BATCH_AUTHORIZE, context.invocation_metadata, context.code):
            return await answer_async(self._service, "batch_authorize", context, produce)

    def Place(
        self, request: pb.PlacementRequest, context: grpc.ServicerContext
    ) -> pb.PlacementResponse:
        def produce() -> pb.PlacementResponse:
            caller = caller_identity(context)
            workload, sites = workload_from_proto(request, caller=caller)
            # A placement takes no device credential: its posture is never attested.
            found = {
                "caller": caller,
                "posture": NO_POSTURE,
                "pep": None,
                "subject": "request",
                "inventory": "caller" if DEVICE in workload.context else "none",
            }
            placed = self._service.place(workload, sites, detail={"provenance": found})
            return placement_to_proto(placed.placement, placed.decision_id, placed.receipt)

        return answer(self._service, "place", context, produce)

    def ReloadBundle(
        self, request: pb.ReloadBundleRequest, context: grpc.ServicerContext
    ) -> pb.ReloadBundleResponse:
        def produce() -> pb.ReloadBundleResponse:
            result = self._service.reload(caller_identity(context))
            if result.changed and self._on_reload is not None:
                self._on_reload()
            return pb.ReloadBundleResponse(
                bundle_version=result.version,
                changed=result.changed,
                previous_version=result.previous or "",
            )

        return answer(self._service, "reload_bundle", context, produce)
