"""The OpenID AuthZEN Authorization API 1.0 over HTTP, on the listener of ``/metrics``:
``POST /access/v1/evaluation``, ``POST /access/v1/evaluations`` and
``GET /.well-known/authzen-configuration``, an ASGI app (:class:`AuthzenApp`) served
by uvicorn (:class:`~engine._adapters.admission_http.HttpServer`) in every serving
process. Other paths go to the app it wraps (metrics and the CA's key documents).

Each evaluation is decided and recorded as an Authorize is
(:meth:`~engine._service.decisions.DecisionService.authorize_async`, api ``"authzen"``),
on the listener's own event loop, so an AuthZEN call never holds the gRPC loop; the
answer goes back once its audit entry is durable. ``decision`` is true only for an
explicit allow; a deny is a 200. The decision ids are in the ``X-Docket-Decision-Id``
response header (comma-separated for evaluations, in order); ``X-Request-ID`` is echoed
and recorded in each entry's ``detail.request_id``.

Errors, as the specification's HTTPS binding has them (status and a message string):
a body that is not a JSON object, not ``application/json``, or over :data:`MAX_BODY`
is a 400; a request over a size limit (evaluations, context, entities) and one that
does not map (:mod:`engine._adapters.authzen`: the message
names the field) is a 400 *and* an audited denial; in an Access Evaluations request
such an evaluation is instead denied in its place (``"decision": false`` with
``context.error``) and the others are decided. When the audit log cannot record, or
anything else fails, the answer is a 500 with the reason, never a decision.

``POST /access/v1/search/subject``, ``…/resource`` and ``…/action`` (:meth:`AuthzenApp._search`)
answer one page of a search (:mod:`engine._adapters.authzen_search`): candidates decided
in batches as evaluations are (:meth:`~engine._service.decisions.DecisionService.judge_async`),
recorded as one audit entry per call (api ``"authzen-search"``), a query or page token
that does not open a 400 and a refusal.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import structlog

from audit import AuditError, read_asgi_body
from engine._adapters.admission_http import Receive, Scope, Send
from engine._adapters.authzen import Catalog, Semantic, evaluations, to_request
from engine._adapters.authzen_search import (
    MAX_EVALUATED,
    SEARCHED,
    PageTokens,
    Query,
    Searched,
    candidates,
    read_query,
)
from engine._adapters.grpc_status import AUDIT_UNAVAILABLE
from engine._core.bundle import PolicyBundle
from engine._core.models import EntityUID, Request
from engine._errors import LimitExceeded, RequestError
from engine._service.audit_entries import search_entry
from engine._service.constants import MAX_BATCH
from engine._service.decisions import Decided, DecisionService, decision_id
from engine._service.metrics import Asgi
from engine._service.posture import attach, provenance

log = structlog.get_logger("docket.authzen")

METADATA_PATH = "/.well-known/authzen-configuration"
EVALUATION_PATH = "/access/v1/evaluation"
EVALUATIONS_PATH = "/access/v1/evaluations"
MAX_BODY = 4 * 1024 * 1024
"""Bytes of one request body, as a gRPC message."""
MAX_REQUEST_ID = 256
"""Characters of an ``X-Request-ID`` recorded in the audit log (a longer one is cut)."""
SEARCH_PATHS: dict[str, Searched] = {f"/access/v1/search/{part}": part for part in SEARCHED}
API = "authzen"
SEARCH_API = "authzen-search"
DECISION_ID_HEADER = "x-docket-decision-id"
_INTERNAL = "internal error; the server log has the details"


class _Refused(Exception):
    """An HTTP error answer: status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class AuthzenApp:
    """AuthZEN's three paths on a :class:`DecisionService`; everything else to ``other``.
    ``base_url`` is the PDP identifier the metadata gives (default: the listener's scheme and the
    request's ``Host``)."""

    def __init__(
        self,
        service: DecisionService,
        other: Asgi,
        *,
        base_url: str | None,
        search_key: bytes | None = None,
    ) -> None:
        self.service = service
        # Page tokens: the data directory's key (every worker's), else this process's own.
        self.tokens = PageTokens(search_key if search_key is not None else os.urandom(32))
        self.other = other
        self.base_url = base_url.rstrip("/") if base_url else None
        self._catalog: tuple[PolicyBundle, Catalog] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        headers = {name.decode("latin-1"): value for name, value in scope["headers"]}
        if path == METADATA_PATH:
            if method != "GET":
                await _respond(send, 405, "GET only", allow="GET")
                return
            await _respond(send, 200, self._metadata(scope.get("scheme", "http"), headers))
            return
        if path not in (EVALUATION_PATH, EVALUATIONS_PATH) and path not in SEARCH_PATHS:
            if path.startswith("/access/"):
                await _respond(send, 404, f"no such path {path!r}", close=True)
                return
            await self.other(scope, receive, send)
            return
        request_id = headers.get("x-request-id", b"").decode("latin-1") or None
        if method != "POST":
            await _respond(send, 405, f"{path} takes POST", request_id, allow="POST", close=True)
            return
        metrics = self.service.metrics
        status, extra = 200, {}
        answer: dict[str, Any] | str
        with metrics.track(API):
            try:
                body = await _read_json(scope, headers, receive)
                answer, ids = await self._answer(path, body, request_id)
                extra = {DECISION_ID_HEADER: ",".join(ids)}
            except _Refused as refused:
                status, answer = refused.status, str(refused)
            except AuditError as exc:
                log.error("authzen.audit_unavailable", error=str(exc))
                status, answer = 500, AUDIT_UNAVAILABLE
            except Exception:  # nothing a client sends may take the server down
                log.exception("authzen.failed", path=path)
                status, answer = 500, _INTERNAL
            metrics.answered(API, str(status))
        await _respond(send, status, answer, request_id, close=status == 400, **extra)

    def _metadata(self, scheme: str, headers: Mapping[str, bytes]) -> dict[str, Any]:
        base = self.base_url
        if base is None:  # the listener's own scheme: https with http_tls
            base = f"{scheme}://{headers.get('host', b'localhost').decode('latin-1')}"
        return {
            "policy_decision_point": base,
            "access_evaluation_endpoint": base + EVALUATION_PATH,
            "access_evaluations_endpoint": base + EVALUATIONS_PATH,
            **{f"search_{part}_endpoint": base + path for path, part in SEARCH_PATHS.items()},
        }

    def catalog(self) -> Catalog | None:
        """The catalog of the bundle in force (read once per bundle)."""
        bundle = self.service.engine.bundle
        if bundle is None:
            return None
        cached = self._catalog
        if cached is None or cached[0] is not bundle:
            cached = self._catalog = (bundle, Catalog.of(bundle))
        return cached[1]

    async def _answer(
        self, path: str, body: dict[str, Any], request_id: str | None
    ) -> tuple[dict[str, Any], list[str]]:
        """The response body and the decision ids, in order. Raises :class:`_Refused`."""
        detail = {} if request_id is None else {"request_id": request_id[:MAX_REQUEST_ID]}
        if path in SEARCH_PATHS:
            return await self._search(SEARCH_PATHS[path], body, detail)
        try:
            items, semantic = (
                (None, "execute_all") if path == EVALUATION_PATH else evaluations(body)
            )
            if items is None:
                (decided,) = await self._decide([self._request(body, "")], detail)
                return {"decision": decided.decision.allowed}, [decided.decision_id]
            results, ids = await self._evaluate_all(items, semantic, detail)
            return {"evaluations": results}, ids
        except (RequestError, LimitExceeded) as exc:  # over a limit: the whole request
            refused = await self._refuse(str(exc), detail)
            raise _Refused(400, f"{exc} (decision {refused.decision_id})") from exc

    def _request(self, item: Mapping[str, Any], field: str) -> Request:
        catalog = self.catalog()
        if catalog is None:  # no bundle: the engine denies whatever it is asked
            catalog = Catalog(None, {}, None)
        return to_request(item, catalog, field)

    async def _decide(self, requests: list[Request], detail: Mapping[str, Any]) -> list[Decided]:
        # No device credential reaches this API: a device the caller describes is
        # unattested, as on any call without one.
        return await self.service.authorize_async(
            [attach(request, None) for request in requests],
            api=API,
            detail=detail or None,
            provenance=[provenance(request, None, caller=None) for request in requests],
        )

    async def _refuse(self, error: str, detail: Mapping[str, Any], api: str = API) -> Decided:
        return await self.service.refuse_async(error, api=api, caller=None, detail=detail or None)

    async def _search(
        self, searched: Searched, body: dict[str, Any], detail: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[str]]:
        """One page of a search and the id of its one audit entry. Raises
        :class:`_Refused` (400, recorded as a refusal) for a query that does not map or
        a page token that does not open."""
        try:
            query = read_query(searched, body)
            # The pinned parts map (and are refused) as an evaluation's would.
            base = attach(self._request(_placeholder(query), ""), None)
            bundle = self.service.engine.bundle
            catalog = self.catalog()
            pool: Sequence[str] = ()
            start = 0
            if bundle is not None and catalog is not None:
                if query.token is not None:
                    start = self.tokens.open(query, bundle.version)
                pool = candidates(query, catalog, bundle)
            found, evaluated, position = await self._page(base, searched, query.limit, pool, start)
        except (RequestError, LimitExceeded) as exc:
            refused = await self._refuse(str(exc), detail, SEARCH_API)
            raise _Refused(400, f"{exc} (decision {refused.decision_id})") from exc
        more = query.limit > 0 and position < len(pool)
        next_token = ""
        if more and bundle is not None:
            next_token = self.tokens.issue(query, bundle.version, position)
        now = self.service.clock()
        id_ = decision_id(now)
        uids = {
            "subject": None if searched == "subject" else base.principal,
            "action": None if searched == "action" else base.action,
            "resource": None if searched == "resource" else base.resource,
        }
        counts = {"results": len(found), "evaluated": evaluated, "more": more, "start": start}
        about = {"search": searched, "type": query.type, **counts}
        mine = {
            "decision_id": id_,
            "api": SEARCH_API,
            "provenance": provenance(base, None, caller=None),
        }
        entry = search_entry(
            uids, bundle, query.digest, now=now, detail={**detail, **mine, **about}
        )
        await self.service.record_async(entry)
        results: list[dict[str, Any]] = (
            [{"name": name} for name in found]
            if searched == "action"
            else [{"type": query.type, "id": id_found} for id_found in found]
        )
        return {"page": {"next_token": next_token, "count": len(found)}, "results": results}, [id_]

    async def _page(
        self, base: Request, searched: Searched, limit: int, pool: Sequence[str], start: int
    ) -> tuple[list[str], int, int]:
        """The candidates from ``start`` that are permitted, up to ``limit`` of them and
        :data:`MAX_EVALUATED` evaluated, in batches; how many were evaluated; where the
        next page starts."""
        found: list[str] = []
        evaluated, position = 0, start
        while position < len(pool) and len(found) < limit and evaluated < MAX_EVALUATED:
            size = min(MAX_BATCH, MAX_EVALUATED - evaluated, max(2 * (limit - len(found)), 16))
            chunk = pool[position : position + size]
            decisions = await self.service.judge_async(
                [_candidate(base, searched, value) for value in chunk]
            )
            evaluated += len(chunk)
            for offset, (value, decision) in enumerate(zip(chunk, decisions, strict=True)):
                if decision.allowed:
                    found.append(value)
                    if len(found) == limit:
                        position += offset + 1
                        break
            else:
                position += len(chunk)
        return found, evaluated, position

    async def _evaluate_all(
        self, items: list[dict[str, Any]], semantic: Semantic, detail: Mapping[str, Any]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Each item's result and decision id, in order: all of them (one batch; one by
        one if one of them cannot be decided), or up to the first deny or permit."""
        if semantic == "execute_all":
            outcomes = await self._batch(items, detail)
        else:
            outcomes = []
            for i, item in enumerate(items):
                outcome = (await self._batch([item], detail, first=i))[0]
                outcomes.append(outcome)
                allowed = outcome[0].get("decision") is True
                if (semantic == "deny_on_first_deny") != allowed:
                    if i + 1 < len(items) and not allowed and "context" not in outcome[0]:
                        outcome[0]["context"] = {"code": "200", "reason": semantic}
                    break
        return [result for result, _ in outcomes], [id_ for _, id_ in outcomes]

    async def _batch(
        self, items: list[dict[str, Any]], detail: Mapping[str, Any], *, first: int = 0
    ) -> list[tuple[dict[str, Any], str]]:
        """Decide ``items`` (evaluations ``first``…): those that map in one batch,
        those that do not (or that the engine refuses) each denied with its error."""
        requests: dict[int, Request] = {}
        errors: dict[int, str] = {}
        for offset, item in enumerate(items):
            try:
                requests[offset] = self._request(item, f"evaluations[{first + offset}].")
            except RequestError as exc:
                errors[offset] = str(exc)
        decided: dict[int, Decided] = {}
        if requests:
            try:
                decided = dict(
                    zip(requests, await self._decide(list(requests.values()), detail), strict=True)
                )
            except RequestError:
                # Which one cannot be decided: each alone (their commits still grouped).
                alone = await asyncio.gather(*(self._alone(r, detail) for r in requests.values()))
                for offset, outcome in zip(requests, alone, strict=True):
                    if isinstance(outcome, Decided):
                        decided[offset] = outcome
                    else:
                        errors[offset] = f"evaluations[{first + offset}].{outcome}"
        failed = sorted(errors)
        refused = await asyncio.gather(*(self._refuse(errors[o], detail) for o in failed))
        refusals = dict(zip(failed, refused, strict=True))
        outcomes: list[tuple[dict[str, Any], str]] = []
        for offset in range(len(items)):
            if offset in decided:
                made = decided[offset]
                outcomes.append(({"decision": made.decision.allowed}, made.decision_id))
                continue
            error = {"status": 400, "message": errors[offset]}
            outcomes.append(
                ({"decision": False, "context": {"error": error}}, refusals[offset].decision_id)
            )
        return outcomes

    async def _alone(self, request: Request, detail: Mapping[str, Any]) -> Decided | RequestError:
        """One request decided, or the error that kept it from being decided."""
        try:
            (decided,) = await self._decide([request], detail)
        except RequestError as exc:
            return exc
        return decided


def _placeholder(query: Query) -> dict[str, Any]:
    """The query's evaluation item with an empty id (or action name) where the searched
    part goes: mapped once, then each candidate put in its place."""
    if query.searched == "action":
        return {**query.item, "action": {"name": ""}}
    return {**query.item, query.searched: {"type": query.type, "id": ""}}


def _candidate(base: Request, searched: Searched, value: str) -> Request:
    if searched == "action":
        return base.model_copy(
            update={"action": EntityUID.model_construct(type="Action", id=value)}
        )
    field = "principal" if searched == "subject" else "resource"
    kind = base.principal.type if searched == "subject" else base.resource.type
    return base.model_copy(update={field: EntityUID.model_construct(type=kind, id=value)})


async def _read_json(
    scope: Scope, headers: Mapping[str, bytes], receive: Receive
) -> dict[str, Any]:
    """The request body as a JSON object. Raises :class:`_Refused` (400)."""
    kind = headers.get("content-type", b"").decode("latin-1").partition(";")[0].strip()
    if kind != "application/json":
        raise _Refused(400, f"Content-Type {kind!r}: an AuthZEN request is application/json")
    raw = await read_asgi_body(scope, receive, MAX_BODY)
    if raw is None:
        length = headers.get("content-length", b"").decode("latin-1")
        if length.isdigit():
            raise _Refused(400, f"the body is {length} bytes; the limit is {MAX_BODY}")
        raise _Refused(400, f"the body is over the limit of {MAX_BODY} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _Refused(400, f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _Refused(400, "the body must be a JSON object")
    return body


async def _respond(
    send: Send,
    status: int,
    body: dict[str, Any] | str,
    request_id: str | None = None,
    *,
    close: bool = False,
    **extra: str,
) -> None:
    if isinstance(body, str):
        data, kind = body.encode(), b"text/plain; charset=utf-8"
    else:
        data, kind = json.dumps(body, separators=(",", ":")).encode(), b"application/json"
    headers = [(b"content-type", kind), (b"content-length", str(len(data)).encode())]
    if request_id is not None:
        headers.append((b"x-request-id", request_id.encode("latin-1")))
    headers.extend((name.encode(), value.encode("latin-1")) for name, value in extra.items())
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": HTTPStatus(status), "headers": headers})
    await send({"type": "http.response.body", "body": data})
