"""What the log records: one :class:`Entry` per decision, placement, admission,
attestation, certificate, bundle load and audit operation.

An entry's bytes in the log are its RFC 8785 canonical JSON (:meth:`Entry.canonical`);
the leaf hash is RFC 6962's ``SHA-256(0x00 || canonical)``. Every entry carries a random
salt so that erasing a redacted payload leaves nothing to guess back from its hash.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_serializer, field_validator

from audit._canonical import canonical_json, loads_canonical, plain_text

EntryKind = Literal[
    "decision",
    "placement",
    "admission",
    "attestation",
    "certificate",
    "bundle",
    "audit",
    "redaction",
]
Classification = Literal["public", "internal", "confidential", "restricted"]

SALT_BYTES = 16
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def time_text(value: datetime) -> str:
    """An aware datetime as RFC 3339 UTC with microseconds: ``2026-11-23T21:07:00.000000Z``."""
    if value.tzinfo is UTC:  # an entry's time (validated): "+00:00" becomes "Z"
        return value.isoformat(timespec="microseconds")[:-6] + "Z"
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def new_salt() -> str:
    """A fresh random salt, hex."""
    return os.urandom(SALT_BYTES).hex()


def digest(value: Any) -> str:
    """Hex SHA-256 of ``value``'s canonical JSON: the ``request_digest`` of an entry."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


def digest_plain(value: Any) -> str | None:
    """:func:`digest` of ``value`` when it is made only of exact ``dict`` (string keys,
    below U+D800), ``list``, ``tuple``, ``str``, ``bool``, ``None`` and ``int`` within
    ±2^53 — what pydantic's json mode leaves as it is, so that a model's fields need no
    ``model_dump`` — else None. Raises :class:`FormatError` for a lone surrogate."""
    text = plain_text(value)
    if text is None:
        return None
    try:
        return hashlib.sha256(text.encode()).hexdigest()
    except UnicodeEncodeError:
        return digest(value)  # it raises, in canonical_json's words


def canonical_text(value: Any) -> str | None:
    """``value``'s canonical JSON as text when it is plain (what :func:`digest_plain`
    takes), else None. Pieces of a larger plain value can so be written once and joined
    (in RFC 8785's key order) into the larger one's text."""
    return plain_text(value)


def _text(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)


def _texts(values: tuple[str, ...]) -> str:
    return "[" + ",".join(map(encode_basestring, values)) + "]"


class Entry(BaseModel):
    """One audit record.

    ``subject``/``action``/``resource`` are Cedar uids as written in policies
    (``Docket::User::"alice"``). ``jurisdiction`` and ``region`` say where the thing
    happened (the request's jurisdiction, or the chosen site's for a placement);
    ``residency`` is where the data concerned may be (empty: unconstrained).
    ``decision`` is ``allow``/``deny`` for decisions, ``issued``/``refused`` read as
    allow/deny for credentials. ``policies`` are the determining policy ids.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: EntryKind
    time: datetime
    caller: StrictStr | None = None
    subject: StrictStr | None = None
    action: StrictStr | None = None
    resource: StrictStr | None = None
    classification: Classification | None = None
    residency: tuple[StrictStr, ...] = ()
    jurisdiction: StrictStr | None = None
    region: StrictStr | None = None
    decision: Literal["allow", "deny"] | None = None
    policies: tuple[StrictStr, ...] = ()
    bundle_version: StrictStr | None = None
    request_digest: StrictStr | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    salt: StrictStr = Field(default_factory=new_salt, pattern=r"^[0-9a-f]{32}$")

    @field_validator("time", mode="before")
    @classmethod
    def _parse_time(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = datetime.strptime(value, TIME_FORMAT).replace(tzinfo=UTC)
        return value

    @field_validator("time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("time must be timezone-aware")
        return value.astimezone(UTC)

    @field_serializer("time")
    def _time_text(self, value: datetime) -> str:
        return time_text(value)

    def document(self) -> dict[str, Any]:
        """The entry as the JSON object that is canonicalized (time as RFC 3339 UTC).
        Built by hand: this runs for every decision, and ``model_dump`` costs 3x more."""
        return {
            "kind": self.kind,
            "time": time_text(self.time),
            "caller": self.caller,
            "subject": self.subject,
            "action": self.action,
            "resource": self.resource,
            "classification": self.classification,
            "residency": list(self.residency),
            "jurisdiction": self.jurisdiction,
            "region": self.region,
            "decision": self.decision,
            "policies": list(self.policies),
            "bundle_version": self.bundle_version,
            "request_digest": self.request_digest,
            "detail": self.detail,
            "salt": self.salt,
        }

    def canonical(self) -> bytes:
        """RFC 8785 canonical JSON of :meth:`document`: the bytes the leaf hash covers."""
        return timed_canonical(self)[1]

    @classmethod
    def from_canonical(cls, data: bytes) -> Entry:
        """Parse stored canonical bytes back into an entry.
        Raises pydantic's ``ValidationError`` for bytes that are not an entry."""
        return cls.model_validate(loads_canonical(data))


def timed_canonical(entry: Entry) -> tuple[str, bytes]:
    """An entry's time (:func:`time_text`) and its :meth:`~Entry.canonical` bytes.

    This runs for every entry the log takes. Every field but ``detail`` is a string,
    None or a tuple of strings (validated), so the members are written here in RFC
    8785's key order and only ``detail`` needs a look. Anything else — a ``detail``
    beyond plain JSON, a lone surrogate, an entry made without validation — takes the
    general path, and so gives the bytes or the error it always gave."""
    time = time_text(entry.time)
    detail = plain_text(entry.detail)
    if detail is not None:
        try:
            return time, (
                f'{{"action":{_text(entry.action)},'
                f'"bundle_version":{_text(entry.bundle_version)},'
                f'"caller":{_text(entry.caller)},'
                f'"classification":{_text(entry.classification)},'
                f'"decision":{_text(entry.decision)},'
                f'"detail":{detail},'
                f'"jurisdiction":{_text(entry.jurisdiction)},'
                f'"kind":{_text(entry.kind)},'
                f'"policies":{_texts(entry.policies)},'
                f'"region":{_text(entry.region)},'
                f'"request_digest":{_text(entry.request_digest)},'
                f'"residency":{_texts(entry.residency)},'
                f'"resource":{_text(entry.resource)},'
                f'"salt":{_text(entry.salt)},'
                f'"subject":{_text(entry.subject)},'
                f'"time":{_text(time)}}}'
            ).encode()
        except (TypeError, UnicodeEncodeError):
            pass
    return time, canonical_json(entry.document())
