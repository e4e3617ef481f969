"""``docket.v1.Decisions`` over gRPC: Authorize, BatchAuthorize, Place, ReloadBundle.

Authorize and BatchAuthorize are coroutines on the server's event loop: they evaluate
there and await their audit entries' commit, so hundreds of them share one commit.
Place and ReloadBundle (rare, and ReloadBundle reads the disk) run on the server's
thread pool."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc

from engine._adapters.grpc_status import answer, answer_async, caller_identity, caller_of
from engine._adapters.request_memo import Attached, Parsed, PostureKey, RequestMemo
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
from engine._service.posture import NO_POSTURE, PostureReader, Proven, attach, provenance
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
        memo: RequestMemo | None = None,
    ) -> None:
        self._service = service
        self._on_reload = on_reload
        self._posture = posture
        self._memo = memo if memo is not None else RequestMemo()

    def _with_posture(
        self,
        requests: list[Request],
        messages: Sequence[pb.AuthorizeRequest],
        auth: Mapping[str, Any],
        caller: str | None,
        parsed: Parsed | None = None,
    ) -> tuple[list[Request], list[dict[str, Any]]]:
        """Requests with the attested posture of their device token, else of the peer's
        X.509-SVID (see :mod:`engine._service.posture`; ``auth``: the call's
        ``auth_context()``), and each one's provenance for its audit entry. Raises
        :class:`~engine.RequestError` when a device token does not verify. With ``parsed``
        (the requests remembered with their message), what was attached to them is
        reused when every posture read now is the same verified object."""
        reader = self._posture
        if reader is None and any(message.device_token for message in messages):
            raise RequestError("device_token: this server has no CA to verify it with")
        now = self._service.clock()
        peer = None if reader is None else reader.from_auth(auth, now)
        # A batch's requests that share a context object (wire.batch_from_proto) and a
        # device token share the posture read at this ``now``, the attached context and
        # the provenance: each is made once, and the entries encode them once.
        postures: dict[PostureKey, Proven | None] = {}
        for request, message in zip(requests, messages, strict=True):
            key = (id(request.context), message.device_token)
            if key not in postures:
                token = key[1]
                postures[key] = (
                    reader.from_token(token, now) if reader is not None and token else peer
                )
        again = None if parsed is None else parsed.with_postures(postures)
        if again is None:
            again = _attached(requests, messages, postures, caller)
            if parsed is not None:
                parsed.attached = again
        return list(again.requests), list(again.provenances)

    def _parsed(
        self,
        message: pb.AuthorizeRequest | pb.BatchAuthorizeRequest,
        caller: str | None,
        parse: Callable[[], list[Request]],
    ) -> Parsed:
        """What ``parse`` reads from ``message``, read once while the message is
        remembered (see :mod:`engine._adapters.request_memo`)."""
        key = self._memo.key(message.DESCRIPTOR.name, caller, message.SerializeToString())
        parsed = None if key is None else self._memo.get(key)
        if parsed is None:
            parsed = Parsed(parse())
            if key is not None:
                self._memo.put(key, parsed)
        return parsed

    async def _authorized(
        self,
        message: pb.AuthorizeRequest | pb.BatchAuthorizeRequest,
        parse: Callable[[str | None], list[Request]],
        messages: Sequence[pb.AuthorizeRequest],
        context: grpc.aio.ServicerContext[Any, Any],
        api: str,
    ) -> list[Decided]:
        """The decisions on what ``parse`` reads from ``message`` (its requests:
        ``messages``) for the caller, with their posture, once their entries are
        durable."""
        auth = context.auth_context()
        caller = caller_of(auth)
        parsed = self._parsed(message, caller, lambda: parse(caller))
        requests, provenances = self._with_posture(parsed.requests, messages, auth, caller, parsed)
        return await self._service.authorize_async(requests, api=api, provenance=provenances)

    async def Authorize(
        self, request: pb.AuthorizeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AuthorizeResponse:
        async def produce() -> pb.AuthorizeResponse:
            (decided,) = await self._authorized(
                request,
                lambda caller: [request_from_proto(request, caller=caller)],
                [request],
                context,
                "authorize",
            )
            return decision_to_proto(decided.decision, decided.decision_id, decided.receipt)

        with tracing.server_span(AUTHORIZE, context.invocation_metadata, context.code):
            return await answer_async(self._service, "authorize", context, produce)

    async def BatchAuthorize(
        self, request: pb.BatchAuthorizeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.BatchAuthorizeResponse:
        async def produce() -> pb.BatchAuthorizeResponse:
            decided = await self._authorized(
                request,
                lambda caller: batch_from_proto(request, caller=caller),
                request.requests,
                context,
                "batch_authorize",
            )
            response = pb.BatchAuthorizeResponse()
            add = response.results.add
            for d in decided:
                decision_to_proto(d.decision, d.decision_id, d.receipt, add())
            return response

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


def _attached(
    requests: list[Request],
    messages: Sequence[pb.AuthorizeRequest],
    postures: dict[PostureKey, Proven | None],
    caller: str | None,
) -> Attached:
    """``requests`` with ``postures`` attached (each shared context once) and each one's
    provenance."""
    attached: list[Request] = []
    provenances: list[dict[str, Any]] = []
    made: dict[PostureKey, tuple[dict[str, Any], dict[str, Any]]] = {}
    for request, message in zip(requests, messages, strict=True):
        key = (id(request.context), message.device_token)
        known = made.get(key)
        if known is None:
            proven = postures[key]
            with_posture = attach(request, proven)
            known = made[key] = (with_posture.context, provenance(request, proven, caller=caller))
            attached.append(with_posture)
        elif known[0] is request.context:
            attached.append(request)
        else:
            attached.append(request.model_copy(update={"context": known[0]}))
        provenances.append(known[1])
    return Attached(postures, attached, provenances)
