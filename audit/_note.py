"""C2SP signed notes and tlog checkpoints, signed with Ed25519.

A *signed note* (c2sp.org/signed-note) is UTF-8 text ending in a newline, a blank line,
then one signature line per key::

    <text ...>\\n
    \\n
    — <key name> base64(4-byte key id || signature)\\n

A *checkpoint* (c2sp.org/tlog-checkpoint) is a signed note whose text is the origin,
the tree size and the base64 root hash, one per line, then optional extension lines.
Keys use the format of Go's ``golang.org/x/mod/sumdb/note`` package, so keys and
notes interoperate with Go tools::

    verifier key  <name>+<8 hex key id>+base64(0x01 || 32-byte public key)
    signer key    PRIVATE+KEY+<name>+<8 hex key id>+base64(0x01 || 32-byte seed)

Everything here is pure except the key-file pair :func:`write_signer` /
:func:`read_signer`. Malformed or unverifiable notes raise :class:`NoteError`,
malformed keys :class:`KeyFormatError`; nothing from ``cryptography`` or ``binascii``
escapes.

Where the specifications leave room, parsing is strict: base64 must be canonical (the
encoding :func:`base64.b64encode` would produce), key names may not contain control
characters, and a note may carry at most :data:`MAX_SIGNATURES` signature lines.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit._errors import KeyFormatError, NoteError

__all__ = [
    "ALG_COSIGNATURE_V1",
    "ALG_ED25519",
    "MAX_SIGNATURES",
    "Checkpoint",
    "Signature",
    "SignedNote",
    "SignerKey",
    "VerifierKey",
    "key_id",
    "open_checkpoint",
    "open_note",
    "parse_checkpoint_unverified",
    "parse_note",
    "read_signer",
    "sign_checkpoint",
    "sign_note",
    "valid_name",
    "write_signer",
]

ALG_ED25519 = 0x01
"""Signature type byte of Ed25519 in key ids and encoded keys (c2sp.org/signed-note)."""

MAX_SIGNATURES = 100
"""Most signature lines a note may carry (Go's limit; the spec requires at least 16)."""

ALG_COSIGNATURE_V1 = 0x04
"""Signature type byte of an Ed25519 cosignature/v1 witness key (c2sp.org/tlog-cosignature):
the same key material, another id, and signatures over a timestamped message."""

_ALG_NAMES = {ALG_ED25519: "Ed25519 note key", ALG_COSIGNATURE_V1: "cosignature/v1 witness key"}
_KEY_ID_SIZE = 4
_PUBLIC_SIZE = 32
_SIGNATURE_SIZE = 64
_ROOT_SIZE = 32
_MAX_TREE_SIZE = 2**64 - 1
_SIG_PREFIX = "\N{EM DASH} "
_PRIVATE_PREFIX = "PRIVATE+KEY+"
_HEX_ID = re.compile(r"[0-9a-fA-F]{8}")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
# Control characters a note may not contain: everything below U+0020 except newline.
_FORBIDDEN = re.compile(r"[\x00-\x09\x0b-\x1f]")


# -- names, key ids, base64 ------------------------------------------------------------


def valid_name(name: str) -> bool:
    """Whether ``name`` may name a key: non-empty, encodable as UTF-8, and free of ``+``,
    Unicode spaces and control characters. (The spec forbids spaces and ``+``; control
    characters are refused too, as a note could not carry them anyway.)"""
    if not isinstance(name, str) or not name or "+" in name:
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return not any(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in name)


def key_id(name: str, public: bytes, alg: int = ALG_ED25519) -> bytes:
    """The 4-byte id of the Ed25519 key ``public`` (32 raw bytes) named ``name``:
    ``SHA-256(name || 0x0A || alg || public)[:4]``; ``alg`` is 0x01 for a note signer,
    0x04 for a cosignature/v1 witness (c2sp.org/tlog-cosignature). Raises
    :class:`KeyFormatError` for an invalid name or a public key that is not 32 bytes."""
    if not valid_name(name):
        raise KeyFormatError("invalid key name: it must be non-empty, without '+' or spaces")
    if len(public) != _PUBLIC_SIZE:
        raise KeyFormatError(f"an Ed25519 public key is {_PUBLIC_SIZE} bytes, not {len(public)}")
    return _key_hash(name, bytes([alg]) + bytes(public))


def _key_hash(name: str, encoded_key: bytes) -> bytes:
    return hashlib.sha256(name.encode("utf-8") + b"\n" + encoded_key).digest()[:_KEY_ID_SIZE]


def _b64decode(text: str) -> bytes | None:
    """Standard base64 in its canonical form only, else None."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII characters in a str
        return None
    return raw if _b64encode(raw) == text else None


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _raw_public(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes_raw()


# -- keys -------------------------------------------------------------------------------


def _split_key(
    what: str, alg: int, name: str, hex_id: str, encoded: str
) -> tuple[str, bytes, bytes]:
    """Check the fields shared by both key forms; return the name, the 4-byte key id and
    the 32 bytes of key material. Messages never quote the key material."""
    if not valid_name(name):
        raise KeyFormatError(f"{what}: invalid key name")
    if not _HEX_ID.fullmatch(hex_id):
        raise KeyFormatError(f"{what} {name!r}: the key id must be 8 hex digits")
    raw = _b64decode(encoded)
    if not raw:
        raise KeyFormatError(f"{what} {name!r}: the key is not canonical base64")
    if raw[0] != alg:
        expected = _ALG_NAMES.get(alg, f"{alg:#04x}")
        raise KeyFormatError(
            f"{what} {name!r}: key algorithm {raw[0]:#04x}, expected {alg:#04x} ({expected})"
        )
    if len(raw) != 1 + _PUBLIC_SIZE:
        raise KeyFormatError(f"{what} {name!r}: an Ed25519 key is {_PUBLIC_SIZE} bytes")
    return name, bytes.fromhex(hex_id), raw[1:]


def _check_alg(alg: object) -> None:
    if alg not in _ALG_NAMES:
        raise KeyFormatError(f"unknown key algorithm {alg!r}")


@dataclass(frozen=True, repr=False)
class VerifierKey:
    """A named Ed25519 public key that verifies note signatures (``alg`` 0x01) or, with
    ``alg`` :data:`ALG_COSIGNATURE_V1`, a witness's cosignatures (see
    :mod:`audit._cosignature`; such a key never verifies a plain note signature).

    Equal when name, key id, algorithm and public key are equal. The constructor checks
    that ``key_id`` is the id of ``name``, ``public`` and ``alg``; raises
    :class:`KeyFormatError`.
    """

    name: str
    key_id: bytes
    public: Ed25519PublicKey = field(compare=False)
    alg: int = ALG_ED25519
    _raw: bytes = field(init=False)  # compared and hashed in place of `public`

    def __post_init__(self) -> None:
        if not isinstance(self.public, Ed25519PublicKey):
            raise KeyFormatError("a verifier key needs an Ed25519 public key")
        _check_alg(self.alg)
        raw = _raw_public(self.public)
        if bytes(self.key_id) != key_id(self.name, raw, self.alg):
            raise KeyFormatError(f"key id does not match the key named {self.name!r}")
        object.__setattr__(self, "key_id", bytes(self.key_id))
        object.__setattr__(self, "_raw", raw)

    @classmethod
    def from_public(
        cls, name: str, public: Ed25519PublicKey | bytes, alg: int = ALG_ED25519
    ) -> VerifierKey:
        """The verifier key named ``name`` for ``public`` (a key or its 32 raw bytes),
        its id computed. Raises :class:`KeyFormatError`."""
        if not isinstance(public, Ed25519PublicKey):
            raw = bytes(public)
            if len(raw) != _PUBLIC_SIZE:
                raise KeyFormatError(f"an Ed25519 public key is {_PUBLIC_SIZE} bytes")
            try:
                public = Ed25519PublicKey.from_public_bytes(raw)
            except ValueError as exc:
                raise KeyFormatError("not an Ed25519 public key") from exc
        return cls(name, key_id(name, _raw_public(public), alg), public, alg)

    @classmethod
    def parse(cls, text: str, alg: int = ALG_ED25519) -> VerifierKey:
        """Parse ``<name>+<8 hex key id>+<base64(alg || 32-byte public key)>``.

        Raises :class:`KeyFormatError` when the text is malformed, the algorithm byte is
        not ``alg`` or the key id is not the id of the name and key.
        """
        if not isinstance(text, str):
            raise KeyFormatError("a verifier key is a string")
        parts = text.split("+", 2)
        if len(parts) != 3:
            raise KeyFormatError("a verifier key has the form <name>+<key id>+<key>")
        name, wanted, material = _split_key("verifier key", alg, *parts)
        try:
            public = Ed25519PublicKey.from_public_bytes(material)
        except ValueError as exc:
            raise KeyFormatError(f"verifier key {name!r}: not an Ed25519 public key") from exc
        if key_id(name, material, alg) != wanted:
            raise KeyFormatError(f"verifier key {name!r}: the key id does not match the key")
        return cls(name, wanted, public, alg)

    def __str__(self) -> str:
        """The key in its text form, as :meth:`parse` reads it."""
        encoded = _b64encode(bytes([self.alg]) + self._raw)
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    def __repr__(self) -> str:
        return f"VerifierKey({str(self)!r})"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (64 bytes, no key id) is this key's signature of
        ``message``. Never raises for a bad signature."""
        if len(signature) != _SIGNATURE_SIZE:
            return False
        try:
            self.public.verify(bytes(signature), bytes(message))
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True, eq=False, repr=False)
class SignerKey:
    """A named Ed25519 private key that signs notes (``alg`` 0x01) or, with ``alg``
    :data:`ALG_COSIGNATURE_V1`, a witness's key that cosigns checkpoints.

    ``str(key)`` is the secret ``PRIVATE+KEY+…`` form: keep it out of logs (``repr``
    shows only the name and key id). The constructor checks the key id; raises
    :class:`KeyFormatError`.
    """

    name: str
    key_id: bytes
    private: Ed25519PrivateKey
    alg: int = ALG_ED25519

    def __post_init__(self) -> None:
        if not isinstance(self.private, Ed25519PrivateKey):
            raise KeyFormatError("a signer key needs an Ed25519 private key")
        _check_alg(self.alg)
        public = _raw_public(self.private.public_key())
        if bytes(self.key_id) != key_id(self.name, public, self.alg):
            raise KeyFormatError(f"key id does not match the key named {self.name!r}")
        object.__setattr__(self, "key_id", bytes(self.key_id))

    @classmethod
    def generate(cls, name: str, alg: int = ALG_ED25519) -> SignerKey:
        """A new random key named ``name``. Raises :class:`KeyFormatError` for an
        invalid name (see :func:`valid_name`)."""
        if not valid_name(name):
            raise KeyFormatError("invalid key name: it must be non-empty, without '+' or spaces")
        private = Ed25519PrivateKey.generate()
        return cls(name, key_id(name, _raw_public(private.public_key()), alg), private, alg)

    @classmethod
    def parse(cls, text: str, alg: int = ALG_ED25519) -> SignerKey:
        """Parse ``PRIVATE+KEY+<name>+<8 hex key id>+<base64(alg || 32-byte seed)>``.

        Raises :class:`KeyFormatError` (whose message never contains the key) when the
        text is malformed, the algorithm byte is not ``alg`` or the key id does not match.
        """
        if not isinstance(text, str) or not text.startswith(_PRIVATE_PREFIX):
            raise KeyFormatError("a signer key starts with PRIVATE+KEY+")
        parts = text[len(_PRIVATE_PREFIX) :].split("+", 2)
        if len(parts) != 3:
            raise KeyFormatError("a signer key has the form PRIVATE+KEY+<name>+<key id>+<key>")
        name, wanted, material = _split_key("signer key", alg, *parts)
        private = Ed25519PrivateKey.from_private_bytes(material)  # any 32 bytes is a seed
        if key_id(name, _raw_public(private.public_key()), alg) != wanted:
            raise KeyFormatError(f"signer key {name!r}: the key id does not match the key")
        return cls(name, wanted, private, alg)

    def __str__(self) -> str:
        """The secret key in its text form, as :meth:`parse` reads it."""
        seed = self.private.private_bytes_raw()
        encoded = _b64encode(bytes([self.alg]) + seed)
        return f"{_PRIVATE_PREFIX}{self.name}+{self.key_id.hex()}+{encoded}"

    def __repr__(self) -> str:
        return f"SignerKey(name={self.name!r}, key_id={self.key_id.hex()!r})"

    def verifier(self) -> VerifierKey:
        """The matching public key."""
        return VerifierKey(self.name, self.key_id, self.private.public_key(), self.alg)

    def sign(self, text: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``text``."""
        return self.private.sign(bytes(text))


# -- signed notes -----------------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    """One signature line: the key's name and 4-byte id, and the signature bytes that
    follow the id (64 bytes for Ed25519; other lengths for other algorithms)."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        """The signature line, newline included."""
        return f"{_SIG_PREFIX}{self.name} {_b64encode(self.key_id + self.signature)}\n"


@dataclass(frozen=True)
class SignedNote:
    """A note's text (ending in a newline) and its signatures: all of them from
    :func:`parse_note`, only the verified ones from :func:`open_note`."""

    text: str
    signatures: tuple[Signature, ...]

    def __str__(self) -> str:
        """The encoded note: text, blank line, signature lines."""
        return self.text + "\n" + "".join(sig.line() for sig in self.signatures)


def _decode_text(data: str | bytes) -> str:
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("the note is not valid UTF-8") from None
    elif isinstance(data, str):
        text = data
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise NoteError("the note is not valid UTF-8 (lone surrogate)") from None
    else:
        raise NoteError(f"a note is str or bytes, not {type(data).__name__}")
    if _FORBIDDEN.search(text):
        raise NoteError("the note contains a control character (CR, tab, …)")
    return text


def _check_text(text: str) -> None:
    """A note text as :func:`sign_note` accepts it."""
    if not isinstance(text, str) or not text.endswith("\n"):
        raise NoteError("a note's text must be non-empty and end with a newline")
    _decode_text(text)


def sign_note(text: str, signers: Sequence[SignerKey]) -> str:
    """Sign ``text`` (which must end in a newline) with each of ``signers``: the text, a
    blank line and one signature line per signer, in order.

    Raises :class:`NoteError` for a malformed text, no signers or two signers with the
    same name and key id.
    """
    _check_text(text)
    if not signers:
        raise NoteError("a signed note needs at least one signer")
    if len(signers) > MAX_SIGNATURES:
        raise NoteError(f"a note carries at most {MAX_SIGNATURES} signatures")
    seen: set[tuple[str, bytes]] = set()
    message = text.encode("utf-8")
    lines = []
    for signer in signers:
        _note_key(signer)
        ident = (signer.name, signer.key_id)
        if ident in seen:
            raise NoteError(f"signer {signer.name}+{signer.key_id.hex()} is given twice")
        seen.add(ident)
        lines.append(Signature(signer.name, signer.key_id, signer.sign(message)).line())
    return text + "\n" + "".join(lines)


def parse_note(data: str | bytes) -> SignedNote:
    """Split a signed note into its text and signatures, verifying nothing.

    The note must be UTF-8 without control characters other than newline; the text
    (ending in a newline) is separated from the signature lines by the note's last blank
    line; each signature line is ``— <name> <base64>`` with a valid name and at least 5
    decoded bytes; at most :data:`MAX_SIGNATURES` lines. Raises :class:`NoteError`.
    """
    note = _decode_text(data)
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("the note has no blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block:
        raise NoteError("the note has no signature lines")
    if not block.endswith("\n"):
        raise NoteError("the note does not end with a newline after its last signature")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"the note has more than {MAX_SIGNATURES} signatures")
    return SignedNote(text, tuple(_parse_signature(line) for line in lines))


def _parse_signature(line: str) -> Signature:
    if not line.startswith(_SIG_PREFIX):
        raise NoteError("a signature line must start with an em dash (U+2014) and a space")
    name, space, encoded = line[len(_SIG_PREFIX) :].partition(" ")
    if not space or not valid_name(name):
        raise NoteError("a signature line has an invalid key name")
    raw = _b64decode(encoded)
    if raw is None or len(raw) < _KEY_ID_SIZE + 1:
        raise NoteError(f"the signature by {name!r} is not canonical base64 of 5 or more bytes")
    return Signature(name, raw[:_KEY_ID_SIZE], raw[_KEY_ID_SIZE:])


def _note_key(key: SignerKey | VerifierKey) -> None:
    """Refuse a cosignature/v1 witness key where a note key is due: its signatures are
    over another message, so it must never pass for a note signer."""
    if key.alg != ALG_ED25519:
        raise NoteError(f"{key.name}+{key.key_id.hex()} is a witness key, not a note key")


def _trusted(keys: Sequence[VerifierKey]) -> dict[tuple[str, bytes], VerifierKey]:
    trusted: dict[tuple[str, bytes], VerifierKey] = {}
    for key in keys:
        _note_key(key)
        ident = (key.name, key.key_id)
        if trusted.setdefault(ident, key) != key:
            # Two different keys under one name and id: the key list is not trustworthy.
            raise NoteError(f"ambiguous keys: two keys are named {key.name}+{key.key_id.hex()}")
    return trusted


def open_note(data: str | bytes, keys: Sequence[VerifierKey]) -> SignedNote:
    """Parse a signed note and verify it against the trusted ``keys``.

    A signature counts as a key's when both name and key id match; others are ignored.
    Every signature by a trusted key must verify, and at least one must exist. Returns
    the note with only its verified signatures (one per key). Raises :class:`NoteError`
    when the note is malformed, a trusted key's signature fails, no trusted key signed
    it, or ``keys`` holds two different keys with the same name and id.
    """
    trusted = _trusted(keys)
    note = parse_note(data)
    message = note.text.encode("utf-8")
    verified: dict[tuple[str, bytes], Signature] = {}
    for sig in note.signatures:
        key = trusted.get((sig.name, sig.key_id))
        if key is None:
            continue
        if not key.verify(message, sig.signature):
            raise NoteError(f"the signature by {sig.name}+{sig.key_id.hex()} does not verify")
        verified.setdefault((sig.name, sig.key_id), sig)
    if not verified:
        raise NoteError("the note carries no signature by a trusted key")
    return SignedNote(note.text, tuple(verified.values()))


# -- checkpoints ------------------------------------------------------------------------


def _check_line(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise NoteError(f"the checkpoint's {what} must be a non-empty string")
    if "\n" in value or _FORBIDDEN.search(value):
        raise NoteError(f"the checkpoint's {what} contains a newline or control character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise NoteError(f"the checkpoint's {what} is not valid UTF-8") from None
    return value


@dataclass(frozen=True)
class Checkpoint:
    """A transparency log's signed tree head (c2sp.org/tlog-checkpoint): the log's
    origin, its tree size and RFC 6962 root hash, and optional extension lines.

    The constructor checks every field (a non-empty one-line origin, 0 ≤ size < 2⁶⁴, a
    32-byte root, non-empty one-line extensions); raises :class:`NoteError`.
    """

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line(self.origin, "origin")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise NoteError("the checkpoint's size must be an int")
        if not 0 <= self.size <= _MAX_TREE_SIZE:
            raise NoteError(f"the checkpoint's size {self.size} is out of range")
        if not isinstance(self.root, bytes | bytearray) or len(self.root) != _ROOT_SIZE:
            raise NoteError(f"the checkpoint's root must be {_ROOT_SIZE} bytes")
        extensions = tuple(self.extensions)
        for line in extensions:
            _check_line(line, "extension line")
        object.__setattr__(self, "root", bytes(self.root))
        object.__setattr__(self, "extensions", extensions)

    def body(self) -> str:
        """The note text: origin, size, base64 root and each extension, one per line."""
        head = f"{self.origin}\n{self.size}\n{_b64encode(self.root)}\n"
        return head + "".join(f"{line}\n" for line in self.extensions)

    @classmethod
    def parse_body(cls, text: str) -> Checkpoint:
        """Parse a checkpoint's note text, verifying nothing. Strict: a non-empty origin,
        a decimal size without sign or leading zeros, the canonical base64 of a 32-byte
        root, non-empty extension lines, a final newline. Raises :class:`NoteError`."""
        if not isinstance(text, str) or not text.endswith("\n"):
            raise NoteError("a checkpoint's text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError("a checkpoint has an origin, a size and a root hash line")
        origin, size_text, root_text, *extensions = lines
        if not _DECIMAL.fullmatch(size_text) or len(size_text) > 20:
            raise NoteError("the checkpoint's size is not a decimal without leading zeros")
        root = _b64decode(root_text)
        if root is None or len(root) != _ROOT_SIZE:
            raise NoteError(f"the checkpoint's root is not base64 of {_ROOT_SIZE} bytes")
        return cls(origin, int(size_text), root, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signers: Sequence[SignerKey]) -> str:
    """The signed note of ``checkpoint``, one signature line per signer (during a key
    rotation, the new key and the old one). Raises :class:`NoteError` as
    :func:`sign_note` does."""
    return sign_note(checkpoint.body(), signers)


def open_checkpoint(
    data: str | bytes, keys: Sequence[VerifierKey], *, origin: str | None = None
) -> tuple[Checkpoint, SignedNote]:
    """Verify a signed checkpoint against the trusted ``keys`` (as :func:`open_note`),
    then parse it; when ``origin`` is given the checkpoint's must equal it. Returns the
    checkpoint and the note with its verified signatures. Raises :class:`NoteError`."""
    note = open_note(data, keys)
    checkpoint = Checkpoint.parse_body(note.text)
    if origin is not None and checkpoint.origin != origin:
        raise NoteError(f"the checkpoint is for log {checkpoint.origin!r}, not {origin!r}")
    return checkpoint, note


def parse_checkpoint_unverified(data: str | bytes) -> Checkpoint:
    """Parse a signed checkpoint WITHOUT verifying any signature: for display only,
    never for a decision. Raises :class:`NoteError` when it is malformed."""
    return Checkpoint.parse_body(parse_note(data).text)


# -- key files --------------------------------------------------------------------------


def write_signer(path: Path, key: SignerKey) -> None:
    """Write ``key`` to a new file ``path`` with mode 0600 (one line, the ``PRIVATE+KEY``
    form). Never overwrites: raises :class:`FileExistsError` when ``path`` exists (also
    as a dangling symlink), and :class:`OSError` when it cannot be written; a partly
    written file is removed."""
    data = (str(key) + "\n").encode("utf-8")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), 0o600)  # exact, whatever the umask
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        Path(path).unlink(missing_ok=True)
        raise


def read_signer(path: Path, alg: int = ALG_ED25519) -> SignerKey:
    """Read a signer key written by :func:`write_signer` (surrounding whitespace is
    ignored). Raises :class:`KeyFormatError`, naming ``path``, when the file is missing,
    unreadable or malformed; the message never contains the key."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise KeyFormatError(f"{path}: cannot read the signer key: {reason}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFormatError(f"{path}: not a signer key (not UTF-8 text)") from None
    try:
        return SignerKey.parse(text.strip(), alg)
    except KeyFormatError as exc:
        raise KeyFormatError(f"{path}: {exc}") from None
