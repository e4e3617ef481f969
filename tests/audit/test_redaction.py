"""Redaction orders (:mod:`audit._redaction`): what a redaction key signs, parsed
strictly, and bound to one entry of one log."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from audit import NoteError, SignerKey
from audit._redaction import RedactionOrder, open_order, sign_order

LEAF = hashlib.sha256(b"entry").digest()
WHEN = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
KEY = SignerKey.generate("dpo-redaction")


def order(**changes: object) -> RedactionOrder:
    fields: dict[str, object] = {
        "origin": "docket.local/0123456789ab",
        "index": 42,
        "leaf": LEAF,
        "time": WHEN,
        "requested_by": "dpo@example.org",
        "reason": "GDPR Art. 17 request #1234",
    }
    return RedactionOrder(**(fields | changes))  # type: ignore[arg-type]


def test_an_order_round_trips_and_opens_only_for_its_entry() -> None:
    note = sign_order(order(), KEY)
    assert note.startswith(
        "docket-redaction/1\norigin docket.local/0123456789ab\nindex 42\nleaf "
        + LEAF.hex()
        + "\ntime 2026-12-04T10:00:00.000000Z\nrequested-by dpo@example.org\n"
        "reason GDPR Art. 17 request #1234\n\n\u2014 dpo-redaction "
    )
    verified = open_order(
        note, [KEY.verifier()], origin="docket.local/0123456789ab", index=42, leaf=LEAF
    )
    assert verified.order == order()
    assert verified.signed_by == ("dpo-redaction",)
    for where, message in [
        ({"origin": "docket.local/ffffffffffff"}, "is for log"),
        ({"index": 41}, "erases entry 42, not 41"),
        ({"leaf": hashlib.sha256(b"other").digest()}, "different leaf hash"),
    ]:
        target = {"origin": "docket.local/0123456789ab", "index": 42, "leaf": LEAF} | where
        with pytest.raises(NoteError, match=message):
            open_order(note, [KEY.verifier()], **target)  # type: ignore[arg-type]
    with pytest.raises(NoteError, match="no signature by a trusted key"):
        open_order(
            note,
            [SignerKey.generate("dpo-redaction").verifier()],
            origin="docket.local/0123456789ab",
            index=42,
            leaf=LEAF,
        )
    with pytest.raises(NoteError, match="no trusted redaction key"):
        open_order(note, [], origin="docket.local/0123456789ab", index=42, leaf=LEAF)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"reason": ""}, "reason must not be empty"),
        ({"reason": "a\nb"}, "one line"),
        ({"requested_by": "x\x1b[31m"}, "one line"),
        ({"reason": "r" * 1025}, "longer than 1024"),
        ({"index": -1}, "non-negative"),
        ({"leaf": b"short"}, "32 bytes"),
        ({"time": datetime(2026, 12, 4)}, "timezone-aware"),
        ({"origin": "two words"}, "no spaces"),
    ],
)
def test_an_order_refuses_malformed_fields(changes: dict[str, object], message: str) -> None:
    with pytest.raises(NoteError, match=message):
        order(**changes)


@pytest.mark.parametrize(
    "body",
    [
        "docket-redaction/2\n",
        order().body().replace("index 42", "index 042"),
        order().body().replace("leaf ", "leaf A"),
        order().body().replace("requested-by", "requested_by"),
        order().body() + "extra line\n",
        order().body().replace(".000000Z", "+00:00"),
    ],
)
def test_parsing_is_strict(body: str) -> None:
    with pytest.raises(NoteError):
        RedactionOrder.parse_body(body)
    assert RedactionOrder.parse_body(order().body()) == order()
