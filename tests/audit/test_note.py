"""Signed notes and checkpoints: Go's published vectors, round trips, rejections, fuzzing.

The PeterNeumann / EnochRoot keys, the "If you think cryptography is the answer…" note
and its signatures come from golang.org/x/mod/sumdb/note (note.go, note_test.go); the
unsigned examples from c2sp.org/signed-note and c2sp.org/tlog-checkpoint.
"""

from __future__ import annotations

import base64
import contextlib
import re
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit._errors import KeyFormatError, NoteError
from audit._note import (
    ALG_ED25519,
    MAX_SIGNATURES,
    Checkpoint,
    Signature,
    SignedNote,
    SignerKey,
    VerifierKey,
    key_id,
    open_checkpoint,
    open_note,
    parse_checkpoint_unverified,
    parse_note,
    read_signer,
    sign_checkpoint,
    sign_note,
    valid_name,
    write_signer,
)

# -- vectors from golang.org/x/mod/sumdb/note ----------------------------------------------

PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_ID = bytes.fromhex("c74f20a3")
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
ENOCH_ID = bytes.fromhex("af0cfe78")
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG_B64 = (
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
)
ENOCH_SIG_B64 = (
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ="
)
PETER_SIG = f"— PeterNeumann {PETER_SIG_B64}\n"
ENOCH_SIG = f"— EnochRoot {ENOCH_SIG_B64}\n"
PETER_NOTE = TEXT + "\n" + PETER_SIG

PETER = VerifierKey.parse(PETER_VKEY)
ENOCH = VerifierKey.parse(ENOCH_VKEY)
PETER_SIGNATURE = Signature("PeterNeumann", PETER_ID, base64.b64decode(PETER_SIG_B64)[4:])
ENOCH_SIGNATURE = Signature("EnochRoot", ENOCH_ID, base64.b64decode(ENOCH_SIG_B64)[4:])

# -- examples from the C2SP specifications (no public keys published: parse only) ------

C2SP_NOTE = (
    "Ognuno sta solo sul cuor della terra\n"
    "trafitto da un raggio di sole:\n"
    "\n"
    "ed è subito sera.\n"
    "\n"
    "— quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouF"
    "SQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n"
)
C2SP_CHECKPOINT = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv"
    "2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
)

ROOT = bytes(range(32))
ROOT_B64 = base64.b64encode(ROOT).decode()
LOG = "example.com/log"


def signer(name: str = LOG) -> SignerKey:
    return SignerKey.generate(name)


# -- keys ------------------------------------------------------------------------------------


def test_go_verifier_key_parses_with_its_id() -> None:
    assert PETER.name == "PeterNeumann"
    assert PETER.key_id == PETER_ID
    assert str(PETER) == PETER_VKEY
    assert ENOCH.key_id == ENOCH_ID


def test_go_signer_key_parses_and_matches_the_verifier_key() -> None:
    key = SignerKey.parse(PETER_SKEY)
    assert (key.name, key.key_id) == ("PeterNeumann", PETER_ID)
    assert str(key) == PETER_SKEY
    assert key.verifier() == PETER
    assert str(key.verifier()) == PETER_VKEY


def test_key_id_is_the_truncated_hash_of_name_and_key() -> None:
    public = base64.b64decode(PETER_VKEY.split("+")[2])
    assert public[0] == ALG_ED25519
    assert key_id("PeterNeumann", public[1:]) == PETER_ID
    assert key_id("PeterNeumann2", public[1:]) != PETER_ID


def test_verifier_from_public_bytes() -> None:
    public = base64.b64decode(PETER_VKEY.split("+")[2])[1:]
    assert VerifierKey.from_public("PeterNeumann", public) == PETER
    assert VerifierKey.from_public("PeterNeumann", PETER.public) == PETER
    with pytest.raises(KeyFormatError):
        VerifierKey.from_public("PeterNeumann", public[:31])


def test_constructor_refuses_a_wrong_key_id() -> None:
    with pytest.raises(KeyFormatError, match="key id"):
        VerifierKey("PeterNeumann", ENOCH_ID, PETER.public)
    key = SignerKey.parse(PETER_SKEY)
    with pytest.raises(KeyFormatError, match="key id"):
        SignerKey("PeterNeumann", ENOCH_ID, key.private)


def test_generated_key_signs_what_its_verifier_accepts() -> None:
    key = signer("EnochRoot")
    verifier = key.verifier()
    sig = key.sign(b"hi")
    assert len(sig) == 64
    assert verifier.verify(b"hi", sig)
    assert not verifier.verify(b"hj", sig)
    assert not verifier.verify(b"hi", bytes([sig[0] ^ 1]) + sig[1:])
    assert not verifier.verify(b"hi", sig[:63])
    assert SignerKey.parse(str(key)).verifier() == verifier
    assert VerifierKey.parse(str(verifier)) == verifier


def test_verifier_keys_compare_and_hash_by_value() -> None:
    assert VerifierKey.parse(PETER_VKEY) == PETER
    assert hash(VerifierKey.parse(PETER_VKEY)) == hash(PETER)
    assert PETER != ENOCH
    assert len({PETER, ENOCH, VerifierKey.parse(PETER_VKEY)}) == 2


def test_signer_repr_does_not_show_the_secret() -> None:
    key = SignerKey.parse(PETER_SKEY)
    secret = PETER_SKEY.rsplit("+", 1)[1]
    assert secret not in repr(key)
    assert "c74f20a3" in repr(key)


def test_uppercase_hex_key_id_is_accepted_as_go_does() -> None:
    assert VerifierKey.parse(PETER_VKEY.replace("c74f20a3", "C74F20A3")) == PETER


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        pytest.param("PeterNeumann", True, id="plain"),
        pytest.param("example.com/log42", True, id="url"),
        pytest.param("é—漢字", True, id="non-ascii"),
        pytest.param("", False, id="empty"),
        pytest.param("a+b", False, id="plus"),
        pytest.param("a b", False, id="space"),
        pytest.param("a\tb", False, id="tab"),
        pytest.param("a\u00a0b", False, id="nbsp"),
        pytest.param("a\u2028b", False, id="line-separator"),
        pytest.param("a\u3000b", False, id="ideographic-space"),
        pytest.param("a\x7fb", False, id="del"),
        pytest.param("a\x00b", False, id="nul"),
        pytest.param("a\ud800b", False, id="lone-surrogate"),
    ],
)
def test_valid_name(name: str, valid: bool) -> None:
    assert valid_name(name) is valid


BAD_VERIFIER_KEYS = [
    pytest.param("", id="empty"),
    pytest.param("PeterNeumann", id="name-only"),
    pytest.param("PeterNeumann+c74f20a3", id="no-key"),
    pytest.param(PETER_VKEY.replace("c74f20a3", "c74f20a4"), id="wrong-key-id"),
    pytest.param(PETER_VKEY.replace("PeterNeumann", "PeterNeuman"), id="wrong-name"),
    pytest.param(PETER_VKEY.replace("c74f20a3", "c74f20a"), id="7-hex-digits"),
    pytest.param(PETER_VKEY.replace("c74f20a3", "0xc74f20a3"), id="0x-prefix"),
    pytest.param(PETER_VKEY.replace("c74f20a3", "c74f20g3"), id="non-hex-id"),
    pytest.param(PETER_VKEY.replace("PeterNeumann", "Peter Neumann"), id="name-with-space"),
    pytest.param("+" + PETER_VKEY, id="empty-name"),
    pytest.param(PETER_VKEY + "=", id="bad-padding"),
    pytest.param(PETER_VKEY[:-4], id="short-key"),
    pytest.param(PETER_VKEY + "\n", id="trailing-newline"),
    pytest.param(" " + PETER_VKEY, id="leading-space"),
    pytest.param(PETER_VKEY.replace("ARpc", "AR!c"), id="non-base64"),
    # From note_test.go: a 36-byte key with its key id adjusted to match.
    pytest.param(
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        id="wrong-length-adjusted-id",
    ),
    # From note_test.go: algorithm byte 0x65 with its key id adjusted to match.
    pytest.param(
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        id="unknown-algorithm-adjusted-id",
    ),
    pytest.param(PETER_SKEY, id="signer-key"),
]


@pytest.mark.parametrize("text", BAD_VERIFIER_KEYS)
def test_verifier_key_rejects(text: str) -> None:
    with pytest.raises(KeyFormatError):
        VerifierKey.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(PETER_VKEY, id="verifier-key"),
        pytest.param(PETER_SKEY.replace("PRIVATE", "private"), id="lowercase-prefix"),
        pytest.param(PETER_SKEY.replace("c74f20a3", "c74f20a4"), id="wrong-key-id"),
        pytest.param(PETER_SKEY.replace("PeterNeumann", "EnochRoot"), id="wrong-name"),
        pytest.param(PETER_SKEY.replace("+AYEK", "+AoEK"), id="unknown-algorithm"),
        pytest.param(PETER_SKEY[:-4], id="short-seed"),
        pytest.param("PRIVATE+KEY+PeterNeumann+c74f20a3", id="no-key"),
    ],
)
def test_signer_key_rejects(text: str) -> None:
    with pytest.raises(KeyFormatError) as info:
        SignerKey.parse(text)
    assert "AYEKFALVFGyNhPJEMzD1QIDr" not in str(info.value)


def test_every_mangling_of_the_go_verifier_key_is_rejected() -> None:
    # note_test.go TestNewVerifier: every proper substring, every single-byte increment.
    n = len(PETER_VKEY)
    manglings = {PETER_VKEY[i:j] for i in range(n) for j in range(i + 1, n + 1)}
    manglings |= {
        PETER_VKEY[:i] + chr(ord(PETER_VKEY[i]) + 1) + PETER_VKEY[i + 1 :] for i in range(n)
    }
    manglings.discard(PETER_VKEY)
    for text in manglings:
        with pytest.raises(KeyFormatError):
            VerifierKey.parse(text)


def test_every_mangling_of_the_go_signer_key_is_rejected() -> None:
    n = len(PETER_SKEY)
    manglings = {PETER_SKEY[i:j] for i in range(n) for j in range(i + 1, n + 1)}
    manglings |= {
        PETER_SKEY[:i] + chr(ord(PETER_SKEY[i]) + 1) + PETER_SKEY[i + 1 :] for i in range(n)
    }
    manglings.discard(PETER_SKEY)
    for text in manglings:
        with pytest.raises(KeyFormatError):
            SignerKey.parse(text)


def test_generate_refuses_an_invalid_name() -> None:
    with pytest.raises(KeyFormatError):
        SignerKey.generate("a+b")


# -- signed notes ----------------------------------------------------------------------------


def test_sign_reproduces_the_go_note() -> None:
    assert sign_note(TEXT, [SignerKey.parse(PETER_SKEY)]) == PETER_NOTE


def test_open_the_go_note() -> None:
    note = open_note(PETER_NOTE, [PETER])
    assert note == SignedNote(TEXT, (PETER_SIGNATURE,))
    assert open_note(PETER_NOTE.encode(), [PETER]) == note
    assert str(note) == PETER_NOTE


def test_open_with_one_of_two_keys_known_keeps_the_verified_one() -> None:
    note = open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [PETER])
    assert note.signatures == (PETER_SIGNATURE,)


def test_open_with_both_keys_known_verifies_both() -> None:
    note = open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [PETER, ENOCH])
    assert note.signatures == (PETER_SIGNATURE, ENOCH_SIGNATURE)


def test_parse_keeps_every_signature_unverified() -> None:
    note = parse_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG + ENOCH_SIG)
    assert note.text == TEXT
    assert note.signatures == (PETER_SIGNATURE, ENOCH_SIGNATURE, ENOCH_SIGNATURE)


def test_repeated_signatures_are_reported_once() -> None:
    note = open_note(TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG, [PETER])
    assert note.signatures == (PETER_SIGNATURE,)


def test_identical_duplicate_keys_are_harmless() -> None:
    assert open_note(PETER_NOTE, [PETER, ENOCH, PETER]).signatures == (PETER_SIGNATURE,)


def test_two_different_keys_with_one_name_and_id_are_refused() -> None:
    public = base64.b64decode(ENOCH_VKEY.split("+")[2])[1:]
    impostor = object.__new__(VerifierKey)  # a colliding key id cannot be built honestly
    object.__setattr__(impostor, "name", "PeterNeumann")
    object.__setattr__(impostor, "key_id", PETER_ID)
    object.__setattr__(impostor, "public", ENOCH.public)
    object.__setattr__(impostor, "_raw", public)
    with pytest.raises(NoteError, match="ambiguous"):
        open_note(PETER_NOTE, [PETER, impostor])


def test_the_signed_note_spec_example_parses_with_a_blank_line_in_its_text() -> None:
    note = parse_note(C2SP_NOTE)
    assert note.text.endswith("trafitto da un raggio di sole:\n\ned è subito sera.\n")
    (sig,) = note.signatures
    assert sig.name == "quasimodo.example/salvatore"
    assert len(sig.key_id) == 4
    assert len(sig.signature) == 64


def test_text_ending_in_a_blank_line_round_trips() -> None:
    key = signer()
    note = open_note(sign_note("a\n\n", [key]), [key.verifier()])
    assert note.text == "a\n\n"


def _tamper_text(note: str) -> str:
    return note.replace("problem is", "problem was")


def _tamper_signature(note: str) -> str:
    return note.replace(PETER_SIG_B64[10:14], "AAAA")


REJECTED_NOTES = [
    pytest.param(_tamper_text(PETER_NOTE), id="tampered-text"),
    pytest.param(_tamper_signature(PETER_NOTE), id="tampered-signature"),
    pytest.param(
        PETER_NOTE.replace(PETER_SIG_B64[:60], PETER_SIG_B64[:60] + "ABCD"),
        id="lengthened-signature",
    ),
    pytest.param(
        TEXT + "\n" + Signature("PeterNeumann", ENOCH_ID, PETER_SIGNATURE.signature).line(),
        id="wrong-key-id",
    ),
    pytest.param(PETER_NOTE.replace("PeterNeumann", "PeterNeuman"), id="wrong-name"),
    pytest.param(TEXT, id="text-only"),
    pytest.param(TEXT + "\n", id="no-signature-lines"),
    pytest.param(TEXT + PETER_SIG, id="missing-blank-line"),
    pytest.param(PETER_NOTE[:-1], id="no-final-newline"),
    pytest.param(PETER_NOTE.replace("\n", "\r\n"), id="crlf"),
    pytest.param(PETER_NOTE.replace("problem,", "problem,\r"), id="cr-in-text"),
    pytest.param(PETER_NOTE.replace("think ", "think\t"), id="tab-in-text"),
    pytest.param("\x01" + PETER_NOTE, id="control-character"),
    pytest.param(b"\xff" + PETER_NOTE.encode(), id="invalid-utf8"),
    pytest.param(b"\xed\xa0\x80" + PETER_NOTE.encode(), id="utf8-surrogate"),
    pytest.param("\ud800" + PETER_NOTE, id="lone-surrogate"),
    pytest.param(PETER_NOTE + "Unexpected line.\n", id="trailing-line"),
    pytest.param(PETER_NOTE + "\n", id="trailing-blank-line"),
    pytest.param(PETER_NOTE + "trailing", id="trailing-data"),
    pytest.param(PETER_NOTE.replace("— ", "- "), id="hyphen-not-em-dash"),
    pytest.param(PETER_NOTE.replace("— ", "—"), id="em-dash-without-space"),
    pytest.param(PETER_NOTE.replace("— ", "  "), id="no-em-dash"),
    pytest.param(PETER_NOTE.replace("PeterNeumann", "Peter+Neumann"), id="name-with-plus"),
    pytest.param(PETER_NOTE.replace("PeterNeumann", "Bad Name"), id="name-with-space"),
    pytest.param(PETER_NOTE.replace("— PeterNeumann ", "—  "), id="empty-name"),
    pytest.param(PETER_NOTE.replace(" x08go", "x08go"), id="no-space-before-signature"),
    pytest.param(PETER_NOTE.replace(" x08go", "  x08go"), id="two-spaces"),
    pytest.param(PETER_NOTE.replace("x08go/", "x08go!"), id="non-base64"),
    pytest.param(PETER_NOTE.replace("AM=\n", "AM\n"), id="missing-padding"),
    pytest.param(PETER_NOTE.replace("AM=\n", "AN=\n"), id="non-canonical-base64"),
    pytest.param(PETER_NOTE.replace("AM=\n", "AM= \n"), id="trailing-space"),
    pytest.param(TEXT + "\n— PeterNeumann \n", id="empty-signature"),
    pytest.param(TEXT + "\n— PeterNeumann x08go/Y=\n", id="4-byte-signature"),
    pytest.param(TEXT + "\n— PeterNeumann x08go/ZJ\n", id="5-byte-signature"),
    pytest.param(TEXT + "\n" + PETER_SIG * (MAX_SIGNATURES + 1), id="101-signatures"),
]


@pytest.mark.parametrize("data", REJECTED_NOTES)
def test_open_rejects(data: str | bytes) -> None:
    with pytest.raises(NoteError):
        open_note(data, [PETER])


def test_five_byte_signature_parses_but_fails_verification() -> None:
    # 4 bytes of key id and 1 of signature is well formed: only verification rejects it.
    short = base64.b64encode(PETER_ID + b"\x00").decode()
    (sig,) = parse_note(f"{TEXT}\n— PeterNeumann {short}\n").signatures
    assert sig == Signature("PeterNeumann", PETER_ID, b"\x00")
    with pytest.raises(NoteError, match="does not verify"):
        open_note(f"{TEXT}\n— PeterNeumann {short}\n", [PETER])


def test_four_byte_signature_does_not_parse() -> None:
    short = base64.b64encode(PETER_ID).decode()
    with pytest.raises(NoteError):
        parse_note(f"{TEXT}\n— PeterNeumann {short}\n")


def test_a_hundred_signatures_are_accepted() -> None:
    assert open_note(TEXT + "\n" + PETER_SIG * MAX_SIGNATURES, [PETER]).signatures == (
        PETER_SIGNATURE,
    )


def test_unknown_signers_alone_do_not_open_a_note() -> None:
    with pytest.raises(NoteError, match="no signature by a trusted key"):
        open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [])


def test_unknown_signatures_are_ignored_even_with_a_known_name_or_id() -> None:
    # Same name, other id (a rotated key); same id, other name: neither is PETER's.
    other = signer("PeterNeumann")
    same_name = sign_note(TEXT, [other]).split("\n\n", 1)[1]
    same_id = PETER_SIG.replace("PeterNeumann", "CarmenSandiego")
    note = open_note(TEXT + "\n" + same_name + same_id + PETER_SIG, [PETER])
    assert note.signatures == (PETER_SIGNATURE,)


def test_a_failing_known_signature_rejects_the_note_even_if_another_verifies() -> None:
    bad = ENOCH_SIG.replace(ENOCH_SIG_B64[10:14], "AAAA")
    with pytest.raises(NoteError, match="EnochRoot"):
        open_note(TEXT + "\n" + PETER_SIG + bad, [PETER, ENOCH])
    # Unknown to the verifier, the same broken line is ignored.
    assert open_note(TEXT + "\n" + PETER_SIG + bad, [PETER]).signatures == (PETER_SIGNATURE,)


def test_a_failing_duplicate_of_a_verified_signature_rejects_the_note() -> None:
    with pytest.raises(NoteError):
        open_note(PETER_NOTE + _tamper_signature(PETER_SIG), [PETER])


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("no newline", id="no-final-newline"),
        pytest.param("a\r\n", id="crlf"),
        pytest.param("a\x00\n", id="nul"),
        pytest.param("\ud800\n", id="lone-surrogate"),
    ],
)
def test_sign_note_refuses_a_malformed_text(text: str) -> None:
    with pytest.raises(NoteError):
        sign_note(text, [signer()])


def test_sign_note_refuses_no_signers_and_duplicate_signers() -> None:
    key = signer()
    with pytest.raises(NoteError):
        sign_note("a\n", [])
    with pytest.raises(NoteError, match="twice"):
        sign_note("a\n", [key, key])


# -- checkpoints ----------------------------------------------------------------------------


def test_the_checkpoint_spec_example_parses() -> None:
    checkpoint = parse_checkpoint_unverified(C2SP_CHECKPOINT)
    assert checkpoint == Checkpoint(
        "example.com/behind-the-sofa",
        20852163,
        base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="),
    )
    assert checkpoint.body() == C2SP_CHECKPOINT.split("\n\n")[0] + "\n"


def test_checkpoint_body_layout() -> None:
    checkpoint = Checkpoint(LOG, 7, ROOT, ("ext one", "ext two"))
    assert checkpoint.body() == f"{LOG}\n7\n{ROOT_B64}\next one\next two\n"
    assert Checkpoint.parse_body(checkpoint.body()) == checkpoint


def test_sign_and_open_checkpoint() -> None:
    key = signer()
    checkpoint = Checkpoint(LOG, 42, ROOT)
    opened, note = open_checkpoint(sign_checkpoint(checkpoint, [key]), [key.verifier()], origin=LOG)
    assert opened == checkpoint
    assert note.text == checkpoint.body()
    assert [sig.key_id for sig in note.signatures] == [key.key_id]


def test_open_checkpoint_refuses_another_origin() -> None:
    key = signer("example.com/other")
    data = sign_checkpoint(Checkpoint("example.com/other", 1, ROOT), [key])
    with pytest.raises(NoteError, match=re.escape("example.com/other")):
        open_checkpoint(data, [key.verifier()], origin=LOG)


def test_open_checkpoint_verifies_before_parsing() -> None:
    key = signer()
    data = sign_checkpoint(Checkpoint(LOG, 5, ROOT), [key])
    with pytest.raises(NoteError, match="trusted"):
        open_checkpoint(data, [signer().verifier()])
    with pytest.raises(NoteError, match="does not verify"):
        open_checkpoint(data.replace("\n5\n", "\n6\n"), [key.verifier()])


def test_open_checkpoint_refuses_a_signed_note_that_is_not_a_checkpoint() -> None:
    key = signer()
    with pytest.raises(NoteError):
        open_checkpoint(sign_note("hello\n", [key]), [key.verifier()])


def test_key_rotation_overlap() -> None:
    old, new = signer(), signer()
    checkpoint = Checkpoint(LOG, 10, ROOT)
    data = sign_checkpoint(checkpoint, [new, old])
    lines = data.split("\n\n", 1)[1].splitlines()
    assert len(lines) == 2
    assert all(line.startswith(f"— {LOG} ") for line in lines)
    for keys in ([old.verifier()], [new.verifier()], [old.verifier(), new.verifier()]):
        opened, note = open_checkpoint(data, keys, origin=LOG)
        assert opened == checkpoint
        assert {sig.key_id for sig in note.signatures} == {key.key_id for key in keys}
    with pytest.raises(NoteError):
        open_checkpoint(data, [signer().verifier()])
    # Once the old key is retired, its holders no longer accept new checkpoints.
    retired = sign_checkpoint(Checkpoint(LOG, 11, ROOT), [new])
    assert open_checkpoint(retired, [new.verifier()])[0].size == 11
    with pytest.raises(NoteError):
        open_checkpoint(retired, [old.verifier()])


def _body(origin: str = LOG, size: str = "3", root: str = ROOT_B64, *extra: str) -> str:
    return "".join(f"{line}\n" for line in (origin, size, root, *extra))


REJECTED_BODIES = [
    pytest.param(_body(size="01"), id="size-leading-zero"),
    pytest.param(_body(size="00"), id="size-double-zero"),
    pytest.param(_body(size="-1"), id="size-negative"),
    pytest.param(_body(size="+1"), id="size-plus-sign"),
    pytest.param(_body(size=" 1"), id="size-leading-space"),
    pytest.param(_body(size="1 "), id="size-trailing-space"),
    pytest.param(_body(size="1_000"), id="size-underscore"),
    pytest.param(_body(size="1.0"), id="size-decimal-point"),
    pytest.param(_body(size="0x10"), id="size-hex"),
    pytest.param(_body(size="١٢"), id="size-arabic-digits"),
    pytest.param(_body(size=""), id="size-empty"),
    pytest.param(_body(size=str(2**64)), id="size-beyond-uint64"),
    pytest.param(_body(size="9" * 5000), id="size-huge"),
    pytest.param(_body(root=base64.b64encode(ROOT[:31]).decode()), id="root-31-bytes"),
    pytest.param(_body(root=base64.b64encode(ROOT + b"!").decode()), id="root-33-bytes"),
    pytest.param(_body(root=ROOT_B64.rstrip("=")), id="root-unpadded"),
    pytest.param(_body(root=ROOT_B64[:-2] + "9="), id="root-non-canonical"),
    pytest.param(_body(root=ROOT.hex()), id="root-hex"),
    pytest.param(_body(root=""), id="root-empty"),
    pytest.param(_body(origin=""), id="origin-empty"),
    pytest.param(_body(LOG, "3", ROOT_B64, ""), id="empty-extension-line"),
    pytest.param(_body(LOG, "3", ROOT_B64, "ext", ""), id="empty-last-extension-line"),
    pytest.param(f"{LOG}\n3\n", id="no-root-line"),
    pytest.param(f"{LOG}\n3\n{ROOT_B64}", id="no-final-newline"),
    pytest.param("", id="empty"),
]


@pytest.mark.parametrize("body", REJECTED_BODIES)
def test_checkpoint_body_rejects(body: str) -> None:
    with pytest.raises(NoteError):
        Checkpoint.parse_body(body)


@pytest.mark.parametrize("body", REJECTED_BODIES)
def test_signed_malformed_checkpoint_is_rejected(body: str) -> None:
    # Even correctly signed, a malformed body is not a checkpoint.
    key = signer()
    try:
        data = sign_note(body, [key])
    except NoteError:
        return  # not even a note text (no final newline, empty)
    with pytest.raises(NoteError):
        open_checkpoint(data, [key.verifier()])


@pytest.mark.parametrize(
    ("body", "size"),
    [
        pytest.param(_body(size="0"), 0, id="empty-tree"),
        pytest.param(_body(size="10"), 10, id="ten"),
        pytest.param(_body(size=str(2**64 - 1)), 2**64 - 1, id="max-uint64"),
    ],
)
def test_checkpoint_sizes_accepted(body: str, size: int) -> None:
    assert Checkpoint.parse_body(body).size == size


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"origin": ""}, id="empty-origin"),
        pytest.param({"origin": "a\nb"}, id="origin-newline"),
        pytest.param({"origin": "a\rb"}, id="origin-cr"),
        pytest.param({"size": -1}, id="negative-size"),
        pytest.param({"size": 2**64}, id="size-too-big"),
        pytest.param({"size": True}, id="bool-size"),
        pytest.param({"root": ROOT[:31]}, id="short-root"),
        pytest.param({"extensions": ("",)}, id="empty-extension"),
        pytest.param({"extensions": ("a\nb",)}, id="extension-newline"),
    ],
)
def test_checkpoint_constructor_rejects(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"origin": LOG, "size": 1, "root": ROOT, **kwargs}
    with pytest.raises(NoteError):
        Checkpoint(**fields)  # type: ignore[arg-type]


# -- key files -------------------------------------------------------------------------------


def test_key_file_round_trip_with_mode_0600(tmp_path: Path) -> None:
    key = signer()
    path = tmp_path / "signing.key"
    write_signer(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == str(key) + "\n"
    assert read_signer(path).verifier() == key.verifier()


def test_write_signer_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    first = signer()
    write_signer(path, first)
    with pytest.raises(FileExistsError):
        write_signer(path, signer())
    assert read_signer(path).verifier() == first.verifier()


def test_write_signer_refuses_a_dangling_symlink(tmp_path: Path) -> None:
    link = tmp_path / "signing.key"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FileExistsError):
        write_signer(link, signer())
    assert not (tmp_path / "elsewhere").exists()


def test_read_signer_reads_a_go_key_file(tmp_path: Path) -> None:
    path = tmp_path / "peter.key"
    path.write_text(PETER_SKEY + "\n")
    assert read_signer(path).verifier() == PETER


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(PETER_VKEY.encode(), id="verifier-key"),
        pytest.param(PETER_SKEY.replace("c74f20a3", "c74f20a4").encode(), id="wrong-id"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param((PETER_SKEY + "\n" + PETER_SKEY).encode(), id="two-keys"),
    ],
)
def test_read_signer_rejects_a_malformed_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(KeyFormatError, match=re.escape("bad.key")) as info:
        read_signer(path)
    assert "AYEKFALVFGyNhPJEMzD1QIDr" not in str(info.value)


def test_read_signer_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFormatError, match=re.escape("missing.key")):
        read_signer(tmp_path / "missing.key")


def test_read_signer_reports_an_unreadable_file(tmp_path: Path) -> None:
    # A directory where the key should be: unreadable as a file even for root (a file
    # with mode 0 is not, and CI runs as root).
    path = tmp_path / "locked.key"
    path.mkdir()
    with pytest.raises(KeyFormatError, match=re.escape("locked.key")):
        read_signer(path)


# -- properties ------------------------------------------------------------------------------

# Pieces that make arbitrary text look like notes, checkpoints and keys, so the parsers'
# deeper branches get exercised, not just the first check.
FRAGMENTS = st.sampled_from(
    [
        "\n",
        "\n\n",
        "— ",
        "—",
        " ",
        "+",
        "=",
        "\r",
        "PeterNeumann",
        "c74f20a3",
        "PRIVATE+KEY+",
        PETER_SIG_B64,
        PETER_SIG_B64[:8],
        "ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        ROOT_B64,
        "0",
        "01",
        "12",
        "é",
        "\ud800",
        "\x00",
        "\u2028",
    ]
)
NOTEISH = st.one_of(st.text(), st.lists(FRAGMENTS | st.text(max_size=3)).map("".join))


@given(NOTEISH)
def test_parse_note_raises_only_note_error(data: str) -> None:
    try:
        note = parse_note(data)
    except NoteError:
        return
    assert note.text.endswith("\n")
    assert data.startswith(note.text)


@given(st.binary())
def test_parse_note_on_bytes_raises_only_note_error(data: bytes) -> None:
    with contextlib.suppress(NoteError):
        parse_note(data)


@given(NOTEISH)
def test_checkpoint_parsers_raise_only_note_error(data: str) -> None:
    for parse in (Checkpoint.parse_body, parse_checkpoint_unverified):
        with contextlib.suppress(NoteError):
            parse(data)


@given(NOTEISH)
def test_open_note_raises_only_note_error(data: str) -> None:
    with contextlib.suppress(NoteError):
        open_note(data, [PETER, ENOCH])


@given(NOTEISH)
def test_key_parsers_raise_only_key_format_error(data: str) -> None:
    for parse in (VerifierKey.parse, SignerKey.parse):
        with contextlib.suppress(KeyFormatError):
            parse(data)


# One line of a checkpoint: no newline or other character below U+0020, valid UTF-8.
_LINE = st.text(st.characters(codec="utf-8", min_codepoint=0x20), min_size=1)
CHECKPOINTS = st.builds(
    Checkpoint,
    origin=_LINE,
    size=st.integers(min_value=0, max_value=2**64 - 1),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(_LINE, max_size=3).map(tuple),
)
SIGNER = SignerKey.parse(PETER_SKEY)


@given(CHECKPOINTS)
def test_sign_then_open_round_trips(checkpoint: Checkpoint) -> None:
    data = sign_checkpoint(checkpoint, [SIGNER])
    opened, note = open_checkpoint(data, [PETER], origin=checkpoint.origin)
    assert opened == checkpoint
    assert Checkpoint.parse_body(checkpoint.body()) == checkpoint
    assert parse_checkpoint_unverified(data) == checkpoint
    assert str(note) == data


@settings(max_examples=200)
@given(CHECKPOINTS, st.data())
def test_any_changed_character_of_a_signed_checkpoint_is_detected(
    checkpoint: Checkpoint, data: st.DataObject
) -> None:
    signed = sign_checkpoint(checkpoint, [SIGNER])
    index = data.draw(st.integers(min_value=0, max_value=len(signed) - 1))
    replacement = data.draw(st.characters(codec="utf-8").filter(lambda ch: ch != signed[index]))
    with pytest.raises(NoteError):
        open_checkpoint(signed[:index] + replacement + signed[index + 1 :], [PETER])
