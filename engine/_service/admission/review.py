"""The AdmissionReview ``admission.k8s.io/v1`` as the API server sends it, and reading
any part of it with pydantic so that an error names the field at fault
(``request.object.spec.containers[0].image: …``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from engine._errors import AdmissionInputError

API_VERSION = "admission.k8s.io/v1"

# -- the AdmissionReview as the API server sends it ---------------------------------------
# Unknown fields are ignored, not refused: the API server adds fields to AdmissionRequest
# over releases (requestKind, options, …) and sends whole objects; Docket reads what it
# needs and insists on the types of that.


class ReadModel(BaseModel):
    """A part of a review read as sent: unknown fields ignored, known ones typed strictly."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class GroupVersionKind(ReadModel):
    """``request.kind``: the kind of ``request.object``."""

    group: StrictStr = ""
    version: StrictStr
    kind: StrictStr = Field(min_length=1)


class GroupVersionResource(ReadModel):
    """``request.resource``."""

    group: StrictStr = ""
    version: StrictStr
    resource: StrictStr = Field(min_length=1)


class UserInfo(ReadModel):
    """Who asked the API server."""

    username: StrictStr | None = None
    uid: StrictStr | None = None
    groups: tuple[StrictStr, ...] = ()


class AdmissionRequest(ReadModel):
    """``request`` of an AdmissionReview v1 (the fields Docket reads)."""

    uid: StrictStr = Field(min_length=1)
    kind: GroupVersionKind
    resource: GroupVersionResource
    sub_resource: StrictStr | None = Field(default=None, alias="subResource")
    name: StrictStr | None = None
    namespace: StrictStr | None = None
    operation: Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
    user_info: UserInfo = Field(alias="userInfo")
    object: dict[str, Any] | None = None
    old_object: dict[str, Any] | None = Field(default=None, alias="oldObject")
    dry_run: StrictBool | None = Field(default=None, alias="dryRun")


class AdmissionReview(ReadModel):
    """An AdmissionReview ``admission.k8s.io/v1`` request."""

    api_version: Literal["admission.k8s.io/v1"] = Field(alias="apiVersion")
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest


_R = TypeVar("_R", bound=ReadModel)


def _where(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def input_error(exc: ValidationError, prefix: str) -> AdmissionInputError:
    # A failing item also fails the length check of its list: report the item only.
    found = exc.errors()
    locs = [tuple(error["loc"]) for error in found]
    errors = [
        error
        for error, loc in zip(found, locs, strict=True)
        if not any(other[: len(loc)] == loc and other != loc for other in locs)
    ]
    first = errors[0]
    where = _where([*([prefix] if prefix else []), *first["loc"]])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return AdmissionInputError(f"{where}: {first['msg']}{more}")


def parse_review(body: bytes) -> AdmissionReview:
    """Read an AdmissionReview ``admission.k8s.io/v1`` request.

    Raises :class:`AdmissionInputError` for a body that is not JSON, another
    ``apiVersion`` (``v1beta1``: configure ``admissionReviewVersions: [v1]``), or a
    review missing a field Docket needs (``request.uid``, ``request.kind``,
    ``request.operation``, ``request.object`` for CREATE and UPDATE, …).
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdmissionInputError(f"body: not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise AdmissionInputError("body: expected an AdmissionReview object")
    version = data.get("apiVersion")
    if version != API_VERSION:
        got = "missing" if version is None else json.dumps(version)
        raise AdmissionInputError(
            f"apiVersion: {got}; Docket reads AdmissionReview {API_VERSION} only "
            "(set admissionReviewVersions: [v1] in the webhook configuration)"
        )
    try:
        review = AdmissionReview.model_validate(data)
    except ValidationError as exc:
        raise input_error(exc, "") from exc
    request = review.request
    if request.operation in ("CREATE", "UPDATE") and request.object is None:
        raise AdmissionInputError(f"request.object: required for {request.operation}")
    return review


def parse_part(model: type[_R], value: Any, where: str) -> _R:
    """``value`` read as ``model``; raises :class:`AdmissionInputError` naming the field
    at fault below ``where`` (``request.object.spec``, …)."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise input_error(exc, where) from exc
