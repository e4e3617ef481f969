"""The AuthZEN 1.0 Search APIs (subject, resource, action search) without HTTP: what a
query asks, its candidates, its page tokens.

A search pins two of subject, action and resource and asks which values of the third
are permitted. Docket answers from the bundle: the candidates of a subject or resource
search are the entities of the searched type in the bundle's entity store (sorted by
id); those of an action search are the schema's actions that apply to the pinned
subject's and resource's types, less those no ``permit`` can reach (the policy index
tells, :meth:`~engine._core.index.PolicyIndex.reaches_permit`). When no permit can reach
the pinned parts at all, nothing is evaluated. Each candidate is then decided as an
Access Evaluation would be (the driver in :mod:`engine._adapters.authzen_http`).

A call evaluates at most :data:`MAX_EVALUATED` candidates and returns at most ``limit``
results (default :data:`DEFAULT_LIMIT`, at most :data:`MAX_LIMIT`: a larger limit is
taken as :data:`MAX_LIMIT`). Where it stops, ``page.next_token`` carries the position:
an HMAC-SHA256 over the position, the bundle version and a digest of the query, under a
key of the data directory (:class:`PageTokens`). A token that was altered, made with
another key, issued for another query or under another bundle is refused (a 400 naming
``page.token``), never answered with a wrong page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from engine._adapters.authzen import Catalog
from engine._core.bundle import PolicyBundle, qualify_type
from engine._core.index import Anchor, request_anchors
from engine._errors import RequestError

Searched = Literal["subject", "resource", "action"]
SEARCHED: tuple[Searched, ...] = ("subject", "resource", "action")
DEFAULT_LIMIT = 50
"""Results in a page when the query gives no ``page.limit``."""
MAX_LIMIT = 1000
"""Results in a page at most (a larger ``page.limit`` is taken as this)."""
MAX_EVALUATED = 5000
"""Candidates one call evaluates at most; the rest is for the next page."""
MAX_TOKEN = 512
"""Characters of a page token (longer: refused unread)."""
_TOKEN_VERSION = 1


@dataclass(frozen=True, slots=True)
class Query:
    """A search request: which part is searched (and its type), the evaluation item
    with the pinned parts, the page size and token, and the digest of everything but
    the token (a token is bound to it)."""

    searched: Searched
    type: str | None
    item: dict[str, Any]
    limit: int
    token: str | None
    digest: str


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RequestError(f"{field}: must be an object")
    return value


def read_query(searched: Searched, body: Mapping[str, Any]) -> Query:
    """The query of a search request ``body``. The searched part's ``id`` and
    ``properties`` are ignored (the specification: "MUST be ignored"). Raises
    :class:`~engine.RequestError` naming the field."""
    page = _object(body.get("page", {}), "page")
    limit = page.get("limit", DEFAULT_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise RequestError("page.limit: must be a non-negative integer")
    token = page.get("token")
    if token is not None and not isinstance(token, str):
        raise RequestError("page.token: must be a string")
    item = {
        name: body[name] for name in ("subject", "action", "resource", "context") if name in body
    }
    kind: str | None = None
    if searched == "action":
        item.pop("action", None)
    else:
        part = _object(item.get(searched), searched) if searched in item else None
        if part is None:
            raise RequestError(f"{searched}: required")
        kind = part.get("type")
        if not isinstance(kind, str) or not kind:
            raise RequestError(f"{searched}.type: required, a non-empty string")
        item[searched] = {"type": kind}
    # What the token is bound to: the query as the PDP reads it, and the limit asked.
    canonical = json.dumps(
        {"searched": searched, "item": item, "limit": limit},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
    return Query(searched, kind, item, min(limit, MAX_LIMIT), token or None, digest)


class PageTokens:
    """Issues and opens page tokens under ``key`` (the same key in every worker of a
    data directory, so any of them continues a search another one began)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("a page token key has at least 32 bytes")
        self._key = key

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def issue(self, query: Query, bundle_version: str, position: int) -> str:
        """The token of the page of ``query`` that starts at candidate ``position``."""
        payload = json.dumps(
            [_TOKEN_VERSION, position, bundle_version, query.digest], separators=(",", ":")
        ).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def open(self, query: Query, bundle_version: str) -> int:
        """The position ``query.token`` carries. Raises :class:`~engine.RequestError`
        (``page.token: …``) for a token this server did not issue or that was altered,
        one issued for another query, and one issued under another bundle."""
        token = query.token or ""
        if len(token) > MAX_TOKEN:
            raise RequestError(f"page.token: over {MAX_TOKEN} characters; not a token of ours")
        encoded, _, mac = token.partition(".")
        try:
            payload, tag = _unb64(encoded), _unb64(mac)
        except (ValueError, binascii.Error):
            raise RequestError("page.token: not a page token of this server") from None
        if not hmac.compare_digest(tag, self._mac(payload)):
            raise RequestError("page.token: not a page token of this server, or altered")
        _, position, version, digest = json.loads(payload)
        if digest != query.digest:
            raise RequestError(
                "page.token: issued for another query; send the same subject, action, "
                "resource, context and page.limit as the first request"
            )
        if version != bundle_version:
            raise RequestError(
                f"page.token: the policy bundle changed since this search began (it was "
                f"{version}, it is {bundle_version}); search again without a token"
            )
        if not isinstance(position, int) or position < 0:
            raise RequestError("page.token: not a page token of this server")
        return position


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    if not text:
        raise ValueError("empty")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _anchors(bundle: PolicyBundle, part: Any) -> list[Anchor] | None:
    """The index anchors of a pinned subject or resource (None when they cannot be
    told before evaluation: a SPIFFE ID the bundle maps to a stored entity)."""
    if not isinstance(part, dict) or not isinstance(part.get("id"), str):
        return None
    if not isinstance(part.get("type"), str) or part["id"].startswith("spiffe://"):
        return None
    uid = (bundle.qualify(part["type"]), part["id"])
    return request_anchors(uid, bundle.ancestors(uid))


def candidates(query: Query, catalog: Catalog, bundle: PolicyBundle) -> Sequence[str]:
    """The ids (subject, resource) or action names a query's results are drawn from,
    in a fixed order for the bundle: empty when no permit can reach the query."""
    index = bundle.index
    action_type = qualify_type("Action", bundle.namespace)
    subject = _anchors(bundle, query.item.get("subject"))
    resource = _anchors(bundle, query.item.get("resource"))
    if query.searched == "action":
        names = catalog.actions_for(
            _type(query.item.get("subject"), bundle), _type(query.item.get("resource"), bundle)
        )
        if names is None:  # the schema's JSON form is unknown: every action with policies
            names = [uid[1] for uid in index.actions if uid[0] == action_type]
        return [
            name for name in names if index.reaches_permit((action_type, name), subject, resource)
        ]
    action = query.item.get("action")
    name = action.get("name") if isinstance(action, dict) else None
    if not isinstance(name, str):
        return ()  # the item maps with an error that to_request names
    if query.searched == "subject":
        subject = None
    else:
        resource = None
    if not index.reaches_permit((action_type, name), subject, resource):
        return ()
    assert query.type is not None
    return catalog.ids_of(bundle.qualify(query.type))


def _type(part: Any, bundle: PolicyBundle) -> str | None:
    if isinstance(part, dict) and isinstance(part.get("type"), str):
        return bundle.qualify(part["type"])
    return None
