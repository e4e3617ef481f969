"""cosignature/v1 (c2sp.org/tlog-cosignature): made by a witness key, checked here by
hand from the specification's text, and required N of M by a site.

The independent check (:func:`e2e.witness_process.by_hand`) builds the signed message
and the key id byte by byte as the specification says, and verifies with
``cryptography`` directly, not with audit's code.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

import pytest
from e2e.witness_process import by_hand

from audit._cosignature import (
    Cosignature,
    cosign,
    open_cosigned_checkpoint,
    with_cosignatures,
)
from audit._errors import CosignatureError, KeyFormatError, NoteError
from audit._note import (
    ALG_COSIGNATURE_V1,
    Checkpoint,
    SignerKey,
    VerifierKey,
    open_checkpoint,
    open_note,
    parse_note,
    sign_checkpoint,
    sign_note,
)

NOW = datetime(2026, 12, 4, 19, 0, 0, tzinfo=UTC)
LOG = SignerKey.generate("example.com/log")
W1 = SignerKey.generate("witness.example/w1", ALG_COSIGNATURE_V1)
W2 = SignerKey.generate("witness.example/w2", ALG_COSIGNATURE_V1)
W3 = SignerKey.generate("witness.example/w3", ALG_COSIGNATURE_V1)
CHECKPOINT = Checkpoint("example.com/log", 20852163, hashlib.sha256(b"root").digest())


def test_a_cosignature_verifies_by_the_specifications_own_construction() -> None:
    made = cosign(CHECKPOINT, W1, NOW)
    public = W1.private.public_key().public_bytes_raw()
    assert by_hand(made.line(), CHECKPOINT.body(), public, W1.name) == int(NOW.timestamp())
    assert made.time == NOW


def test_the_timestamp_of_the_specifications_example_is_read() -> None:
    """The tlog-cosignature example line signs at "time 1679315147"."""
    line = (
        "\N{EM DASH} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5O"
        "WXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
    )
    (signature,) = parse_note(f"{CHECKPOINT.body()}\n{line}").signatures
    assert Cosignature.from_signature(signature).timestamp == 1679315147


def test_a_witness_key_round_trips_in_its_vkey_form() -> None:
    vkey = str(W1.verifier())
    assert base64.b64decode(vkey.split("+", 2)[2])[0] == 0x04
    assert VerifierKey.parse(vkey, ALG_COSIGNATURE_V1) == W1.verifier()
    assert SignerKey.parse(str(W1), ALG_COSIGNATURE_V1).verifier() == W1.verifier()


@pytest.mark.parametrize(
    ("text", "alg"),
    [
        pytest.param(str(W1.verifier()), 0x01, id="witness-vkey-read-as-note-key"),
        pytest.param(str(LOG.verifier()), 0x04, id="note-vkey-read-as-witness-key"),
        pytest.param(str(W1), 0x01, id="witness-skey-read-as-note-key"),
    ],
)
def test_a_key_of_the_other_kind_is_refused(text: str, alg: int) -> None:
    parse = SignerKey.parse if text.startswith("PRIVATE+KEY+") else VerifierKey.parse
    with pytest.raises(KeyFormatError, match="expected"):
        parse(text, alg)


def test_a_witness_key_never_passes_for_a_note_signer() -> None:
    """A cosigner's signature is over another message: trusted as a note key, it could
    be made to sign a forged note body (the domain separation would be lost)."""
    with pytest.raises(NoteError, match="witness key"):
        sign_note("hello\n", [W1])
    with pytest.raises(NoteError, match="witness key"):
        open_note(sign_note("hello\n", [LOG]), [LOG.verifier(), W1.verifier()])


def cosigned(*witnesses: SignerKey) -> str:
    note = sign_checkpoint(CHECKPOINT, [LOG])
    return with_cosignatures(note, [cosign(CHECKPOINT, w, NOW) for w in witnesses])


WITNESSES = [W1.verifier(), W2.verifier(), W3.verifier()]


@pytest.mark.parametrize(
    ("signed_by", "quorum", "ok"),
    [
        pytest.param((W1, W2, W3), None, True, id="all-by-default"),
        pytest.param((W1, W2), None, False, id="one-missing-of-all"),
        pytest.param((W1, W3), 2, True, id="two-of-three"),
        pytest.param((W2,), 2, False, id="one-of-two-needed"),
        pytest.param((), 1, False, id="none"),
    ],
)
def test_a_checkpoint_is_final_only_with_the_required_cosignatures(
    signed_by: tuple[SignerKey, ...], quorum: int | None, ok: bool
) -> None:
    note = cosigned(*signed_by)
    if ok:
        opened = open_cosigned_checkpoint(note, [LOG.verifier()], WITNESSES, quorum=quorum)
        assert opened.checkpoint == CHECKPOINT
        assert {c.name for c in opened.cosignatures} == {w.name for w in signed_by}
    else:
        with pytest.raises(CosignatureError, match="cosigned by"):
            open_cosigned_checkpoint(note, [LOG.verifier()], WITNESSES, quorum=quorum)


def test_the_same_witness_twice_counts_once() -> None:
    note = sign_checkpoint(CHECKPOINT, [LOG])
    later = NOW.replace(hour=20)
    note = with_cosignatures(note, [cosign(CHECKPOINT, W1, NOW), cosign(CHECKPOINT, W1, later)])
    with pytest.raises(CosignatureError):
        open_cosigned_checkpoint(note, [LOG.verifier()], WITNESSES, quorum=2)


@pytest.mark.parametrize("quorum", [0, -1, 4])
def test_a_quorum_that_cannot_mean_anything_is_refused(quorum: int) -> None:
    with pytest.raises(CosignatureError, match="quorum"):
        open_cosigned_checkpoint(cosigned(W1, W2, W3), [LOG.verifier()], WITNESSES, quorum=quorum)


def test_no_witnesses_configured_fails_closed() -> None:
    with pytest.raises(CosignatureError, match="quorum"):
        open_cosigned_checkpoint(cosigned(W1), [LOG.verifier()], [])


def test_a_cosignature_over_another_checkpoint_is_refused() -> None:
    other = Checkpoint(CHECKPOINT.origin, CHECKPOINT.size + 1, CHECKPOINT.root)
    note = with_cosignatures(sign_checkpoint(other, [LOG]), [cosign(CHECKPOINT, W1, NOW)])
    with pytest.raises(CosignatureError, match="does not verify"):
        open_cosigned_checkpoint(note, [LOG.verifier()], WITNESSES, quorum=1)


def test_a_cosignature_with_a_tampered_timestamp_is_refused() -> None:
    made = cosign(CHECKPOINT, W1, NOW)
    moved = Cosignature(made.name, made.key_id, made.timestamp + 1, made.signature)
    note = with_cosignatures(sign_checkpoint(CHECKPOINT, [LOG]), [moved])
    with pytest.raises(CosignatureError, match="does not verify"):
        open_cosigned_checkpoint(note, [LOG.verifier()], WITNESSES, quorum=1)


def test_unknown_cosigners_are_ignored_and_the_log_signature_still_counts() -> None:
    stranger = SignerKey.generate("stranger.example/w", ALG_COSIGNATURE_V1)
    note = cosigned(W1, stranger)
    opened = open_cosigned_checkpoint(note, [LOG.verifier()], WITNESSES, quorum=1)
    assert [c.name for c in opened.cosignatures] == [W1.name]
    checkpoint, _ = open_checkpoint(note, [LOG.verifier()])  # cosignatures do not get in the way
    assert checkpoint == CHECKPOINT


def test_cosignatures_need_the_logs_own_signature_too() -> None:
    note = with_cosignatures(sign_checkpoint(CHECKPOINT, [SignerKey.generate("x")]), [])
    note = with_cosignatures(note, [cosign(CHECKPOINT, W1, NOW)])
    with pytest.raises(NoteError, match="trusted key"):
        open_cosigned_checkpoint(note, [LOG.verifier()], WITNESSES, quorum=1)


def test_with_cosignatures_adds_each_line_once() -> None:
    made = cosign(CHECKPOINT, W1, NOW)
    note = with_cosignatures(sign_checkpoint(CHECKPOINT, [LOG]), [made])
    assert with_cosignatures(note, [made]) == note
    assert note.count(made.line()) == 1
